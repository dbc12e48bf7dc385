"""Job dispatch to processing nodes over their ``Work`` streams (DESIGN.md main flow step 4).

A processing node opens ``Work`` and says hello with its slot count; the dispatcher takes a
job from the durable queue only when some node has a free slot, sends it to the least
loaded one with a fresh lease id, and acknowledges the queue entry only when that node
reports the job done. A report whose lease id is not the current one is ignored (fencing).
A node that disconnects gives its jobs back to the queue at once; a manager that dies leaves
them pending, and another manager takes them over when the lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.registry import Registry
from pixelfox.db.models import Image, ObjectLocation, Variant
from pixelfox.queue import JobQueue, QueuedJob
from pixelfox.v1 import manager_pb2

logger = logging.getLogger(__name__)

QUEUE_DEPTH = Gauge("pixelfox_queue_depth", "jobs waiting or in flight", ["queue"])
JOBS = Counter("pixelfox_jobs_total", "jobs finished by result", ["result"])
JOB_SECONDS = Histogram("pixelfox_queue_job_duration_seconds", "dispatch to report (s)", ["job"])


@dataclass
class InFlight:
    job: QueuedJob
    lease_id: str
    started: float


@dataclass
class Worker:
    node_id: str
    slots: int
    capabilities: list[str]
    outbox: asyncio.Queue[manager_pb2.DispatchMessage] = field(default_factory=asyncio.Queue)
    inflight: dict[str, InFlight] = field(default_factory=dict)
    connected: bool = True

    @property
    def free(self) -> int:
        return self.slots - len(self.inflight)


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: Registry,
        queue: JobQueue,
        replicas: int,
        lease_s: float,
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.queue = queue
        self.replicas = replicas
        self.lease_s = lease_s
        self.workers: dict[str, Worker] = {}
        self.wake = asyncio.Event()

    # ---- the dispatch loop -------------------------------------------------------------

    def _pick(self) -> Worker | None:
        skip = self.registry.in_maintenance  # admin maintenance mode: no new jobs (refreshed every second)
        ready = [w for w in self.workers.values() if w.connected and w.free > 0 and w.node_id not in skip]
        return min(ready, key=lambda w: (len(w.inflight) / max(1, w.slots), w.node_id)) if ready else None

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set; also renews the leases of jobs in flight."""
        await self.queue.ensure_group()
        last_touch = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() - last_touch > self.lease_s / 3:
                    last_touch = time.monotonic()
                    await self._touch()
                    QUEUE_DEPTH.labels("process").set(await self.queue.depth())
                if self._pick() is None:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), 1.0)
                    continue
                for job in await self.queue.take(1, block_ms=1000):
                    await self._dispatch(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("dispatch loop error; retrying")
                await asyncio.sleep(1.0)

    async def _touch(self) -> None:
        ids = [e for w in self.workers.values() for e in w.inflight]
        await self.queue.touch(ids)

    async def _dispatch(self, job: QueuedJob) -> None:
        worker = self._pick()
        if worker is None:
            await self.queue.requeue(job)
            return
        msg = await self._job_message(job)
        if msg is None:
            await self.queue.ack(job.entry_id)  # image gone or already finished
            return
        worker.inflight[job.entry_id] = InFlight(job, msg.lease_id, time.monotonic())
        await worker.outbox.put(manager_pb2.DispatchMessage(job=msg))
        logger.info("job %s (image %s, attempt %d) -> %s", job.entry_id, job.image_id, job.attempt, worker.node_id)

    async def _job_message(self, job: QueuedJob) -> manager_pb2.Job | None:
        async with self.sessions() as s:
            img = await s.get(Image, job.image_id)
            if img is None or img.status != "processing":
                return None
            locs = (
                (await s.execute(select(ObjectLocation.node_id).where(ObjectLocation.key == img.original_key)))
                .scalars()
                .all()
            )
        holders = [r for r in (await self.registry.all()) if r.node_id in set(locs)]
        holders.sort(key=lambda r: not self.registry.healthy(r))
        targets = await self.registry.place(self.replicas)
        return manager_pb2.Job(
            job_id=job.entry_id,
            lease_id=secrets.token_hex(8),
            image_id=img.id,
            original_key=img.original_key,
            source_nodes=[self.registry.to_proto(r) for r in holders],
            target_nodes=[self.registry.to_proto(r) for r in targets],
            recipe_version=img.recipe_version,
            lease_seconds=self.lease_s,
            sha256=img.sha256,
            attempt=job.attempt,
        )

    # ---- one processing node's stream --------------------------------------------------

    async def serve(
        self, requests: AsyncIterator[manager_pb2.WorkerMessage]
    ) -> AsyncIterator[manager_pb2.DispatchMessage]:
        """Handle one node's ``Work`` stream: read its reports, yield its jobs."""
        first = await anext(requests, None)
        if first is None or not first.HasField("hello"):
            return
        hello = first.hello
        old = self.workers.get(hello.node_id)
        if old is not None:
            await self._lost(old)
        worker = Worker(hello.node_id, max(1, hello.slots), list(hello.capabilities))
        self.workers[worker.node_id] = worker
        logger.info("processing node %s connected with %d slots", worker.node_id, worker.slots)
        self.wake.set()
        reader = asyncio.create_task(self._read(worker, requests))
        try:
            while not reader.done():
                getter = asyncio.create_task(worker.outbox.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                else:
                    getter.cancel()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if self.workers.get(worker.node_id) is worker:
                del self.workers[worker.node_id]
            await self._lost(worker)

    async def _read(self, worker: Worker, requests: AsyncIterator[manager_pb2.WorkerMessage]) -> None:
        async for msg in requests:
            if msg.HasField("result"):
                await self._on_result(worker, msg.result)
            elif msg.HasField("failure"):
                await self._on_failure(worker, msg.failure)

    async def _lost(self, worker: Worker) -> None:
        worker.connected = False
        jobs = list(worker.inflight.values())
        worker.inflight.clear()
        for f in jobs:
            await self.queue.requeue(f.job)
        if jobs:
            logger.warning("processing node %s left; %d job(s) re-queued", worker.node_id, len(jobs))
        self.wake.set()

    def _claim(self, worker: Worker, job_id: str, lease_id: str) -> InFlight | None:
        f = worker.inflight.get(job_id)
        if f is None or f.lease_id != lease_id:
            logger.warning("ignoring report for job %s from %s: lease not held", job_id, worker.node_id)
            return None
        del worker.inflight[job_id]
        self.wake.set()
        return f

    async def _on_result(self, worker: Worker, r: manager_pb2.JobResult) -> None:
        f = self._claim(worker, r.job_id, r.lease_id)
        if f is None:
            return
        async with self.sessions() as s:
            img = await s.get(Image, f.job.image_id)
            if img is not None:
                existing = {(v.name, v.format, v.recipe_version): v for v in img.variants}
                for v in r.variants:
                    row = existing.get((v.name, v.format, img.recipe_version))
                    if row is None:
                        row = Variant(image_id=img.id, recipe_version=img.recipe_version, name=v.name, format=v.format)
                        img.variants.append(row)
                    row.width, row.height, row.bytes = v.width, v.height, v.bytes
                    row.frames, row.key, row.sha256 = max(1, v.frames), v.key, v.sha256
                    for node_id in dict.fromkeys(r.storage_node_ids):
                        await s.merge(ObjectLocation(key=v.key, node_id=node_id, size=v.bytes))
                img.width, img.height = r.width or img.width, r.height or img.height
                img.status, img.ready_at, img.attempts = "ready", datetime.now(UTC), f.job.attempt + 1
                await s.commit()
        await self.queue.ack(f.job.entry_id)
        JOBS.labels("ready").inc()
        JOB_SECONDS.labels("process_image").observe(time.monotonic() - f.started)
        logger.info("image %s ready (%d variants) from %s", f.job.image_id, len(r.variants), worker.node_id)

    async def _on_failure(self, worker: Worker, r: manager_pb2.JobFailure) -> None:
        f = self._claim(worker, r.job_id, r.lease_id)
        if f is None:
            return
        again = False if r.permanent else await self.queue.retry(f.job, r.message)
        if again:
            JOBS.labels("retried").inc()
            logger.warning("job %s failed (%s), retrying", r.job_id, r.message)
            return
        if r.permanent:
            await self.queue.ack(f.job.entry_id)
        async with self.sessions() as s:
            img = await s.get(Image, f.job.image_id)
            if img is not None:
                img.status, img.error_code = "failed", r.code or "processing-failed"
                img.error_message = r.message[:500] or "processing failed"
                img.attempts = f.job.attempt + 1
                await s.commit()
        JOBS.labels("failed").inc()
        logger.warning("image %s failed: %s (%s)", f.job.image_id, r.message, r.code)
