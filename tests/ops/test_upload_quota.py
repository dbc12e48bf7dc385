"""The per-user quota counts the user's open uploads (nodes.manager.upload_limits.UploadLimits), on SQLite
and a real redis-server.

It counted only stored images, so a user could create several uploads at once that each fit, and then
complete them all past the quota (quota 200000, three uploads of 145532 bytes all completed).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from ulid import ULID

from nodes.manager.upload_limits import UploadLimits
from pixelfox import errors, tickets
from pixelfox.config import LimitsSettings
from pixelfox.db.models import Image, Upload, User
from pixelfox.text import human_bytes
from tests.dbkit import open_db

QUOTA = 200_000
SIZE = 145_532


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with open_db(tmp_path / "quota.db") as (_, sessions):
        yield sessions


@pytest.fixture
async def gate(redis_url: str, db: async_sessionmaker[AsyncSession]) -> AsyncIterator[UploadLimits]:
    r = aioredis.from_url(redis_url)
    try:
        yield UploadLimits(r, db, LimitsSettings(user_quota_bytes=QUOTA, user_open_uploads=5,
                                                 user_uploads_per_minute=100))
    finally:
        await r.aclose()


async def _user(db: async_sessionmaker[AsyncSession]) -> str:
    uid = str(ULID())
    async with db() as s:
        s.add(User(id=uid, name=f"u{uid}"[:30], password_hash="x"))
        await s.commit()
    return uid


async def _create(gate: UploadLimits, db: async_sessionmaker[AsyncSession], uid: str, size: int,
                  ttl_s: int = 900, status: str = "open") -> str:
    """What CreateUpload does: admit, then record the upload row."""
    upload_id = str(ULID())
    expires_at = int(time.time()) + ttl_s
    await gate.admit(uid, upload_id, size, tickets.usable_until(expires_at))
    async with db() as s:
        s.add(Upload(id=upload_id, user_id=uid, size=size, status=status,
                     expires_at=datetime.fromtimestamp(expires_at, UTC)))
        await s.commit()
    return upload_id


async def test_open_uploads_count_against_the_quota(gate: UploadLimits, db: async_sessionmaker[AsyncSession]) -> None:
    uid = await _user(db)
    await _create(gate, db, uid, SIZE)
    for refused in (_create(gate, db, uid, SIZE), gate.check(uid, SIZE)):  # CreateUpload and CheckUpload
        with pytest.raises(errors.QuotaExceeded) as over:
            await refused
        assert str(over.value) == (
            f"quota: {SIZE} of {QUOTA} bytes used ({SIZE} of them declared by 1 open upload: an upload counts "
            f"from its creation until it completes, is cancelled or its ticket ends); this file needs {SIZE} more; "
            f"to make room, delete images or cancel open uploads (pixelfox uploads cancel ID), or ask an admin for "
            f"a larger quota ({human_bytes(SIZE)} of {human_bytes(QUOTA)} used)")
    await gate.check(uid, QUOTA - SIZE)  # what is left still fits
    await _create(gate, db, uid, QUOTA - SIZE)
    with pytest.raises(errors.QuotaExceeded) as full:  # nothing fits any more: said first, not "this file needs 1"
        await gate.check(uid, 1)
    assert str(full.value) == (
        f"quota full: {human_bytes(QUOTA)} of {human_bytes(QUOTA)} used ({QUOTA} of them declared by 2 open uploads: "
        "an upload counts from its creation until it completes, is cancelled or its ticket ends); no upload fits "
        "until you delete images or cancel open uploads (pixelfox uploads cancel ID) or an admin gives you a larger "
        "quota")


async def test_only_uploads_still_usable_count(gate: UploadLimits, db: async_sessionmaker[AsyncSession]) -> None:
    uid = await _user(db)
    await _create(gate, db, uid, SIZE, ttl_s=-tickets.LEEWAY_S - 5)  # its ticket ended: nothing can resume it
    await _create(gate, db, uid, SIZE, status="abandoned")  # cancelled
    done = await _create(gate, db, uid, 100, status="complete")  # completed: its image counts instead
    async with db() as s:
        s.add(Image(id=str(ULID()), slug=str(ULID())[-10:], upload_id=done, user_id=uid, sha256="0" * 64,
                    bytes=100, format="png", mime="image/png", width=1, height=1, original_key="x"))
        await s.commit()
    await gate.check(uid, QUOTA - 100)
    with pytest.raises(errors.QuotaExceeded, match=r"^quota: 100 of 200000 bytes used; this file needs"):
        await gate.check(uid, QUOTA - 99)
    async with db() as s:
        assert await gate.open_bytes(s, uid) == (0, 0)
