"""Images that expire (Chevereto/ImgBB ``expiration``): a Redis schedule and the sweeper that deletes them.

The schedule is one sorted set ``pixelfox:{expiry}:images`` (member: image slug, score: unix
time it expires), filled by :meth:`nodes.manager.uploads.Uploads.complete` from the upload's
``expire_after_s``. Every manager runs :meth:`ExpirySweeper.run`; ``ZREM`` is the claim, so
one manager deletes each image even when several sweep at once. A delete that fails for a
transient reason puts the slug back a minute later; an image that is already gone is dropped.
The image's read-model marker records that it expired, and when (:func:`pixelfox.readmodel.mark_deleted`):
its page and ``GET /api/v1/images/<slug>`` say so, with the same 404 as a deleted image's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis

from nodes.manager.library import Library
from pixelfox import errors
from pixelfox.db.models import User

logger = logging.getLogger(__name__)

KEY = "pixelfox:{expiry}:images"
RETRY_S = 60.0
#: who the sweeper acts as: an admin that exists only in memory (never stored)
SWEEPER = User(id="", name="expiry-sweeper", role="admin", password_hash="")


async def schedule(redis: aioredis.Redis, slug: str, after_s: float) -> None:
    """Delete image ``slug`` ``after_s`` seconds from now."""
    await schedule_at(redis, slug, time.time() + after_s)


async def schedule_at(redis: aioredis.Redis, slug: str, at: float) -> None:
    """Delete image ``slug`` at ``at`` (unix seconds; its row's ``expires_at``)."""
    await redis.zadd(KEY, {slug: at})


async def due(redis: aioredis.Redis, now: float | None = None, limit: int = 100) -> list[str]:
    """Slugs whose time has come (oldest first), at most ``limit``."""
    raw = await redis.zrangebyscore(KEY, "-inf", now or time.time(), start=0, num=limit)
    return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]


class ExpirySweeper:
    """Deletes expired images every ``interval_s`` seconds through :meth:`Library.delete`."""

    def __init__(self, redis: aioredis.Redis, library: Library, interval_s: float = 5.0) -> None:
        self.redis = redis
        self.library = library
        self.interval_s = interval_s

    async def sweep(self) -> int:
        """One pass; returns how many images were deleted."""
        deleted = 0
        for slug in await due(self.redis):
            if not await self.redis.zrem(KEY, slug):
                continue  # another manager took it
            try:
                await self.library.delete(slug, SWEEPER, expired_at=time.time())
                deleted += 1
                logger.info("expired image %s deleted", slug)
            except errors.NotFound:
                pass
            except errors.PixelfoxError as exc:
                logger.warning("deleting expired image %s failed (%s); retrying later", slug, exc)
                await schedule(self.redis, slug, RETRY_S)
        return deleted

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep until ``stop`` is set (a ``run_node`` background task)."""
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception as exc:
                logger.warning("expiry sweep failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
