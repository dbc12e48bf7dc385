"""gRPC health follows dependencies at run time (own local cluster: 1 manager, 1 upload and 1 storage node).

* the manager turns NOT_SERVING when its Redis stops answering (SIGSTOP) and SERVING again
  after SIGCONT;
* an upload node turns NOT_SERVING when no manager answers its heartbeats, and back;
* a node that drains (SIGTERM) reports NOT_SERVING before it goes, DRAINING to the manager at
  once, and STOPPED as its last heartbeat (``pixelfox status`` shows it ``stopped`` even when it
  exits right after).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.grpcx.probe import check
from tests.ops.conftest import cli, start_cluster, status, wait_for
from tests.ops.test_metrics import scrape

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = start_cluster(tmp_path_factory.mktemp("health"), Counts(upload=1, proc=0, storage=1, web=0),
                          {"PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5"})
    try:
        yield local
    finally:
        local.stop()


def health(address: str) -> str:
    try:
        return check(address, "", 1.0)
    except grpc.RpcError as exc:
        return exc.code().name  # type: ignore[attr-defined]


def wait_health(address: str, want: str, timeout_s: float) -> float:
    start = time.monotonic()
    while (got := health(address)) != want:
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{address}: {got}, wanted {want} within {timeout_s} s")
        time.sleep(0.2)
    return time.monotonic() - start


def dependency_up(local: LocalCluster) -> dict[str, float]:
    """``pixelfox_manager_dependency_up`` of manager1, scraped over HTTP: dependency -> value."""
    samples = scrape(local.metrics_url("manager1")).get("pixelfox_manager_dependency_up", [])
    return {labels["dependency"]: value for labels, value in samples}


def test_manager_health_and_gauge_follow_redis(small: LocalCluster) -> None:
    manager = small.manager_address
    assert health(manager) == "SERVING"
    assert dependency_up(small) == {"redis": 1.0, "database": 1.0}
    redis_pid = small.child("redis").proc.pid
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        down = wait_health(manager, "NOT_SERVING", 10)
        # the alert in deploy/prometheus/alerts.yml fires on this gauge: it must drop while Redis hangs
        wait_for(lambda: dependency_up(small).get("redis") == 0.0, 5)
        assert dependency_up(small) == {"redis": 0.0, "database": 1.0}
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    up = wait_health(manager, "SERVING", 10)
    assert down < 6 and up < 6, (down, up)
    wait_for(lambda: dependency_up(small) == {"redis": 1.0, "database": 1.0}, 5)


def test_upload_node_health_follows_the_manager(small: LocalCluster) -> None:
    upload = status(small.root)["upload1"]["address"]
    assert health(upload) == "SERVING"
    pid = small.child("manager1").proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_health(upload, "NOT_SERVING", 10)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_health(upload, "SERVING", 10)


def test_draining_node_reports_not_serving(small: LocalCluster) -> None:
    """A Watch opened before SIGTERM sees SERVING, then NOT_SERVING while the node drains. (Polling Check
    raced an idle node that drains in milliseconds: on a loaded CI box the one Check that got in was
    CANCELLED by the server's stop.)"""
    upload = status(small.root)["upload1"]["address"]
    child = small.child("upload1")
    seen: list[str] = []
    with grpc.insecure_channel(upload) as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        try:
            for reply in watch:
                seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
                if seen == ["SERVING"]:
                    child.proc.send_signal(signal.SIGTERM)
                elif reply.status != health_pb2.HealthCheckResponse.SERVING:
                    break  # a watcher that stayed would hold the node for its grace period
        except grpc.RpcError as exc:
            seen.append(exc.code().name)  # type: ignore[attr-defined]
        finally:
            watch.cancel()
    assert seen[:2] == ["SERVING", "NOT_SERVING"], seen
    assert child.proc.wait(15) == 0
    assert health(upload) == "UNAVAILABLE"


@pytest.mark.parametrize("command", ["status", "jobs"])
def test_commands_name_redis_when_the_manager_cannot_reach_it(small: LocalCluster, command: str) -> None:
    redis_pid = small.child("redis").proc.pid
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        res = cli(small.root, command, timeout=60)
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)  # the cluster's fault: was 2, as bad input
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "the manager cannot reach Redis" in lines[0] and "(unavailable)" in lines[0], lines
    assert cli(small.root, command, timeout=60).returncode in (0, 1)  # Redis back: answers again


@pytest.fixture(scope="module")
def slow_beats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Heartbeats every 10 s (node timeout 30 s): a DRAINING or STOPPED heartbeat that waited for the next
    interval would come long after an idle node exited."""
    local = start_cluster(tmp_path_factory.mktemp("slowbeats"), Counts(upload=1, proc=1, storage=1, web=0),
                          {"PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S": "10", "PIXELFOX_NODE_TIMEOUT_S": "30"})
    try:
        yield local
    finally:
        local.stop()


def test_sigterm_shows_the_node_stopped_at_once(slow_beats: LocalCluster) -> None:
    rows = status(slow_beats.root)
    assert rows["upload1"]["status"] == "active" and rows["proc1"]["status"] == "active", rows
    children = [slow_beats.child(n) for n in ("upload1", "proc1")]
    start = time.monotonic()
    for c in children:
        c.proc.send_signal(signal.SIGTERM)
    # an idle node exits in well under a second; the bound is its worst case (DRAINING answer 2 s, the
    # processing node's Work stream grace_s + 1 = 11 s, STOPPED answer 2 s) with room for a loaded box
    deadline = start + 40
    while any(c.proc.poll() is None for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [c for c in children if c.proc.poll() is None]
    assert not alive, "still running 40 s after SIGTERM:" + "".join(
        f"\n--- {c.name}, last lines of {c.log}:\n" + "\n".join(c.log.read_text().splitlines()[-30:]) for c in alive)
    exited = time.monotonic() - start
    assert [c.proc.returncode for c in children] == [0, 0]
    rows = status(slow_beats.root)
    # at first both stayed "active" until the node timeout, then turned "inactive"; then "draining" until
    # the timeout, then "inactive" (a failure for `pixelfox status`) until forgotten an hour later
    assert rows["upload1"]["status"] == "stopped" and rows["proc1"]["status"] == "stopped", rows
    # and not ready: a script reading `ready` used to trust them (it kept their last heartbeat's word)
    assert (rows["upload1"]["ready"], rows["proc1"]["ready"]) == (False, False), rows
    # a stopped node is not a failure, but with the only upload and processing nodes stopped no node takes
    # that work: `status` warns and exits 1 for that (and only that)
    res = cli(slow_beats.root, "status")
    assert res.returncode == 1, res.stdout
    assert res.stderr.splitlines() == [
        "warning: no upload node takes new uploads (upload1: stopped): uploads are refused",
        "warning: no processing node takes jobs (proc1: stopped): new images wait unprocessed"], res.stderr
    print(f"idle upload and proc nodes exited {exited:.2f} s after SIGTERM, shown stopped")
