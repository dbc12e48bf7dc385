"""One node id, one live node: a second node started with the id of a live one is refused.

Two nodes with the same ``PIXELFOX_NODE_ID`` (the web node's default is ``web1``; hand-run deploys on
several hosts easily repeat an id) used to overwrite each other's registry record on every register.
The manager now answers ALREADY_EXISTS while the id's node is live (heartbeat within the node timeout,
not stopped) at another address, or at the same address on another host, and the node exits at start
with that one line. A node started again at its own address, or taking the id of a stopped or dead
node, is taken as before.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from nodes.manager.registry import KEY, NodeRecord, Registry
from pixelfox import errors
from pixelfox.cli.launcher import Counts, LocalCluster, free_port
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.grpcx.client import channel
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc
from tests.ops.conftest import admin_key, start_cluster, wait_for

NODE_TIMEOUT_S = 2.0
TAKEN = "manager refused registration: node id {id} is already in use by a live node at {at}; give this node " \
        "its own PIXELFOX_NODE_ID"


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("node-ids")
    local = start_cluster(root, Counts(upload=1, proc=1, storage=1, web=1), {
        "PIXELFOX_NODE_TIMEOUT_S": str(NODE_TIMEOUT_S), "PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5"})
    try:
        yield local
    finally:
        local.stop()


def _nodes(local: LocalCluster) -> dict[str, common_pb2.Node]:
    """The manager's registry now: node id -> node."""
    async def ask() -> dict[str, common_pb2.Node]:
        async with channel(local.manager_address) as ch:
            reply = await manager_pb2_grpc.ManagerServiceStub(ch).ListNodes(
                manager_pb2.ListNodesRequest(), metadata=api_key_metadata(admin_key(local)), timeout=10)
        return {n.node_id: n for n in reply.nodes}

    return asyncio.run(ask())


def _by_hand(local: LocalCluster, module: str, node_id: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m module`` (nodes.upload or web) as ``node_id`` on fresh ports, as an operator would on
    another host with the same settings; returns the process and its address (gRPC, or a web node's URL)."""
    grpc_port, http_port = free_port(), free_port()
    url = f"http://{local.host}:{http_port}"
    env = local._env(node_id, PIXELFOX_GRPC__PORT=str(grpc_port), PIXELFOX_METRICS_PORT="-1",
                     PIXELFOX_REDIS__URL=local.redis_url, PIXELFOX_STAGING_DIR=str(local.state / "data" / "staging"),
                     PIXELFOX_HTTP__HOST=local.host, PIXELFOX_HTTP__PORT=str(http_port), PIXELFOX_HTTP__PUBLIC_URL=url)
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=local.root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, url if module == "web" else f"{local.host}:{grpc_port}"


def _refused(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Exit status and stderr of a node that should exit at start; fails if it still runs after 30 s."""
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
        pytest.fail(f"a second node with a live node's id was not refused; it ran:\n{err[-2000:]}")
    return proc.returncode, err


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.communicate(timeout=30)


@pytest.mark.e2e
def test_a_second_upload_node_with_a_live_nodes_id_exits_with_one_line(own: LocalCluster) -> None:
    first = _nodes(own)["upload1"].grpc_address
    proc, addr = _by_hand(own, "nodes.upload", "upload1")
    code, err = _refused(proc)
    assert code == 1, err
    assert err.strip().splitlines()[-1] == TAKEN.format(id="upload1", at=first), err
    assert "Traceback" not in err, err
    assert f"refused node upload1 at {addr}" in (own.state / "logs" / "manager1.log").read_text()
    node = _nodes(own)["upload1"]  # the live node keeps its record
    assert (node.grpc_address, node.healthy) == (first, True)


@pytest.mark.e2e
def test_a_second_web_node_with_the_default_id_is_refused(own: LocalCluster) -> None:
    first = _nodes(own)["web1"].http_url
    proc, _url = _by_hand(own, "web", "web1")
    code, err = _refused(proc)
    assert code == 1, err
    assert err.strip().splitlines()[-1] == TAKEN.format(id="web1", at=first), err
    assert _nodes(own)["web1"].http_url == first


@pytest.mark.e2e
def test_a_node_started_again_at_its_address_keeps_its_id(own: LocalCluster) -> None:
    first = _nodes(own)["upload1"]
    registered = "registered with the manager as upload1"
    child = own.restart("upload1")  # SIGKILL: its record is still live when it registers again
    wait_for(lambda: child.log.read_text().count(registered) == 2 or child.proc.poll() is not None, 60)
    assert child.proc.poll() is None, child.log.read_text()[-2000:]
    wait_for(lambda: _nodes(own)["upload1"].healthy, 30)
    assert _nodes(own)["upload1"].grpc_address == first.grpc_address
    time.sleep(1.0)
    assert child.proc.poll() is None, child.log.read_text()[-2000:]


@pytest.mark.e2e
def test_the_id_of_a_stopped_or_dead_node_can_be_taken(own: LocalCluster) -> None:
    own.terminate("upload1")  # SIGTERM: it says STOPPED last
    assert _nodes(own)["upload1"].status == common_pb2.NODE_STATUS_STOPPED
    taker, addr = _by_hand(own, "nodes.upload", "upload1")
    try:
        wait_for(lambda: (n := _nodes(own)["upload1"]).grpc_address == addr and n.healthy, 30)
        taker.send_signal(signal.SIGKILL)  # dies without a word: dead once its heartbeat is NODE_TIMEOUT_S old
        taker.communicate(timeout=30)
        wait_for(lambda: _nodes(own)["upload1"].status == common_pb2.NODE_STATUS_INACTIVE, 30)
        again, addr = _by_hand(own, "nodes.upload", "upload1")
        try:
            wait_for(lambda: (n := _nodes(own)["upload1"]).grpc_address == addr and n.healthy, 30)
            assert again.poll() is None
        finally:
            _stop(again)
    finally:
        _stop(taker)


async def test_same_address_on_another_host_is_another_node(redis_url: str) -> None:
    """Web nodes behind a proxy often share one public URL (or the default http://0.0.0.0:8080 on every
    host): the host name tells them apart, and a node started again on its own host is taken."""
    r = aioredis.from_url(redis_url)
    reg = Registry(r, node_timeout_s=NODE_TIMEOUT_S)

    def web(host: str) -> NodeRecord:
        return NodeRecord("web9", common_pb2.NODE_ROLE_WEB, "", http_url="http://0.0.0.0:8080", host=host)

    try:
        await reg.register(web("host-a"))
        with pytest.raises(errors.AlreadyExists) as exc:
            await reg.register(web("host-b"))
        assert str(exc.value) == ("node id web9 is already in use by a live node at http://0.0.0.0:8080 on host "
                                  "host-a; give this node its own PIXELFOX_NODE_ID")
        await reg.register(web("host-a"))  # started again where it ran
        await reg.register(NodeRecord("web9", common_pb2.NODE_ROLE_WEB, "", http_url="http://0.0.0.0:8080"))
        assert (await reg.get("web9")).host == ""  # type: ignore[union-attr]  # an older node: the address decides
        await reg.leave("web9")
        await reg.register(web("host-b"))  # the id of a stopped node
        assert (await reg.get("web9")).host == "host-b"  # type: ignore[union-attr]
    finally:
        await r.hdel(KEY, "web9")
        await r.aclose()
