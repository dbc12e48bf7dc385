"""One node id, one live node: a second node started with the id of a live one is refused.

Two nodes with the same ``PIXELFOX_NODE_ID`` (the web node's default is ``web1``; hand-run deploys on
several hosts easily repeat an id) used to overwrite each other's registry record on every register.
The manager now answers ALREADY_EXISTS while the id's node is live (heartbeat within the node timeout,
not stopped) at another address, or at the same address on another host, and the node exits at start
with that one line. A node started again at its own address, or taking the id of a stopped or dead
node, is taken as before.

Takeover: before it refuses a node at another address, the manager asks the holder's address (a gRPC
health check for the holder's process instance, :mod:`nodes.manager.liveness`); a node that crashed and
came back at a new address takes its id over at once (it used to be refused until the old heartbeat was
the node timeout old: a restart loop under a supervisor). A heartbeat from another process instance than
the record's is refused, so a frozen node whose id was taken over is refused when it resumes.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from nodes.manager.liveness import answers
from nodes.manager.registry import KEY, NodeRecord, Registry
from pixelfox import errors
from pixelfox.cli.launcher import Child, Counts, LocalCluster, free_port
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.grpcx.client import channel
from pixelfox.grpcx.server import GrpcServer
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc
from tests.ops.conftest import admin_key, start_cluster, wait_for

NODE_TIMEOUT_S = 2.0
#: the node timeout of the ``slow`` cluster: a crashed node's record stays live that long, so a node that is
#: taken at once was taken because its old address did not answer
SLOW_TIMEOUT_S = 60.0
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


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("node-ids-slow")
    local = start_cluster(root, Counts(upload=1, proc=0, storage=1, web=0), {
        "PIXELFOX_NODE_TIMEOUT_S": str(SLOW_TIMEOUT_S), "PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5"})
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


@pytest.mark.e2e
def test_a_node_back_at_a_new_address_after_a_crash_takes_its_id_over_at_once(slow: LocalCluster) -> None:
    first = _nodes(slow)["upload1"].grpc_address
    port = free_port()
    addr = f"{slow.host}:{port}"
    started = time.monotonic()
    child = slow.restart("upload1", env={"PIXELFOX_GRPC__PORT": str(port)})  # SIGKILL, then a new gRPC port
    wait_for(lambda: child.proc.poll() is not None
             or ((n := _nodes(slow)["upload1"]).grpc_address == addr and n.healthy), 30)
    took = time.monotonic() - started
    assert child.proc.poll() is None, child.log.read_text()[-2000:]  # the old code refused it: exit 1
    assert addr != first
    assert took < 15.0 < SLOW_TIMEOUT_S, took  # not after the old record's heartbeat timed out
    log = (slow.state / "logs" / "manager1.log").read_text()
    assert f"node upload1 at {addr} (host {socket.gethostname()}) took the id over from the node at {first}, " \
           "which no longer answers" in log
    time.sleep(1.5)  # several heartbeats: it keeps its id
    node = _nodes(slow)["upload1"]
    assert (node.grpc_address, node.healthy, child.proc.poll()) == (addr, True, None)


def _running(local: LocalCluster, name: str) -> Child:
    """Child ``name``, started again (at its own ports) if an earlier test stopped it, once it is healthy."""
    child = local.child(name)
    if child.proc.poll() is not None:
        child = local.restart(name)
    wait_for(lambda: (n := _nodes(local).get(name)) is not None and n.healthy
             and n.status == common_pb2.NODE_STATUS_ACTIVE, 30)
    return child


@pytest.mark.e2e
def test_a_frozen_node_whose_id_was_taken_over_is_refused_when_it_resumes(own: LocalCluster) -> None:
    a = _running(own, "upload1")
    a_addr = _nodes(own)["upload1"].grpc_address
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: _nodes(own)["upload1"].status == common_pb2.NODE_STATUS_INACTIVE, 30)
        b, b_addr = _by_hand(own, "nodes.upload", "upload1")
        wait_for(lambda: b.poll() is not None or ((n := _nodes(own)["upload1"]).grpc_address == b_addr and n.healthy),
                 30)
        assert b.poll() is None, b.communicate(timeout=30)[1][-2000:]
        seen = len(a.log.read_bytes())
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    try:
        try:
            code = a.proc.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail("the resumed node kept heartbeating into its successor's record:\n"
                        + a.log.read_bytes()[seen:].decode(errors="replace")[-2000:])
        out = a.log.read_bytes()[seen:].decode(errors="replace")
        assert code == 1, out
        assert out.strip().splitlines()[-1] == TAKEN.format(id="upload1", at=b_addr), out
        assert "Traceback" not in out, out
        log = (own.state / "logs" / "manager1.log").read_text()
        assert "refused a heartbeat of node upload1 from instance" in log
        assert f"refused node upload1 at {a_addr}" in log
        time.sleep(1.5)  # several of B's heartbeats, and none of A's
        node = _nodes(own)["upload1"]
        assert (node.grpc_address, node.healthy, b.poll()) == (b_addr, True, None)
    finally:
        _stop(b)
    _running(own, "upload1")  # the cluster's own upload1 again, for the tests after this one


async def test_a_heartbeat_from_another_instance_is_refused(redis_url: str) -> None:
    """A record belongs to the process instance that registered it: another instance's heartbeat (or its
    STOPPED last word) is answered "register again" and changes nothing; an older node (no instance) is
    not compared."""
    r = aioredis.from_url(redis_url)
    reg = Registry(r, node_timeout_s=NODE_TIMEOUT_S)

    def upload(instance: str, addr: str = "127.0.0.1:7001") -> NodeRecord:
        return NodeRecord("upload9", common_pb2.NODE_ROLE_UPLOAD, addr, host="h", instance=instance)

    try:
        await reg.register(upload("a"))
        await reg.register(upload("b"))  # started again in place: a new process
        assert not await reg.heartbeat("upload9", 3, 4, 0, common_pb2.NODE_STATUS_ACTIVE, instance="a")
        assert not await reg.heartbeat("upload9", 0, 0, 0, common_pb2.NODE_STATUS_STOPPED, instance="a")
        rec = await reg.get("upload9")
        assert rec is not None
        assert (rec.instance, rec.in_use, rec.status) == ("b", 0, common_pb2.NODE_STATUS_ACTIVE)
        assert await reg.heartbeat("upload9", 3, 4, 0, common_pb2.NODE_STATUS_ACTIVE, instance="b")
        assert await reg.heartbeat("upload9", 2, 4, 0, common_pb2.NODE_STATUS_ACTIVE)  # an older node
        rec = await reg.get("upload9")
        assert rec is not None
        assert (rec.instance, rec.in_use) == ("b", 2)
    finally:
        await r.hdel(KEY, "upload9")
        await r.aclose()


async def test_a_live_holder_elsewhere_is_asked_before_its_id_is_refused(redis_url: str) -> None:
    """With ``alive`` the registry asks the holder's address: an answer keeps the refusal, none hands the
    id over; the same address (another host) and a web node's URL are never asked."""
    asked: list[str] = []
    holder_answers = True

    async def alive(rec: NodeRecord) -> bool:
        asked.append(rec.address)
        return holder_answers

    r = aioredis.from_url(redis_url)
    reg = Registry(r, node_timeout_s=NODE_TIMEOUT_S, alive=alive)

    def upload(addr: str, host: str = "h", instance: str = "") -> NodeRecord:
        return NodeRecord("upload9", common_pb2.NODE_ROLE_UPLOAD, addr, host=host, instance=instance)

    try:
        await reg.register(upload("10.0.0.1:7001", instance="a"))
        with pytest.raises(errors.AlreadyExists, match=re.escape("in use by a live node at 10.0.0.1:7001; ")):
            await reg.register(upload("10.0.0.2:7001", instance="b"))
        assert asked == ["10.0.0.1:7001"]
        with pytest.raises(errors.AlreadyExists, match=re.escape("at 10.0.0.1:7001 on host h; ")):
            await reg.register(upload("10.0.0.1:7001", host="other", instance="b"))
        assert asked == ["10.0.0.1:7001"]  # the same address is not asked
        holder_answers = False
        await reg.register(upload("10.0.0.2:7001", instance="b"))
        rec = await reg.get("upload9")
        assert rec is not None
        assert (rec.grpc_address, rec.instance) == ("10.0.0.2:7001", "b")
        await reg.register(NodeRecord("web9", common_pb2.NODE_ROLE_WEB, "", http_url="http://a"))
        with pytest.raises(errors.AlreadyExists):
            await reg.register(NodeRecord("web9", common_pb2.NODE_ROLE_WEB, "", http_url="http://b"))
        assert asked == ["10.0.0.1:7001", "10.0.0.1:7001"]  # a web node's URL is not asked
    finally:
        await r.hdel(KEY, "upload9", "web9")
        await r.aclose()


async def test_liveness_asks_the_holders_process_instance() -> None:
    """:func:`answers` against a real gRPC server: its own instance and any node (no instance) answer; another
    instance at that address, a closed port and a socket that never answers (a frozen process) do not."""
    server = GrpcServer([], host="127.0.0.1", port=0, secret="s" * 32)
    await server.start()
    await server.announce_instance("abc")
    addr = f"127.0.0.1:{server.port}"

    def rec(instance: str, at: str = addr) -> NodeRecord:
        return NodeRecord("upload9", common_pb2.NODE_ROLE_UPLOAD, at, instance=instance)

    try:
        assert await answers(rec("abc"))
        assert await answers(rec(""))  # an older node: any answer will do
        assert not await answers(rec("zzz"))  # another process serves that address now
    finally:
        await server.stop(0)
    assert not await answers(rec("abc"))  # nothing listens
    with socket.socket() as frozen:  # accepts connections (the kernel does) but never answers
        frozen.bind(("127.0.0.1", 0))
        frozen.listen()
        started = time.monotonic()
        assert not await answers(rec("abc", f"127.0.0.1:{frozen.getsockname()[1]}"))
        assert time.monotonic() - started < 3.0
    assert await answers(NodeRecord("web9", common_pb2.NODE_ROLE_WEB, "", http_url="http://a"))  # not asked
