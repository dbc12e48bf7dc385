"""The manager's upload bookkeeping (:class:`nodes.manager.uploads.Uploads`) on SQLite and the cluster's real Redis:
how many database reads listing and cancelling uploads take."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import event
from ulid import ULID

from nodes.manager.uploads import Uploads
from pixelfox.config import LimitsSettings
from pixelfox.db.models import Upload, User
from tests.dbkit import open_db


async def _reads(redis_url: str, db: Path) -> tuple[int, int, int, bool]:
    async with open_db(db) as (engine, sessions), contextlib.aclosing(aioredis.from_url(redis_url)) as redis:
        uploads = Uploads(sessions, SimpleNamespace(redis=redis), None, None,  # type: ignore[arg-type]
                          LimitsSettings(), b"k" * 32, 1)
        user = User(id=str(ULID()), name=f"u{ULID()}", password_hash="x")
        ids = [str(ULID()) for _ in range(5)]
        async with sessions() as s:
            s.add(user)
            await s.flush()  # before its uploads: no relationship orders them
            for upload_id in ids:
                s.add(Upload(id=upload_id, user_id=user.id, size=100,
                             expires_at=datetime.now(UTC) + timedelta(minutes=15)))
            await s.commit()
        for upload_id in ids:
            await uploads.states.create(upload_id, 100, user.id)

        selects: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                selects.append(statement)

        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        listed = await uploads.list_open(user)
        list_reads = len(selects)
        selects.clear()
        cancelled = await uploads.cancel(ids[0], user, is_admin=False)
        cancel_reads = len(selects)
        return len(listed), list_reads, cancel_reads, cancelled


def test_listing_and_cancelling_uploads_read_the_database_once(cluster: Any, tmp_path: Path) -> None:
    """``list_open`` read every candidate row again through ``progress`` (one query for the list, then two
    per upload), and ``cancel`` read its row twice (to check who may cancel, then to mark it)."""
    listed, list_reads, cancel_reads, cancelled = asyncio.run(_reads(cluster.redis_url, tmp_path / "m.db"))
    assert (listed, cancelled) == (5, True)
    assert (list_reads, cancel_reads) == (1, 1)
