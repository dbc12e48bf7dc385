"""The processing node's side of the manager's ``Work`` stream.

It says hello with its slot count, runs every job it is sent (never more than its slots),
and reports each result or failure on the same stream. A broken stream is reopened with
back-off; jobs that were running when it broke are reported on the next stream only if the
manager still holds their lease (it re-queued them otherwise, and their late reports are
ignored by fencing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from nodes.proc.service import Processor
from pixelfox.node import ManagerLink
from pixelfox.v1 import manager_pb2

logger = logging.getLogger(__name__)


class Worker:
    def __init__(self, node_id: str, link: ManagerLink, processor: Processor, slots: int,
                 capabilities: list[str]) -> None:
        self.node_id = node_id
        self.link = link
        self.processor = processor
        self.slots = slots
        self.capabilities = capabilities
        self.running: set[asyncio.Task[None]] = set()
        self._draining = asyncio.Event()
        self._finished = asyncio.Event()

    async def _messages(self, outbox: asyncio.Queue[manager_pb2.WorkerMessage | None]) -> AsyncIterator[
            manager_pb2.WorkerMessage]:
        yield manager_pb2.WorkerMessage(hello=manager_pb2.WorkerHello(
            node_id=self.node_id, slots=self.slots, capabilities=self.capabilities))
        while (msg := await outbox.get()) is not None:
            yield msg

    async def _run_job(self, job: manager_pb2.Job, outbox: asyncio.Queue[manager_pb2.WorkerMessage | None]) -> None:
        outcome = await self.processor.run(job)
        if outcome.result is not None:
            await outbox.put(manager_pb2.WorkerMessage(result=outcome.result))
        elif outcome.failure is not None:
            await outbox.put(manager_pb2.WorkerMessage(failure=outcome.failure))

    async def _session(self, stop: asyncio.Event) -> None:
        outbox: asyncio.Queue[manager_pb2.WorkerMessage | None] = asyncio.Queue()
        call = self.link.stub.Work(self._messages(outbox), metadata=self.link.metadata)
        stopper = asyncio.create_task(stop.wait())
        try:
            while True:
                reader = asyncio.create_task(call.read())
                done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if reader not in done:
                    reader.cancel()
                    break
                msg = reader.result()
                if msg is grpc.aio.EOF:
                    break
                if msg.HasField("job"):
                    task = asyncio.create_task(self._run_job(msg.job, outbox))
                    self.running.add(task)
                    task.add_done_callback(self.running.discard)
            # draining: let running jobs report on this stream, then close it
            if self.running:
                await asyncio.wait(set(self.running))
            await outbox.put(None)
            await asyncio.sleep(0.2)
        finally:
            stopper.cancel()
            call.cancel()

    async def drain(self, grace_s: float) -> None:
        """Take no new jobs, let running ones finish and report (up to ``grace_s`` s), close the stream."""
        self._draining.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finished.wait(), grace_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Hold a ``Work`` stream open until drained or ``stop`` is set, reconnecting with back-off."""
        try:
            await self._loop(self._draining)
        finally:
            self._finished.set()

    async def _loop(self, stop: asyncio.Event) -> None:
        delay = 0.2
        while not stop.is_set():
            try:
                await self._session(stop)
                delay = 0.2
            except grpc.aio.AioRpcError as exc:
                logger.warning("work stream broke: %s", exc.code().name)
            except Exception:
                logger.exception("work stream error")
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)
