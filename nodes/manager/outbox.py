"""Drain the job outbox into Redis: at start-up, then every ``interval_s`` seconds (issue 7).

An outbox row (:class:`pixelfox.db.outbox.OutboxEntry`) exists for every image whose job has
not finished. A row whose image Redis does not know (no entry in ``pixelfox:{jobs}:known``)
and that is older than ``grace_s`` is enqueued again. That covers:

* a manager that died between the image commit and the enqueue (failpoint
  ``after-image-commit``);
* a Redis that lost its last writes in a crash (AOF ``everysec``) or was wiped;
* a job that fell out of Redis for any other reason.

Enqueuing twice is harmless: the dispatcher skips jobs whose image is no longer
``processing`` and outputs are content-addressed. Rows whose image is already ready or
failed are deleted. Every manager may run this; with several managers it runs under the
``outbox`` lease from :mod:`pixelfox.leases` (see :attr:`OutboxDrainer.lease_ttl_s`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pixelfox.db.engine import begin_write
from pixelfox.db.models import Image
from pixelfox.db.outbox import OutboxEntry
from pixelfox.leases import Lease, run_with_lease
from pixelfox.queue import JobQueue

logger = logging.getLogger(__name__)

#: longest ``outbox`` lease (s), whatever ``PIXELFOX_LEASE_S`` says: a pass run by two managers is harmless
OUTBOX_LEASE_MAX_S = 15.0


class OutboxDrainer:
    """Re-enqueue outbox rows Redis forgot; ``interval_s`` between passes, ``grace_s`` minimum row age."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], queue: JobQueue, *, interval_s: float = 5.0,
                 grace_s: float = 5.0, batch: int = 500) -> None:
        self.sessions = sessions
        self.queue = queue
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.batch = batch
        self.lease = Lease(queue.redis, "outbox", ttl_s=self.lease_ttl_s, owner=queue.consumer)

    @property
    def lease_ttl_s(self) -> float:
        """Seconds the ``outbox`` lease lasts unless renewed: how soon another manager drains after its
        holder died. The managers' queue lease (``PIXELFOX_LEASE_S``, after which a dead manager's jobs
        move), at most :data:`OUTBOX_LEASE_MAX_S` (a pass run twice is harmless) and at least three
        outbox intervals (the holder renews once an interval)."""
        return max(3 * self.interval_s, min(self.queue.lease_ms / 1000, OUTBOX_LEASE_MAX_S))

    async def drain_once(self, grace_s: float | None = None) -> int:
        """One pass; returns how many jobs were enqueued again."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.grace_s if grace_s is None else grace_s)
        async with self.sessions() as s:
            await begin_write(s)
            rows = (await s.execute(
                select(OutboxEntry, Image.status).join(Image, Image.id == OutboxEntry.image_id)
                .order_by(OutboxEntry.created_at).limit(self.batch)
            )).all()
            done = [e.image_id for e, status in rows if status in ("ready", "failed")]
            if done:
                await s.execute(delete(OutboxEntry).where(OutboxEntry.image_id.in_(done)))
                await s.commit()
        todo = [e for e, status in rows if status == "processing" and _aware(e.created_at) <= cutoff]
        known = await self.queue.known([e.image_id for e in todo])
        n = 0
        for entry, is_known in zip(todo, known, strict=True):
            if not is_known:
                await self.queue.enqueue(entry.image_id, lane=entry.lane, kind=entry.kind)
                logger.warning("outbox: image %s had no job in Redis; enqueued again", entry.image_id)
                n += 1
        return n

    async def run(self, stop: asyncio.Event) -> None:
        """Drain at start (no grace: anything left is from before) and then every ``interval_s``.

        With several managers only the holder of the ``outbox`` lease drains (pixelfox.leases).
        """
        first = True

        async def one_pass() -> None:
            nonlocal first
            try:
                await self.queue.ensure_group()
                await self.drain_once(0.0 if first else None)
                first = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("outbox drain failed (%s: %s); retrying", type(exc).__name__, exc)

        await run_with_lease(self.lease, stop, one_pass, every_s=self.interval_s)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
