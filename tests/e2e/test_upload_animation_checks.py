"""Animations a processing node would refuse are refused by the upload node, before anything is stored.

An animation over ``limits.max_animation_bytes`` (its frame buffers, from the canvas and the recipe's
variants) and an APNG with a frame outside its canvas used to pass the upload node's checks: the original
was stored, an image made and a share link returned, and the processing node then failed the job (a dead
letter, a public "failed" page, a new one for every re-upload). The upload node now refuses both, in the
words processing uses. The cluster's budget is 32 MiB (``PIXELFOX_LIMITS__MAX_ANIMATION_BYTES``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pixelfox import errors, imaging
from pixelfox.cli.launcher import LocalCluster
from pixelfox.client.uploader import upload_file
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.storage.keys import original_key
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc
from tests.animkit import apng, one_pixel_frames_gif
from tests.e2e.uploadkit import chunk, create, header, new_user_key, own_cluster, refused_stream, wait_ready

pytestmark = pytest.mark.e2e

BUDGET = 32 << 20


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_cluster(tmp_path_factory.mktemp("anim"), upload=1,
                     PIXELFOX_LIMITS__MAX_ANIMATION_BYTES=str(BUDGET)) as c:
        yield c


def manager(local: LocalCluster) -> str:
    return local.manager_address.split(",")[0]


async def images_of(local: LocalCluster, key: str) -> list[str]:
    async with grpc.aio.insecure_channel(manager(local)) as ch:
        reply = await manager_pb2_grpc.ManagerServiceStub(ch).ListImages(
            manager_pb2.ListImagesRequest(limit=10), metadata=api_key_metadata(key), timeout=10)
    return [i.slug for i in reply.images]


def stored(local: LocalCluster, data: bytes, ext: str) -> bool:
    """Whether the storage node's pool holds ``data`` as an original."""
    return (local.state / "data" / "storage1" / original_key(hashlib.sha256(data).hexdigest(), ext)).exists()


async def refused(local: LocalCluster, key: str, data: bytes) -> grpc.RpcError:
    """Upload ``data`` as one stream through the real upload node; the error it ended the stream with."""
    t = await create(manager(local), key, len(data))
    err = await refused_stream(t.upload_address, [header(t, len(data)), chunk(0, data)])
    assert not (local.state / "data" / "staging" / f"{t.upload_id}.part").exists()  # nothing staged either
    return err


async def test_an_animation_over_the_budget_is_refused_at_upload(local: LocalCluster, tmp_path: Path) -> None:
    key = await new_user_key(local, "giffer")
    big = one_pixel_frames_gif(2000, 2000, 3)  # 256 MiB of frame buffers with the default recipe
    with pytest.raises(imaging.LimitExceeded) as processing:  # what the processing node would say
        imaging.process(big, imaging.DEFAULT_RECIPE, imaging.Limits(max_animation_bytes=BUDGET))
    said = "animation needs 256 MiB of frame buffers, over the 32 MiB limit"
    assert str(processing.value) == said

    err = await refused(local, key, big)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details() == said
    assert dict(err.trailing_metadata())[errors.ERROR_CODE_KEY] == "image-too-large"  # HTTP 413, as other limits
    assert await images_of(local, key) == []
    assert not stored(local, big, "gif")

    # a small animation is under the budget: stored, processed, ready
    small = one_pixel_frames_gif(64, 48, 3)
    path = tmp_path / "small.gif"
    path.write_bytes(small)
    async with grpc.aio.insecure_channel(manager(local)) as ch:
        receipt = await upload_file(manager_pb2_grpc.ManagerServiceStub(ch), api_key_metadata(key), path)
    image = await wait_ready(manager(local), key, receipt.image.slug)
    assert image.status == common_pb2.IMAGE_STATUS_READY, image
    assert await images_of(local, key) == [receipt.image.slug]
    assert stored(local, small, "gif")


async def test_an_apng_frame_outside_its_canvas_is_refused_at_upload(local: LocalCluster) -> None:
    key = await new_user_key(local, "apnger")
    data = apng(100, 100, [(100, 100, 0, 0), (50, 50, 10, 10), (60, 60, 50, 50)])
    err = await refused(local, key, data)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details() == "corrupt PNG: APNG frame 3 (60x60 at 50,50) lies outside the 100x100 canvas"
    assert dict(err.trailing_metadata())[errors.ERROR_CODE_KEY] == "corrupt-image"
    assert await images_of(local, key) == []
    assert not stored(local, data, "png")
