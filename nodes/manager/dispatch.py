"""Job dispatch to processing nodes over their ``Work`` streams (DESIGN.md main flow step 4).

A processing node opens ``Work``, says hello with its slots and capabilities, and then sends
a :class:`WorkerStatus` every third of the job lease: its free slots, whether it drains, and
the jobs it still works on. The dispatcher takes a job from the durable queue only when some
live node has a free slot (flow control), sends it to the least loaded one that has the
capabilities the job asks for (``gpu``) with a fresh lease id, and acknowledges the queue
entry only when that node reports the job done.

Leases (why the node extends them rather than the manager renewing while the stream is
open): a node that is SIGSTOPped, swapped out or cut off by a one-way partition keeps its
TCP connection - the kernel still ACKs - so "the stream is alive" proves nothing about the
job. Only a message the node's event loop sent recently does. A job whose lease is not
extended within ``job_lease_s`` is taken back and queued again (counted as *lost*); the
node is skipped for new work until it speaks again. A report whose lease id is not the
current one is ignored (fencing); outputs are content-addressed, so the late run's objects
are the same objects and its rows are never written.

Write fence (:mod:`pixelfox.storage.fence`): variant keys are shared by every image of the same
bytes, so a job's variants must not be deleted between the processing node's puts and the rows
recorded here (another image of those bytes deleted meanwhile). The processing node has no
Redis, so the manager is the writer: it enters the fence for the image's SHA-256 with the
dispatch's lease id before sending the job (a delete under way defers the job a second), renews
it with the manager lease and leaves once the result is recorded, the job failed or was handed
back, or its lease ran out (a late run of a taken-back job reports nothing that gets recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.objects import image_salt, wanted_key
from nodes.manager.registry import Registry
from pixelfox import errors, failpoints
from pixelfox.background import Background
from pixelfox.db.engine import begin_write
from pixelfox.db.models import Image, ObjectLocation, Variant
from pixelfox.db.outbox import OutboxEntry
from pixelfox.queue import JobQueue, QueuedJob
from pixelfox.storage.fence import WriteFence, job_token
from pixelfox.v1 import jobs_pb2, manager_pb2

logger = logging.getLogger(__name__)

QUEUE_DEPTH = Gauge("pixelfox_queue_depth", "jobs waiting or in flight", ["queue"])
JOBS = Counter("pixelfox_jobs_total", "jobs finished by result", ["result"])
JOB_SECONDS = Histogram("pixelfox_queue_job_duration_seconds", "dispatch to report (s)", ["job"])
INTERRUPTED = Counter("pixelfox_jobs_interrupted_total", "runs taken back from a node", ["reason"])


@dataclass
class InFlight:
    job: QueuedJob
    lease_id: str
    started: float  # monotonic
    expires: float  # monotonic; extended by the node's WorkerStatus
    node_id: str = ""
    sha: str = ""  # the image's SHA-256: the write fence this dispatch holds ("" none)


@dataclass
class Worker:
    """A connected processing node as the dispatcher sees it."""

    node_id: str
    slots: int
    capabilities: list[str]
    # None ends the node's stream (the manager drains): see :meth:`Dispatcher.drain`
    outbox: asyncio.Queue[manager_pb2.DispatchMessage | None] = field(default_factory=asyncio.Queue)
    inflight: dict[str, InFlight] = field(default_factory=dict)
    connected: bool = True
    draining: bool = False
    last_seen: float = field(default_factory=time.monotonic)
    closing: bool = False  # the stream's end is queued (the manager drains)
    handling: bool = False  # a report from the node is being handled (a result being recorded)

    def close(self) -> None:
        """End this node's stream once the messages queued before are sent (idempotent)."""
        if not self.closing:
            self.closing = True
            self.outbox.put_nowait(None)

    @property
    def free(self) -> int:
        return 0 if self.draining or not self.connected else self.slots - len(self.inflight)


@dataclass(frozen=True)
class DispatchPolicy:
    """Seconds: ``job_lease_s`` node lease, ``job_timeout_s`` per-job limit sent to the node."""

    job_lease_s: float = 15.0
    job_timeout_s: float = 120.0


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: Registry,
        queue: JobQueue,
        replicas: int,
        lease_s: float,
        policy: DispatchPolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.queue = queue
        self.replicas = replicas
        self.lease_s = lease_s
        self.policy = policy or DispatchPolicy()
        self.workers: dict[str, Worker] = {}
        self.wake = asyncio.Event()
        self.draining = False  # set by :meth:`drain`: no new jobs, no new streams
        # loops that live and die with the dispatcher (the outbox drainer); each gets the stop event
        self.companions: list[Callable[[asyncio.Event], Awaitable[None]]] = []
        # called with the image id after a result is recorded (issue 5: private re-key, read model)
        self.on_recorded: Callable[[str], Awaitable[None]] | None = None
        # called with the object keys a result wrote for an image deleted while it was processing
        self.on_orphaned: Callable[[list[str]], Awaitable[object]] | None = None
        # the write fence held for each job in flight (module doc), and the hook run (in the background)
        # with the hash once a job left it: deletes of those bytes that waited for the job
        self.fence = WriteFence(registry.redis)
        self.on_written: Callable[[str], Coroutine[Any, Any, None]] | None = None
        self._background = Background(logger)
        self._taking_back: set[asyncio.Task[None]] = set()  # _lost of streams that ended (drain waits for them)

    # ---- the dispatch loop -------------------------------------------------------------

    def _pick(self, job: QueuedJob | None) -> Worker | None:
        if self.draining:
            return None
        now = time.monotonic()
        ready = [w for w in self.workers.values()
                 if w.free > 0 and now - w.last_seen < self.policy.job_lease_s
                 and w.node_id not in self.registry.in_maintenance  # admin maintenance mode (issue 6)
                 and (job is None or not job.gpu or "gpu" in w.capabilities)]
        return min(ready, key=lambda w: (len(w.inflight) / max(1, w.slots), w.node_id)) if ready else None

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set (and run the companions); expires node leases, renews manager leases."""
        await asyncio.gather(self._loop(stop), *(fn(stop) for fn in self.companions))

    async def drain(self, grace_s: float) -> None:
        """The manager stops (SIGTERM): dispatch nothing more, refuse new ``Work`` streams, and end each
        open one as soon as it has no job in flight - at once for an idle node, after its jobs reported
        for a busy one, at the latest after ``grace_s`` seconds. Jobs still in flight then are re-queued
        (counted as lost, as for a node that left) and run again elsewhere: at-least-once. Returns once
        every stream has ended (or 1 s after the last was told to end)."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        while self.workers and time.monotonic() < deadline + 1.0:
            late = time.monotonic() >= deadline
            for w in list(self.workers.values()):
                if late or (not w.inflight and not w.handling):  # ending the stream cancels a report's handling
                    w.close()
            await asyncio.sleep(0.05)
        if self._taking_back:  # the jobs of the streams that ended are re-queued before this manager goes
            await asyncio.wait(set(self._taking_back), timeout=5.0)

    async def _loop(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(Exception):  # Redis may be down at start; the loop retries
            await self.queue.ensure_group()
        last_touch = 0.0
        while not stop.is_set():
            try:
                await self._expire()
                if time.monotonic() - last_touch > min(self.lease_s / 3, 5.0):
                    last_touch = time.monotonic()
                    await self.queue.ensure_group()  # cheap; recreates the group after a Redis wipe
                    await self.queue.touch([f.job for w in self.workers.values() for f in w.inflight.values()])
                    await self._renew_fences()
                    QUEUE_DEPTH.labels("process").set(await self.queue.depth())
                await self.queue.promote_due()
                if self._pick(None) is None:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), 0.5)
                    continue
                for job in await self.queue.take(1, block_ms=500):
                    await self._dispatch(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("dispatch loop error (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(1.0)

    async def _expire(self) -> None:
        now = time.monotonic()
        for w in list(self.workers.values()):
            for job_id, f in list(w.inflight.items()):
                if f.expires < now:
                    del w.inflight[job_id]
                    await self._interrupted(w, f, "lease expired")

    @property
    def fence_lease_s(self) -> float:
        """Seconds a job's write fence lasts unless renewed (renewed every few seconds by the loop)."""
        return max(30.0, 4 * self.policy.job_lease_s)

    async def _renew_fences(self) -> None:
        for f in [f for w in self.workers.values() for f in w.inflight.values() if f.sha]:
            if not await self.fence.renew(f.sha, job_token(f.lease_id), self.fence_lease_s):
                logger.warning("job %s image %s: its write fence had lapsed; entered again", f.job.entry_id,
                               f.job.image_id)
                await self.fence.try_enter(f.sha, job_token(f.lease_id), self.fence_lease_s)

    async def _release(self, f: InFlight, notify: bool = True) -> None:
        """Leave ``f``'s write fence and (``notify``) :meth:`_notify` its hash; errors are logged (the
        fence's lease ends it)."""
        if not f.sha:
            return
        try:
            await self.fence.leave(f.sha, job_token(f.lease_id))
        except Exception as exc:
            logger.warning("job %s: could not leave the write fence (its lease ends it): %s", f.job.entry_id, exc)
            return
        if notify:
            self._notify(f.sha)

    def _notify(self, sha: str) -> None:
        """Run ``on_written(sha)`` in the background (it may delete on storage nodes: the node's stream
        is not held up, nor are its lease extensions)."""
        if sha and self.on_written is not None:
            self._background.start(self.on_written(sha), f"deletes waiting for {sha[:12]}")

    async def _interrupted(self, worker: Worker, f: InFlight, reason: str) -> None:
        INTERRUPTED.labels(reason).inc()
        await self._release(f)
        logger.warning("interrupted: job %s image %s on %s (%s); re-queued", f.job.entry_id, f.job.image_id,
                       worker.node_id, reason)
        try:
            if not await self.queue.requeue(f.job, lost=True):
                await self._finish_failed(f.job, "processing-lost", "processing was lost too many times")
        except Exception as exc:  # Redis down: the pending entry is retaken after the manager lease
            logger.warning("could not re-queue job %s (%s); it is retaken after %.0f s", f.job.entry_id, exc,
                           self.lease_s)
        self.wake.set()

    async def _dispatch(self, job: QueuedJob) -> None:
        worker = self._pick(job)
        if worker is None:
            if job.gpu:  # no GPU node free: look again in a moment, without counting an attempt
                await self.queue.defer(job, 2.0, drop=job)
            else:
                await self.queue.requeue(job)
            return
        msg = await self._job_message(job)
        if msg is None:
            await self.queue.ack(job)  # image gone or already finished
            return
        if not await self.fence.try_enter(msg.sha256, job_token(msg.lease_id), self.fence_lease_s):
            logger.info("dispatch: job %s image %s waits: a delete of its bytes is under way", job.entry_id,
                        job.image_id)
            await self.queue.defer(job, 1.0, drop=job)  # not an attempt: nothing ran
            return
        now = time.monotonic()
        worker.inflight[job.entry_id] = InFlight(job, msg.lease_id, now, now + self.policy.job_lease_s,
                                                 worker.node_id, msg.sha256)
        await worker.outbox.put(manager_pb2.DispatchMessage(job=msg))
        logger.info("dispatch: job %s image %s attempt %d lost %d lane %s -> %s", job.entry_id, job.image_id,
                    job.attempt, job.lost, job.lane, worker.node_id)
        failpoints.hit("after-dispatch")

    async def _job_message(self, job: QueuedJob) -> manager_pb2.Job | None:
        async with self.sessions() as s:
            img = await s.get(Image, job.image_id)
            wanted = "ready" if job.kind == "reprocess_image" else "processing"
            if img is None or img.status != wanted:
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
            recipe_version=job.recipe or img.recipe_version,
            lease_seconds=self.policy.job_lease_s,
            sha256=img.sha256,
            attempt=job.attempt,
            priority=job.lane,
            estimated_cpu_s=job.cpu,
            requires_gpu=job.gpu,
            deadline_s=self.policy.job_timeout_s,
            kind=job.kind,
            private_salt=image_salt(img),
        )

    # ---- one processing node's stream --------------------------------------------------

    async def serve(
        self, requests: AsyncIterator[manager_pb2.WorkerMessage]
    ) -> AsyncIterator[manager_pb2.DispatchMessage]:
        """Handle one node's ``Work`` stream: read its reports, yield its jobs."""
        if self.draining:
            raise errors.Unavailable("this manager is shutting down; connect to another one")
        first = await anext(requests, None)
        if first is None or not first.HasField("hello"):
            return
        hello = first.hello
        old = self.workers.get(hello.node_id)
        if old is not None:
            await self._lost(old)
        worker = Worker(hello.node_id, max(1, hello.slots), list(hello.capabilities))
        self.workers[worker.node_id] = worker
        logger.info("processing node %s connected with %d slots (%s)", worker.node_id, worker.slots,
                    ",".join(worker.capabilities))
        self.wake.set()
        reader = asyncio.create_task(self._read(worker, requests))
        # its jobs are taken back when its reports end (the node died, or this stream was closed), from a
        # task of their own: not from this generator's clean-up, which does not always run in time. A
        # node SIGKILLed while a message was being sent to it leaves this generator suspended at its
        # ``yield``; Python closes such a generator only when it is collected, from an event-loop task
        # nothing holds, and a tester saw half such kills leave the job 'running' on no node until
        # the manager lease (PIXELFOX_LEASE_S, 120 s) ran out.
        reader.add_done_callback(lambda _: self._stream_ended(worker))
        getter: asyncio.Task[manager_pb2.DispatchMessage] | None = None
        try:
            while not reader.done():
                getter = asyncio.create_task(worker.outbox.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    if (msg := getter.result()) is None:
                        logger.info("ending the work stream of %s: this manager drains", worker.node_id)
                        break
                    yield msg
                else:
                    getter.cancel()
        finally:
            if getter is not None:
                getter.cancel()
            reader.cancel()  # ends its reports: _stream_ended takes its jobs back

    async def _read(self, worker: Worker, requests: AsyncIterator[manager_pb2.WorkerMessage]) -> None:
        async for msg in requests:
            worker.last_seen = time.monotonic()
            worker.handling = True
            try:
                if msg.HasField("result"):
                    await self._on_result(worker, msg.result)
                elif msg.HasField("failure"):
                    await self._on_failure(worker, msg.failure)
                elif msg.HasField("status"):
                    self._on_status(worker, msg.status)
                elif msg.HasField("hand_back"):
                    await self._on_hand_back(worker, msg.hand_back)
            except Exception:
                # Never let one bad report end the node's stream; an unacked entry is retaken
                # after the manager lease and its image re-checked.
                logger.exception("handling a report from %s failed", worker.node_id)
            finally:
                worker.handling = False

    def _on_status(self, worker: Worker, st: jobs_pb2.WorkerStatus) -> None:
        if st.draining and not worker.draining:
            logger.info("processing node %s is draining", worker.node_id)
        worker.draining = st.draining
        if st.slots > 0:
            worker.slots = st.slots
        until = time.monotonic() + self.policy.job_lease_s
        for lease in st.leases:
            f = worker.inflight.get(lease.job_id)
            if f is not None and f.lease_id == lease.lease_id:
                f.expires = until
        if worker.free > 0:
            self.wake.set()

    async def _on_hand_back(self, worker: Worker, hb: jobs_pb2.JobHandBack) -> None:
        for lease in hb.leases:
            f = self._claim(worker, lease.job_id, lease.lease_id)
            if f is not None:
                await self._release(f)
                await self.queue.requeue(f.job)
                logger.warning("handed back: job %s image %s by %s (%s); re-queued", f.job.entry_id,
                               f.job.image_id, worker.node_id, hb.reason)

    def _stream_ended(self, worker: Worker) -> None:
        """``worker``'s reports ended: it leaves the pool (unless a new stream of the same node took its
        place) and its jobs are taken back (:meth:`_lost`) in a background task this dispatcher holds."""
        if self.workers.get(worker.node_id) is worker:
            del self.workers[worker.node_id]
        if worker.connected:
            worker.connected = False
            task = self._background.start(self._lost(worker), f"taking back the jobs of {worker.node_id}")
            self._taking_back.add(task)
            task.add_done_callback(self._taking_back.discard)

    async def _lost(self, worker: Worker) -> None:
        worker.connected = False
        jobs = list(worker.inflight.values())
        worker.inflight.clear()
        for f in jobs:
            await self._interrupted(worker, f, "node left")
        self.wake.set()

    def _claim(self, worker: Worker, job_id: str, lease_id: str) -> InFlight | None:
        f = worker.inflight.get(job_id)
        if f is None or f.lease_id != lease_id:
            logger.warning("fenced: ignoring report for job %s from %s: lease %s not held", job_id, worker.node_id,
                           lease_id)
            return None
        del worker.inflight[job_id]
        self.wake.set()
        return f

    async def _on_result(self, worker: Worker, r: manager_pb2.JobResult) -> None:
        f = self._claim(worker, r.job_id, r.lease_id)
        if f is None:
            return
        recorded, replaced = False, list[str]()
        try:
            for tries in range(3):  # a twin run may have inserted the same rows a moment ago
                try:
                    recorded, replaced = await self._record(f.job, r)
                    break
                except IntegrityError:
                    if tries == 2:
                        raise
        finally:  # recorded (or the image is gone, or it failed): the job writes nothing more that gets named
            await self._release(f, notify=False)
        if not recorded and self.on_orphaned is not None:  # deleted while processing: drop what it wrote
            logger.info("image %s was deleted while it processed: deleting the %d objects its job wrote",
                        f.job.image_id, len(r.variants))
            try:
                await self.on_orphaned([v.key for v in r.variants])
            except Exception:
                logger.exception("cannot delete the variants of deleted image %s", f.job.image_id)
        if replaced and self.on_orphaned is not None:  # a reprocess: the old recipe's files go (they stayed)
            logger.info("image %s: deleting the %d variants of its old recipe", f.job.image_id, len(replaced))
            try:
                await self.on_orphaned(replaced)
            except Exception:
                logger.exception("cannot delete the old variants of image %s", f.job.image_id)
        self._notify(f.sha)  # after on_orphaned: the two deletes of one hash would defer each other
        failpoints.hit("after-result-commit")
        if self.on_recorded is not None:
            try:
                await self.on_recorded(f.job.image_id)
            except Exception:
                logger.exception("after-result hook failed for image %s", f.job.image_id)
        await self.queue.ack(f.job)
        JOB_SECONDS.labels(f.job.kind).observe(time.monotonic() - f.started)
        if recorded:
            await self.queue.forget_dead_of(f.job.image_id)  # a later run finished it: they are moot
            JOBS.labels("ready").inc()
            logger.info("image %s ready (%d variants) from %s", f.job.image_id, len(r.variants), worker.node_id)
        else:
            JOBS.labels("orphaned").inc()

    async def _record(self, job: QueuedJob, r: manager_pb2.JobResult) -> tuple[bool, list[str]]:
        """Write the variant rows (one per name/format/recipe: a re-run updates, never duplicates).

        Returns ``(recorded, replaced)``: ``recorded`` is False when the image was deleted while it
        processed: then only the locations of the objects the job wrote are recorded, so that
        ``on_orphaned`` can delete every replica; ``replaced``, the keys of the rows a reprocess to
        another recipe dropped (their files are deleted the same way: they stayed, counted as used).

        The processing node writes the variants under the keys the job named (:meth:`_job_message`: a private
        image's salt when it was dispatched); an image still ``processing`` (a private upload's new image, or a
        lost one restored) whose variants are not all under the keys that fit its visibility now
        (:func:`~nodes.manager.objects.wanted_key`: a processing node older than ``Job.private_salt`` wrote a
        private image's under its public keys) stays ``processing``, its outbox row kept, until ``on_recorded``
        (:meth:`nodes.manager.library.Library.after_processing`) has moved them and sets it ``ready``: no answer
        names the keys that do not fit, and when that move fails the outbox runs the job again. A ready image's
        (a reprocess whose image changed visibility while it ran) are recorded as they are and moved by the same
        hook."""
        async with self.sessions() as s:
            await begin_write(s)
            img = await s.get(Image, job.image_id, with_for_update={"of": Image})
            if img is None:
                for v in r.variants:
                    for node_id in dict.fromkeys(r.storage_node_ids):
                        await s.merge(ObjectLocation(key=v.key, node_id=node_id, size=v.bytes))
                await s.commit()
                return False, []
            await s.refresh(img, ["variants"])
            recipe = job.recipe or img.recipe_version
            existing = {(v.name, v.format, v.recipe_version): v for v in img.variants}
            for v in r.variants:
                row = existing.get((v.name, v.format, recipe))
                if row is None:
                    row = Variant(image_id=img.id, recipe_version=recipe, name=v.name, format=v.format)
                    img.variants.append(row)
                row.width, row.height, row.bytes = v.width, v.height, v.bytes
                row.frames, row.key, row.sha256 = max(1, v.frames), v.key, v.sha256
                for node_id in dict.fromkeys(r.storage_node_ids):
                    await s.merge(ObjectLocation(key=v.key, node_id=node_id, size=v.bytes))
            replaced: list[str] = []
            if job.kind == "reprocess_image" and r.variants:  # the new recipe replaces the old rows
                for old in [v for v in img.variants if v.recipe_version != recipe]:
                    img.variants.remove(old)
                    replaced.append(old.key)
                img.recipe_version = recipe
            img.width, img.height = r.width or img.width, r.height or img.height
            if r.exif:
                img.exif = dict(r.exif)
            if r.HasField("location"):
                img.gps_lat, img.gps_lon = r.location.latitude, r.location.longitude
            moving = img.status == "processing" and any(wanted_key(img, v.key) != v.key for v in img.variants)
            if img.status != "ready" and not moving:
                img.status, img.ready_at = "ready", datetime.now(UTC)
            img.attempts = job.attempt + 1
            if not moving:
                await s.execute(delete(OutboxEntry).where(OutboxEntry.image_id == img.id))
            await s.commit()
        return True, [k for k in replaced if k]

    async def _on_failure(self, worker: Worker, r: manager_pb2.JobFailure) -> None:
        f = self._claim(worker, r.job_id, r.lease_id)
        if f is None:
            return
        await self._release(f)
        if r.permanent:  # dead at once; its one attempt counts, as the retried ones' do
            await self.queue.bury(replace(f.job, attempt=f.job.attempt + 1), f"{r.code}: {r.message}", drop=f.job)
        else:
            delay = await self.queue.retry(f.job, f"{r.code}: {r.message}")
            if delay is not None:
                JOBS.labels("retried").inc()
                logger.warning("job %s failed (%s), retry in %.1f s", r.job_id, r.message, delay)
                return
        await self._finish_failed(f.job, r.code or "processing-failed", r.message or "processing failed")

    async def _finish_failed(self, job: QueuedJob, code: str, message: str) -> None:
        """Mark the image failed (a failed re-run keeps the image as it was)."""
        async with self.sessions() as s:
            await begin_write(s)
            img = await s.get(Image, job.image_id, with_for_update={"of": Image})
            if img is not None and job.kind == "process_image":
                img.status, img.error_code = "failed", code
                img.error_message = message[:500]
                img.attempts = job.attempt + 1
            await s.execute(delete(OutboxEntry).where(OutboxEntry.image_id == job.image_id))
            await s.commit()
        JOBS.labels("failed").inc()
        logger.warning("image %s failed: %s (%s)", job.image_id, message, code)
