"""The processing node's side of the manager's ``Work`` stream.

It says hello with its slots and capabilities, then sends a ``WorkerStatus`` every third of
the job lease (at least once a second before the first job): the leases of the jobs it still
runs - which extends them - its free slots, and whether it drains. It runs every job it is
sent (never more than its slots) and reports each result or failure on the same stream.

A broken stream is reopened at once once the manager answers again (the call waits for the
channel to connect), and after a refusal with a short jittered back-off (0.1 s doubling up
to 1 s, :class:`Backoff`). The manager gave the jobs of a broken stream to
other nodes already (and fences their late reports), so they are cancelled here.

Drain (SIGTERM): the next status says ``draining`` so the manager sends nothing more; a job
that still arrives is handed back at once; running jobs get the grace period to finish and
report, and whatever is left is handed back (``JobHandBack``) before the stream closes.

Idle trim: once the last running job has finished and no job has started for ``trim_idle_s``
(1 s by default), the node gives the memory that the jobs freed back to the kernel
(:func:`pixelfox.memtrim.trim`, in a thread). A busy node never trims between its jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator

import grpc

from nodes.proc.service import Processor
from pixelfox import memtrim
from pixelfox.node import ManagerLink
from pixelfox.v1 import jobs_pb2, manager_pb2

logger = logging.getLogger(__name__)

Outbox = asyncio.Queue[manager_pb2.WorkerMessage | None]

#: a Work stream that lasted this long (seconds) was a real one: the back-off starts again from the bottom
STREAM_HELD_S = 2.0


class Backoff:
    """Pauses between tries to open the ``Work`` stream, in seconds: ``first_s`` doubling up to ``cap_s``,
    each drawn at random between half and all of that (jitter: nodes that lost the same manager do not
    come back in step). :meth:`reset` after a stream that was held."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 1.0) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self._step = first_s

    def next(self) -> float:
        """The pause before the next try (and double the one after, up to the cap)."""
        pause = self._step * random.uniform(0.5, 1.0)
        self._step = min(self._step * 2, self.cap_s)
        return pause

    def reset(self) -> None:
        self._step = self.first_s


class Worker:
    """One node's job runner: ``slots`` concurrent jobs, ``capabilities`` as announced (e.g. "gpu").
    ``trim_idle_s``: seconds without a job after which freed memory goes back to the kernel
    (0 = never)."""

    def __init__(self, node_id: str, link: ManagerLink, processor: Processor, slots: int,
                 capabilities: list[str], trim_idle_s: float = 1.0) -> None:
        self.node_id = node_id
        self.link = link
        self.processor = processor
        self.slots = slots
        self.capabilities = capabilities
        self.running: dict[str, tuple[asyncio.Task[None], manager_pb2.Job]] = {}
        self.status_interval_s = 1.0
        self.grace_s = 10.0
        self._draining = asyncio.Event()
        self._finished = asyncio.Event()
        self.trim_idle_s = trim_idle_s
        self._started = 0  # jobs started so far: an idle trim is off when another started meanwhile
        self._trimmer: asyncio.Task[None] | None = None

    async def _messages(self, outbox: Outbox) -> AsyncIterator[manager_pb2.WorkerMessage]:
        yield manager_pb2.WorkerMessage(hello=manager_pb2.WorkerHello(
            node_id=self.node_id, slots=self.slots, capabilities=self.capabilities))
        while (msg := await outbox.get()) is not None:
            yield msg

    def _status(self) -> manager_pb2.WorkerMessage:
        leases = [jobs_pb2.JobLease(job_id=j.job_id, lease_id=j.lease_id) for _t, j in self.running.values()]
        return manager_pb2.WorkerMessage(status=jobs_pb2.WorkerStatus(
            leases=leases, free_slots=max(0, self.slots - len(self.running)), slots=self.slots,
            draining=self._draining.is_set()))

    async def _status_loop(self, outbox: Outbox) -> None:
        while True:
            await outbox.put(self._status())
            await asyncio.sleep(self.status_interval_s)

    async def _run_job(self, job: manager_pb2.Job, outbox: Outbox) -> None:
        try:
            outcome = await self.processor.run(job)
            if outcome.result is not None:
                await outbox.put(manager_pb2.WorkerMessage(result=outcome.result))
            elif outcome.failure is not None:
                await outbox.put(manager_pb2.WorkerMessage(failure=outcome.failure))
        finally:
            self.running.pop(job.job_id, None)
            if not self.running and self.trim_idle_s > 0 and not self._finished.is_set():
                if self._trimmer is not None:
                    self._trimmer.cancel()
                self._trimmer = asyncio.create_task(self._trim_when_idle(self._started))

    async def _trim_when_idle(self, started: int) -> None:
        """After ``trim_idle_s`` with no job running and none started since (``started`` jobs had started
        when the last one ended), trim the heap in a thread (it locks each malloc arena in turn)."""
        await asyncio.sleep(self.trim_idle_s)
        if self.running or self._started != started:
            return
        t = time.perf_counter()
        released = await asyncio.to_thread(memtrim.trim)
        logger.debug("idle: malloc_trim %s in %.1f ms", "released memory" if released else "had nothing to release",
                     (time.perf_counter() - t) * 1000)

    def _start(self, job: manager_pb2.Job, outbox: Outbox) -> None:
        if job.lease_seconds > 0:
            self.status_interval_s = min(1.0, job.lease_seconds / 3)
        self._started += 1
        task = asyncio.create_task(self._run_job(job, outbox))
        self.running[job.job_id] = (task, job)

    async def _hand_back(self, jobs: list[manager_pb2.Job], outbox: Outbox, reason: str) -> None:
        if jobs:
            await outbox.put(manager_pb2.WorkerMessage(hand_back=jobs_pb2.JobHandBack(
                leases=[jobs_pb2.JobLease(job_id=j.job_id, lease_id=j.lease_id) for j in jobs], reason=reason)))
            logger.warning("handed back %d job(s): %s", len(jobs), reason)

    async def _on_message(self, msg: manager_pb2.DispatchMessage, outbox: Outbox) -> None:
        if msg.HasField("job"):
            if self._draining.is_set():
                await self._hand_back([msg.job], outbox, "draining")
            else:
                self._start(msg.job, outbox)

    async def _session(self) -> None:
        outbox: Outbox = asyncio.Queue()
        # several managers: open the stream to one whose heartbeat was answered (one that is down or
        # frozen would hold it); with one manager this returns at once
        while not await self.link.wait_live(0.5):
            if self._draining.is_set():
                return
        peer, stub = self.link.pick()
        # wait_for_ready: while the manager is down the call waits for the channel to connect and goes out
        # the moment it does, instead of failing at once and waiting for the next try of the back-off
        call = stub.Work(self._messages(outbox), metadata=self.link.metadata, wait_for_ready=True)
        pinger = asyncio.create_task(self._status_loop(outbox))
        stopper = asyncio.create_task(self._draining.wait())
        # one of several managers that answers no heartbeat for window_s (frozen, cut off) keeps this stream
        # open but dispatches nothing: leave it for a live one (its jobs are re-queued after their lease)
        gone = asyncio.create_task(peer.stays_down(self.link.window_s) if peer else asyncio.Event().wait())
        # Never cancel a pending call.read(): with grpc.aio that cancels the whole call, and the
        # drain below needs the stream to report results and hand jobs back.
        reader: asyncio.Task[object] | None = None
        broken = True
        try:
            while True:
                reader = reader or asyncio.create_task(call.read())
                done, _ = await asyncio.wait({reader, stopper, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone in done:
                    logger.warning("manager %s answers no heartbeat: the work stream moves to another",
                                   peer.address if peer else "?")
                    break
                if reader not in done:
                    broken = False
                    break
                msg, reader = reader.result(), None
                if msg is grpc.aio.EOF:
                    break
                await self._on_message(msg, outbox)  # type: ignore[arg-type]
            if not broken:
                keep = asyncio.create_task(self._keep_reading(call, reader, outbox))
                await self._finish(outbox)
                with contextlib.suppress(TimeoutError):  # the manager ends the call once we half-close
                    await asyncio.wait_for(asyncio.shield(keep), 2.0)
                keep.cancel()
        finally:
            pinger.cancel()
            stopper.cancel()
            gone.cancel()
            call.cancel()
            # end _messages: grpc's task that feeds the call from it would otherwise wait on the outbox
            # forever and be destroyed pending ("Task was destroyed but it is pending!", aclose errors)
            outbox.put_nowait(None)
            for task, _job in list(self.running.values()):  # the manager has re-queued these
                task.cancel()

    async def _keep_reading(self, call: grpc.aio.StreamStreamCall, reader: asyncio.Task[object] | None,
                            outbox: Outbox) -> None:
        """While draining: hand back whatever the manager still sends, until it ends the call."""
        while True:
            msg = await (reader or call.read())
            reader = None
            if msg is grpc.aio.EOF:
                return
            await self._on_message(msg, outbox)  # type: ignore[arg-type]

    async def _finish(self, outbox: Outbox) -> None:
        """Draining: announce it, let running jobs finish within the grace period, hand back the rest."""
        await outbox.put(self._status())
        if self.running:
            tasks = {t for t, _j in self.running.values()}
            _done, pending = await asyncio.wait(tasks, timeout=max(0.1, self.grace_s - 1.0))
            left = [j for t, j in self.running.values() if t in pending]
            await self._hand_back(left, outbox, f"drain grace of {self.grace_s:g} s ran out")
        await outbox.put(None)  # half-close: the manager gives back anything still in flight

    async def drain(self, grace_s: float) -> None:
        """Take no new jobs, let running ones finish and report (up to ``grace_s`` s), close the stream."""
        self.grace_s = grace_s
        self._draining.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finished.wait(), grace_s + 1.0)

    async def run(self, stop: asyncio.Event) -> None:
        """Hold a ``Work`` stream open until drained or ``stop`` is set, reconnecting with back-off."""
        try:
            await self._loop(self._draining)
        finally:
            if self._trimmer is not None:
                self._trimmer.cancel()
            self._finished.set()

    async def _loop(self, stop: asyncio.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            opened = time.monotonic()
            try:
                await self._session()
            except grpc.aio.AioRpcError as exc:
                logger.warning("work stream broke: %s", exc.code().name)
            except Exception:
                logger.exception("work stream error")
            if time.monotonic() - opened >= STREAM_HELD_S:
                backoff.reset()  # a stream that was held: the next try goes at once (after a short pause)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff.next())
