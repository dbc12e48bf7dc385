"""One contract for every ``Store`` backend: local disk (FsStore) and S3 (S3Store on a real SeaweedFS).

Each test runs once per backend; the S3 variant gets its own key prefix so tests never see
each other's objects.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pixelfox import errors
from pixelfox.storage.base import Store
from pixelfox.storage.fs import FsStore
from pixelfox.storage.keys import content_type_for, original_key, variant_key
from pixelfox.storage.s3 import S3Settings, S3Store
from tests.seaweed import Seaweed

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
PHOTO = CORPUS / "photos" / "iphone5_orient3_gps.jpg"


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.fixture(params=["fs", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "fs":
        fs = FsStore(tmp_path / "pool")
        await fs.scan()
        yield fs
        return
    seaweed: Seaweed = request.getfixturevalue("seaweed")
    async with S3Store(seaweed.settings(prefix=f"t{secrets.token_hex(6)}/")) as s3:
        await s3.scan()
        yield s3


@pytest.fixture(scope="module")
def photo() -> bytes:
    return PHOTO.read_bytes()


async def put(store: Store, data: bytes, key: str | None = None) -> str:
    sha = hashlib.sha256(data).hexdigest()
    key = key or original_key(sha, "jpg")
    await store.put(key, chunks(data), content_type=content_type_for(key), sha256=sha, size=len(data))
    return key


async def read(store: Store, key: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([c async for c in store.open_range(key, offset, length)])


async def test_put_get_stat_etag(store: Store, photo: bytes) -> None:
    sha = hashlib.sha256(photo).hexdigest()
    key = original_key(sha, "jpg")
    assert await store.stat(key) is None
    info = await store.put(key, chunks(photo), content_type="image/jpeg", sha256=sha, size=len(photo))
    assert (info.key, info.size, info.sha256, info.content_type) == (key, len(photo), sha, "image/jpeg")
    assert info.etag == f'"{sha}"'
    assert info.mtime > 1_700_000_000
    assert await read(store, key) == photo
    st = await store.stat(key)
    assert st is not None and (st.size, st.sha256, st.etag) == (len(photo), sha, f'"{sha}"')
    assert [k async for k in store.list_keys()] == [key]
    used, free = await store.usage()
    assert used == len(photo) and free > 0


async def test_variant_key_round_trip(store: Store, photo: bytes) -> None:
    src = hashlib.sha256(b"source").hexdigest()
    key = variant_key(src, 1, "thumb", "webp")
    data = photo[:5000]
    await put(store, data, key)
    st = await store.stat(key)
    assert st is not None and st.content_type == "image/webp" and st.sha256 == hashlib.sha256(data).hexdigest()
    assert await read(store, key) == data


@pytest.mark.parametrize(
    ("offset", "length", "want"),
    [(0, 10, slice(0, 10)), (100, 1000, slice(100, 1100)), (-1, None, None), (5, None, slice(5, None)),
     (0, 0, slice(0, 0))],
)
async def test_range_get(store: Store, photo: bytes, offset: int, length: int | None, want: slice | None) -> None:
    key = await put(store, photo)
    if want is None:  # the last byte
        offset, want = len(photo) - 1, slice(len(photo) - 1, None)
    assert await read(store, key, offset, length) == photo[want]


async def test_range_past_the_end_is_empty_or_short(store: Store, photo: bytes) -> None:
    key = await put(store, photo)
    assert await read(store, key, len(photo) - 3, 100) == photo[-3:]
    assert await read(store, key, len(photo) + 10, 5) == b""


async def test_get_missing_is_not_found(store: Store) -> None:
    key = original_key("ab" * 32, "png")
    with pytest.raises(errors.NotFound):
        await read(store, key)
    assert await store.stat(key) is None
    assert await store.delete(key) is False


async def test_delete(store: Store, photo: bytes) -> None:
    key = await put(store, photo)
    assert await store.delete(key) is True
    assert await store.stat(key) is None
    assert await store.delete(key) is False
    assert (await store.usage())[0] == 0
    assert [k async for k in store.list_keys()] == []


async def test_idempotent_reput_does_not_read_the_stream(store: Store, photo: bytes) -> None:
    key = await put(store, photo)
    first = await store.stat(key)

    async def exploding() -> AsyncIterator[bytes]:
        raise AssertionError("the stream of an idempotent re-put must not be read")
        yield b""  # pragma: no cover

    sha = hashlib.sha256(photo).hexdigest()
    info = await store.put(key, exploding(), content_type="image/jpeg", sha256=sha, size=len(photo))
    assert info.sha256 == sha and info.size == len(photo)
    assert first is not None and info.etag == first.etag
    assert (await store.usage())[0] == len(photo)


async def test_key_reused_for_other_bytes_is_refused(store: Store, photo: bytes) -> None:
    key = variant_key("cd" * 32, 1, "medium", "jpeg")
    await put(store, photo[:3000], key)
    with pytest.raises(errors.AlreadyExists):
        await put(store, photo[:4000], key)
    assert await read(store, key) == photo[:3000]


async def test_checksum_mismatch_leaves_nothing_visible(store: Store, photo: bytes) -> None:
    key = variant_key("ef" * 32, 1, "thumb", "jpeg")
    wrong = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(errors.ChecksumMismatch):
        await store.put(key, chunks(photo), content_type="image/jpeg", sha256=wrong, size=len(photo))
    assert await store.stat(key) is None
    assert [k async for k in store.list_keys()] == []
    # an original's key must carry its own hash
    okey = original_key(wrong, "jpg")
    sha = hashlib.sha256(photo).hexdigest()
    with pytest.raises(errors.ChecksumMismatch):
        await store.put(okey, chunks(photo), content_type="image/jpeg", sha256=sha, size=len(photo))
    assert await store.stat(okey) is None


@pytest.mark.parametrize("delta", [-1, 1])
async def test_size_mismatch_leaves_nothing_visible(store: Store, photo: bytes, delta: int) -> None:
    sha = hashlib.sha256(photo).hexdigest()
    key = original_key(sha, "jpg")
    with pytest.raises(errors.BadRequest):
        await store.put(key, chunks(photo), content_type="image/jpeg", sha256=sha, size=len(photo) + delta)
    assert await store.stat(key) is None


async def test_content_type_must_match_key(store: Store, photo: bytes) -> None:
    sha = hashlib.sha256(photo).hexdigest()
    with pytest.raises(errors.BadRequest):
        await store.put(original_key(sha, "jpg"), chunks(photo), content_type="text/html", sha256=sha,
                        size=len(photo))


@pytest.mark.parametrize("key", ["../etc/passwd", "o/ab/cd/x.jpg", "/o/ab/cd/" + "ab" * 32 + ".jpg"])
async def test_invalid_keys_rejected(store: Store, key: str) -> None:
    with pytest.raises(errors.BadRequest):
        await store.stat(key)


async def test_writable(store: Store) -> None:
    assert await store.writable() is True


def test_fs_pools_on_one_disk_name_one_filesystem(tmp_path: Path) -> None:
    """``filesystem()`` is what the free bytes are of (the ``fs`` metric label, the ``fs:`` capability): two
    pools on one disk name the same one, so the disk's free space is counted once."""
    a, b = FsStore(tmp_path / "a"), FsStore(tmp_path / "b")
    assert a.filesystem() == b.filesystem() == f"{socket.gethostname()}:{os.stat(tmp_path).st_dev}"


def test_s3_pools_name_their_endpoint_bucket_and_prefix() -> None:
    """An S3 pool's free bytes are its ``capacity_bytes`` less what its prefix holds: one figure per prefix of
    a bucket; the endpoint's user and password stay out of the name (a metric label, shown by ``status``)."""
    def fs(**settings: str) -> str:
        return S3Store(S3Settings(**settings)).filesystem()

    assert fs(endpoint_url="http://key:secret@127.0.0.1:8333", bucket="pixelfox", prefix="hot") == \
        "s3:http://127.0.0.1:8333/pixelfox/hot/"
    assert fs(endpoint_url="http://127.0.0.1:8333", bucket="pixelfox", prefix="/hot/") == \
        "s3:http://127.0.0.1:8333/pixelfox/hot/"
    assert fs(endpoint_url="http://127.0.0.1:8333", bucket="pixelfox", prefix="cold") != \
        fs(endpoint_url="http://127.0.0.1:8333", bucket="pixelfox", prefix="hot")
    assert fs(bucket="pixelfox", region="eu-west-1") == "s3:aws-eu-west-1/pixelfox/"
