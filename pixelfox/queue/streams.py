"""Durable, at-least-once job queue on one Redis Stream with a consumer group.

Every manager is a consumer of group ``dispatchers``. A job is an entry ``{image_id,
attempt}``; a manager takes it with ``XREADGROUP``, hands it to a processing node and
``XACK``s it only when the node reports it done. The pending entry is the job's lease: while
a manager works on it, :meth:`JobQueue.touch` resets its idle time; entries idle longer than
``lease_s`` (their manager died) are taken over with ``XAUTOCLAIM`` by any manager. Failed
jobs are re-added with ``attempt + 1``; after ``max_attempts`` they go to the dead-letter
stream. All keys share the hash tag ``{jobs}`` so the MULTI blocks stay in one Cluster slot
(ECOSYSTEM.md §3). Outputs are content-addressed, so a job that runs twice is harmless.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

STREAM = "pixelfox:{jobs}:stream"
DEAD = "pixelfox:{jobs}:dead"
GROUP = "dispatchers"


@dataclass(frozen=True)
class QueuedJob:
    entry_id: str
    image_id: str
    attempt: int
    enqueued_at: float  # unix seconds


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _job(entry_id: bytes | str, fields: dict[bytes, bytes]) -> QueuedJob:
    f = {_decode(k): _decode(v) for k, v in fields.items()}
    return QueuedJob(
        entry_id=_decode(entry_id),
        image_id=f.get("image_id", ""),
        attempt=int(f.get("attempt", "0")),
        enqueued_at=float(f.get("ts", "0")),
    )


class JobQueue:
    """The queue as seen by one consumer (a manager); ``lease_s`` in seconds."""

    def __init__(self, redis: aioredis.Redis, consumer: str, lease_s: float = 120.0, max_attempts: int = 3) -> None:
        self.redis = redis
        self.consumer = consumer
        self.lease_ms = int(lease_s * 1000)
        self.max_attempts = max_attempts

    async def ensure_group(self) -> None:
        """Create the stream and group if missing (idempotent)."""
        try:
            await self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, image_id: str, attempt: int = 0) -> str:
        """Add a job; returns its entry id."""
        entry = await self.redis.xadd(STREAM, {"image_id": image_id, "attempt": attempt, "ts": f"{time.time():.3f}"})
        return _decode(entry)

    async def take(self, count: int = 1, block_ms: int = 1000) -> list[QueuedJob]:
        """Up to ``count`` jobs: first ones whose lease ran out, then new ones (blocking ``block_ms``)."""
        _next, claimed, *_ = await self.redis.xautoclaim(
            STREAM, GROUP, self.consumer, min_idle_time=self.lease_ms, start_id="0-0", count=count
        )
        jobs = [_job(eid, fields) for eid, fields in claimed if fields]
        if len(jobs) < count:
            resp = await self.redis.xreadgroup(
                GROUP, self.consumer, {STREAM: ">"}, count=count - len(jobs), block=block_ms
            )
            for _stream, entries in resp or []:
                jobs.extend(_job(eid, fields) for eid, fields in entries if fields)
        return jobs

    async def touch(self, entry_ids: list[str]) -> None:
        """Renew the lease of jobs this consumer still works on (resets their idle time)."""
        if entry_ids:
            await self.redis.xclaim(STREAM, GROUP, self.consumer, min_idle_time=0, message_ids=entry_ids, justid=True)

    async def ack(self, entry_id: str) -> None:
        """The job is done: remove it from the pending list and the stream."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(STREAM, GROUP, entry_id)
            pipe.xdel(STREAM, entry_id)
            await pipe.execute()

    async def retry(self, job: QueuedJob, reason: str) -> bool:
        """Re-queue a failed job with ``attempt + 1``, or dead-letter it; True if re-queued."""
        again = job.attempt + 1 < self.max_attempts
        async with self.redis.pipeline(transaction=True) as pipe:
            if again:
                pipe.xadd(STREAM, {"image_id": job.image_id, "attempt": job.attempt + 1, "ts": f"{time.time():.3f}"})
            else:
                pipe.xadd(DEAD, {"image_id": job.image_id, "attempt": job.attempt, "reason": reason[:500]})
            pipe.xack(STREAM, GROUP, job.entry_id)
            pipe.xdel(STREAM, job.entry_id)
            await pipe.execute()
        return again

    async def requeue(self, job: QueuedJob) -> None:
        """Give a job back untouched (same attempt), e.g. when its processing node went away."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(STREAM, {"image_id": job.image_id, "attempt": job.attempt, "ts": f"{time.time():.3f}"})
            pipe.xack(STREAM, GROUP, job.entry_id)
            pipe.xdel(STREAM, job.entry_id)
            await pipe.execute()

    async def depth(self) -> int:
        """Jobs waiting or in flight (entries in the stream)."""
        return int(await self.redis.xlen(STREAM))

    async def dead_count(self) -> int:
        return int(await self.redis.xlen(DEAD))
