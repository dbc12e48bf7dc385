"""ListImages cursors (issue 5): another user's slug tells nothing about that image; row ids page."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc

from pixelfox.client.uploader import upload_file
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.conftest import ClusterHandle
from tests.e2e.uploadkit import new_user_key
from tests.jobtools import make_photo


async def test_another_users_slug_as_cursor_is_refused_like_a_made_up_one(cluster: ClusterHandle,
                                                                          tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    alice = await new_user_key(cluster.local, f"cur-a-{tag}")
    bob = await new_user_key(cluster.local, f"cur-b-{tag}")
    seed = int(tag, 16) % 1000
    photos = [make_photo(tmp_path / f"p{i}.jpg", 64, 48, seed=seed + i) for i in range(3)]
    async with grpc.aio.insecure_channel(cluster.manager_address) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        older = (await upload_file(stub, api_key_metadata(alice), photos[0])).image
        theirs = (await upload_file(stub, api_key_metadata(bob), photos[1])).image  # between alice's two
        newer = (await upload_file(stub, api_key_metadata(alice), photos[2])).image

        async def listing(before: str) -> list[str]:
            r = await stub.ListImages(manager_pb2.ListImagesRequest(limit=10, before=before),
                                      metadata=api_key_metadata(alice), timeout=10)
            return [i.slug for i in r.images]

        assert await listing("") == [newer.slug, older.slug]  # newest first
        assert await listing(newer.slug) == [older.slug]  # her own cursor pages
        assert await listing(newer.id) == [older.slug]  # the row id a listing hands out as next cursor
        # bob's slug (created between them) would cut the list there if it were used as a cursor: it is
        # refused exactly as a made-up one is (it used to be ignored: the first page came back)
        details = []
        for bad in (theirs.slug, "no-such-slug"):
            try:
                await listing(bad)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
                details.append(exc.details().replace(repr(bad), "X"))
        assert len(details) == 2 and details[0] == details[1] and "is not a cursor from this list" in details[0]
