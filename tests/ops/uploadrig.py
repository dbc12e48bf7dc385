"""The manager's ``Uploads`` in this process, on a real SQLite file and a real redis-server, with the real
``Registry``, ``ImageViews`` and job queue (no node registered: images have no storage URLs)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis
from ulid import ULID

from nodes.manager.images import ImageViews
from nodes.manager.registry import Registry
from nodes.manager.uploads import Completion, Uploads
from pixelfox import tickets
from pixelfox.config import LimitsSettings
from pixelfox.db.models import Upload, User
from pixelfox.queue import JobQueue
from pixelfox.storage.keys import original_key
from tests.dbkit import open_db

KEY = b"k" * 32  # the ticket key
SITE = "http://site.test"


@contextlib.asynccontextmanager
async def uploads_on(redis_url: str, db: Path) -> AsyncIterator[Uploads]:
    """``Uploads`` on Redis ``redis_url`` and a new SQLite file ``db`` (tables made), image URLs on :data:`SITE`."""
    async with contextlib.aclosing(aioredis.from_url(redis_url)) as redis, open_db(db) as (_, sessions):
        registry = Registry(redis, node_timeout_s=6.0)
        yield Uploads(sessions, registry, JobQueue(redis, "test"), ImageViews(sessions, registry, SITE),
                      LimitsSettings(), KEY, recipe_version=1)


async def add_user(up: Uploads) -> str:
    """A new user's id."""
    uid = str(ULID())
    async with up.sessions() as s:
        s.add(User(id=uid, name=f"u{uid}"[:30], password_hash="x"))
        await s.commit()
    return uid


async def add_upload(up: Uploads, user_id: str, sha: str, nodes: list[str], status: str = "open") -> Completion:
    """An upload row of ``user_id`` (``status``) whose 10-byte original (hash ``sha``, a 3x2 PNG) was stored
    on ``nodes``, as its upload node reports it."""
    uid = str(ULID())
    async with up.sessions() as s:
        s.add(Upload(id=uid, user_id=user_id, size=10, status=status,
                     expires_at=datetime.now(UTC) + timedelta(minutes=15)))
        await s.commit()
    return Completion(upload_id=uid, ticket=tickets.sign(KEY, uid, user_id, 10, "image/png", 900), sha256=sha,
                      size=10, format="png", mime="image/png", width=3, height=2, frames=1, orientation=1,
                      original_key=original_key(sha, "png"), storage_node_ids=nodes, upload_node_id="u1")
