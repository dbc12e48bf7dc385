"""CompleteUpload records where every upload's original was stored (nodes.manager.uploads.Uploads.complete),
on SQLite and a real redis-server.

Keys are content-addressed: a re-upload of bytes the user already has stores the same original key, maybe
on other storage nodes than the first upload did. The dedup branch, an upload node's retry after a crash,
and a completion of an upload that was already used committed without recording those copies, so a
delete never found them and they stayed for ever.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from nodes.manager.uploads import Uploads
from pixelfox import errors
from pixelfox.db.models import Image, ObjectLocation
from tests.ops.uploadrig import add_upload, add_user, uploads_on


@pytest.fixture
async def uploads(redis_url: str, tmp_path: Path) -> AsyncIterator[Uploads]:
    async with uploads_on(redis_url, tmp_path / "uploads.db") as up:
        up.orphaned: list[list[str]] = []  # type: ignore[misc]

        async def orphaned(keys: list[str]) -> tuple[int, int]:
            up.orphaned.append(keys)  # type: ignore[attr-defined]
            return 0, 0

        up.on_orphaned = orphaned
        yield up


async def _locations(up: Uploads, key: str) -> list[str]:
    async with up.sessions() as s:
        return sorted((await s.execute(select(ObjectLocation.node_id).where(ObjectLocation.key == key))).scalars())


async def test_every_completion_records_the_copies_it_stored(uploads: Uploads) -> None:
    user = await add_user(uploads)
    sha = hashlib.sha256(os.urandom(16)).hexdigest()
    first = await add_upload(uploads, user, sha, ["s1", "s2"])
    key = first.original_key
    assert not (await uploads.complete(first)).deduplicated
    assert await _locations(uploads, key) == ["s1", "s2"]

    again = await add_upload(uploads, user, sha, ["s2", "s3"])  # the same bytes again, stored on s2 and s3
    assert (await uploads.complete(again)).deduplicated
    assert await _locations(uploads, key) == ["s1", "s2", "s3"]  # s3's copy is recorded too

    again.storage_node_ids.append("s4")  # its upload node crashed and retries, having stored on s4 as well
    assert (await uploads.complete(again)).deduplicated
    assert await _locations(uploads, key) == ["s1", "s2", "s3", "s4"]
    assert uploads.orphaned == []  # type: ignore[attr-defined]

    async with uploads.sessions() as s:  # the user's image is deleted; a late completion of its upload comes in
        img = (await s.execute(select(Image).where(Image.upload_id == first.upload_id))).scalars().one()
        await s.delete(img)
        await s.commit()
    first.storage_node_ids[:] = ["s5"]
    with pytest.raises(errors.InvalidTicket, match="already used"):
        await uploads.complete(first)
    assert await _locations(uploads, key) == ["s1", "s2", "s3", "s4", "s5"]  # recorded, and handed to the deleter
    assert uploads.orphaned == [[key]]  # type: ignore[attr-defined]
