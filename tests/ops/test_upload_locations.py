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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select
from ulid import ULID

from nodes.manager.uploads import Completion, Uploads
from pixelfox import errors, tickets
from pixelfox.config import DatabaseSettings, LimitsSettings
from pixelfox.db.engine import create_all_tables, make_engine, session_factory
from pixelfox.db.models import Image, ObjectLocation, Upload, User
from pixelfox.storage.keys import original_key
from pixelfox.v1 import common_pb2

KEY = b"k" * 32


class FakeRegistry:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis


class FakeQueue:
    async def enqueue(self, image_id: str, **_: Any) -> None:
        pass


class FakeViews:
    async def get(self, slug: str) -> common_pb2.Image:
        return common_pb2.Image(slug=slug)

    async def to_proto(self, _s: object, img: Image) -> common_pb2.Image:
        return common_pb2.Image(slug=img.slug)


@pytest.fixture
async def uploads(redis_url: str, tmp_path: Path) -> AsyncIterator[Uploads]:
    redis = aioredis.from_url(redis_url)
    engine = make_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'uploads.db'}"))
    async with engine.begin() as conn:
        await conn.run_sync(create_all_tables)
    up = Uploads(session_factory(engine), FakeRegistry(redis), FakeQueue(), FakeViews(),  # type: ignore[arg-type]
                 LimitsSettings(), KEY, recipe_version=1)
    up.orphaned: list[list[str]] = []  # type: ignore[misc]

    async def orphaned(keys: list[str]) -> tuple[int, int]:
        up.orphaned.append(keys)  # type: ignore[attr-defined]
        return 0, 0

    up.on_orphaned = orphaned
    try:
        yield up
    finally:
        await engine.dispose()
        await redis.aclose()


async def _user(up: Uploads) -> str:
    uid = str(ULID())
    async with up.sessions() as s:
        s.add(User(id=uid, name=f"u{uid}"[:30], password_hash="x"))
        await s.commit()
    return uid


async def _upload(up: Uploads, user_id: str, sha: str, nodes: list[str], status: str = "open") -> Completion:
    """An upload row of ``user_id`` (``status``) whose original was stored on ``nodes``, as its node reports it."""
    uid = str(ULID())
    async with up.sessions() as s:
        s.add(Upload(id=uid, user_id=user_id, size=10, status=status,
                     expires_at=datetime.now(UTC) + timedelta(minutes=15)))
        await s.commit()
    return Completion(upload_id=uid, ticket=tickets.sign(KEY, uid, user_id, 10, "image/png", 900), sha256=sha,
                      size=10, format="png", mime="image/png", width=1, height=1, frames=1, orientation=1,
                      original_key=original_key(sha, "png"), storage_node_ids=nodes, upload_node_id="u1")


async def _locations(up: Uploads, key: str) -> list[str]:
    async with up.sessions() as s:
        return sorted((await s.execute(select(ObjectLocation.node_id).where(ObjectLocation.key == key))).scalars())


async def test_every_completion_records_the_copies_it_stored(uploads: Uploads) -> None:
    user = await _user(uploads)
    sha = hashlib.sha256(os.urandom(16)).hexdigest()
    first = await _upload(uploads, user, sha, ["s1", "s2"])
    key = first.original_key
    assert not (await uploads.complete(first)).deduplicated
    assert await _locations(uploads, key) == ["s1", "s2"]

    again = await _upload(uploads, user, sha, ["s2", "s3"])  # the same bytes again, stored on s2 and s3
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
