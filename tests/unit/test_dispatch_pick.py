"""Dispatcher flow control: which processing node gets the next job (issue 7).

Pure logic of :meth:`nodes.manager.dispatch.Dispatcher._pick` over real ``Worker`` records:
free slots only, least loaded first, GPU jobs only to GPU-capable nodes, no draining node,
no node that has been silent for a whole job lease.
"""

from __future__ import annotations

import time

from nodes.manager.dispatch import Dispatcher, DispatchPolicy, InFlight, Worker
from nodes.manager.registry import Registry
from pixelfox.queue import QueuedJob


def _dispatcher(*workers: Worker) -> Dispatcher:
    registry = Registry(None, 5.0)  # type: ignore[arg-type]  # _pick reads only its maintenance set
    d = Dispatcher(None, registry, None, replicas=1, lease_s=60, policy=DispatchPolicy(job_lease_s=5))  # type: ignore[arg-type]
    d.workers = {w.node_id: w for w in workers}
    return d


def _busy(w: Worker, n: int) -> Worker:
    for i in range(n):
        job = QueuedJob(f"{w.node_id}-{len(w.inflight)}-{i}", "img")
        w.inflight[job.entry_id] = InFlight(job, "lease", time.monotonic(), time.monotonic() + 5, w.node_id)
    return w


def test_least_loaded_node_with_a_free_slot() -> None:
    a, b = _busy(Worker("a", 2, []), 1), Worker("b", 2, [])
    assert _dispatcher(a, b)._pick(QueuedJob("1", "x")).node_id == "b"
    _busy(b, 2)
    assert _dispatcher(a, b)._pick(QueuedJob("1", "x")).node_id == "a"
    _busy(a, 1)
    assert _dispatcher(a, b)._pick(QueuedJob("1", "x")) is None  # every slot taken: take no job


def test_gpu_jobs_go_to_gpu_nodes_only() -> None:
    cpu, gpu = Worker("cpu", 4, ["jpeg"]), _busy(Worker("gpu", 2, ["jpeg", "gpu"]), 1)
    d = _dispatcher(cpu, gpu)
    assert d._pick(QueuedJob("1", "x", gpu=True)).node_id == "gpu"
    assert d._pick(QueuedJob("1", "x")).node_id == "cpu"
    _busy(gpu, 1)
    assert d._pick(QueuedJob("1", "x", gpu=True)) is None


def test_draining_and_silent_nodes_get_nothing() -> None:
    draining = Worker("d", 4, [], draining=True)
    silent = Worker("s", 4, [], last_seen=time.monotonic() - 10)
    assert _dispatcher(draining, silent)._pick(None) is None
    silent.last_seen = time.monotonic()
    d = _dispatcher(draining, silent)
    assert d._pick(None).node_id == "s"
    d.registry.in_maintenance = {"s"}
    assert d._pick(None) is None
