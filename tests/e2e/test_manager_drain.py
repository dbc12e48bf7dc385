"""A manager's SIGTERM and restart with processing nodes connected, through a real cluster of its own.

One module-scoped LocalCluster (1 upload, 2 proc, 1 storage, no web); every job sleeps 3 s on its
processing node (failpoint), so a job is surely in flight when the manager is stopped. The manager
keeps the default gRPC grace period (10 s), which it used to wait out in full whenever a processing
node's ``Work`` stream was open, that is always.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pixelfox.cli.launcher import Counts, LocalCluster
from tests.jobtools import log_text, make_photo, put_retrying, start_cluster, variant_set_ok, wait_final, wait_log

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PROC_ENV = {"PIXELFOX_FAILPOINT": "before-process=sleep(3000)"}


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, str]]:
    root = tmp_path_factory.mktemp("drain")
    local, key = start_cluster(root, Counts(upload=1, proc=2, storage=1, web=0), {"proc": dict(PROC_ENV)})
    try:
        yield local, key
    finally:
        local.stop(10)


RESTART_MARK = "--- test: manager1 started again ---"


def _restart_manager(local: LocalCluster) -> None:
    """Start the stopped manager again, marking its log first (a processing node may connect before the
    manager logs that it serves: its port is open while it checks its database)."""
    with local.child("manager1").log.open("a") as log:
        log.write(f"{RESTART_MARK}\n")
    local.restart("manager1")


def _streams_open(local: LocalCluster) -> None:
    """Wait until both processing nodes hold a Work stream to the running manager (logged since it started)."""
    after = max(0, log_text(local, "manager1").rfind(RESTART_MARK))
    for name in ("proc1", "proc2"):
        wait_log(local, "manager1", rf"processing node {name} connected", after=after)


def _stop_manager(local: LocalCluster) -> float:
    """SIGTERM the manager; seconds until its process exited."""
    proc = local.child("manager1").proc
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return time.monotonic() - t0


async def _serving_at(address: str, timeout_s: float = 60.0) -> float:
    """Ask the manager's gRPC health every 10 ms, each time on a new channel (a channel's reconnect back-off
    would see the manager late); the monotonic time it first answered SERVING."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with grpc.aio.insecure_channel(address) as ch:
            try:
                reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""),
                                                                   timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic()
            except grpc.aio.AioRpcError:
                pass
        await asyncio.sleep(0.01)
    raise AssertionError(f"manager not SERVING after {timeout_s} s")


def _start_manager(local: LocalCluster) -> None:
    _restart_manager(local)
    asyncio.run(local.wait_ready(120))


def test_idle_manager_ends_the_work_streams_and_exits_at_once(mc: tuple[LocalCluster, str]) -> None:
    local, _ = mc
    _streams_open(local)
    took = _stop_manager(local)
    print(f"idle manager, 2 processing nodes connected: SIGTERM -> exit {took:.2f} s (grace 10 s)")
    assert took < 3.0  # it waited out its 10 s grace for the open streams
    assert "ending the work stream of proc1: this manager drains" in log_text(local, "manager1")
    _start_manager(local)


def test_job_in_flight_during_the_stop_is_completed(mc: tuple[LocalCluster, str], tmp_path: Path) -> None:
    local, key = mc
    off = len(log_text(local, "manager1"))
    _streams_open(local)
    put = put_retrying(local.root, make_photo(tmp_path / "inflight.jpg", 320, 240, seed=61))
    assert put["status"] == "processing", put
    m = wait_log(local, "manager1", r"dispatch: job (\S+) image (\S+) .*-> (proc\d)", after=off)
    took = _stop_manager(local)
    text = log_text(local, "manager1")[off:]
    print(f"manager with a 3 s job in flight: SIGTERM -> exit {took:.2f} s (grace 10 s)")
    assert f"image {m.group(2)} ready" in text, text  # recorded by this manager within its grace
    assert f"interrupted: job {m.group(1)}" not in text
    assert took < 9.5  # the job's 3 s (and its encoding), not the whole 10 s grace after it
    _start_manager(local)
    img = wait_final(local, key, put["id"], 120)
    assert img["status"] == "ready", img
    assert variant_set_ok(img)


def test_processing_nodes_take_a_restarted_manager_back_at_once(mc: tuple[LocalCluster, str]) -> None:
    """Three times: the manager is down 6.3 s, then started again; both processing nodes hold a Work
    stream to it within 2 s of its SERVING every time. Their back-off (0.2 s doubling to 5 s) tried
    every 5 s by then: 0-5 s after the new manager served, depending on where it fell."""
    local, _ = mc
    _streams_open(local)
    gaps = []
    for _ in range(3):
        _stop_manager(local)
        time.sleep(6.3)
        _restart_manager(local)
        serving = asyncio.run(_serving_at(local.manager_address))
        _streams_open(local)
        gaps.append(time.monotonic() - serving)  # about 0 when the streams opened before it said SERVING
    print("manager SERVING -> both processing nodes' Work streams open: " + ", ".join(f"{g:.2f} s" for g in gaps))
    assert max(gaps) < 2.0
    for name in ("proc1", "proc2"):  # each broken stream's request feeder ended, none left to the collector
        noise = [x for x in log_text(local, name).splitlines()
                 if "Task was destroyed" in x or "never retrieved" in x or "aclose()" in x]
        assert noise == [], noise[:4]
    asyncio.run(local.wait_ready(120))
