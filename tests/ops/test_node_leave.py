"""Nodes leaving the cluster: a clean stop, a node that died for good, and what the operator sees.

* a node stopped with SIGTERM says STOPPED as its last heartbeat: ``pixelfox status`` shows it
  ``stopped`` and exits 0 (it used to show ``inactive`` and exit 1 for an hour), and it comes back
  ``active`` when started again;
* a manager stopped with SIGTERM marks itself ``stopped`` the same way;
* ``pixelfox nodes forget`` drops a node that died (SIGKILL) and refuses one that still heartbeats;
* the registry sweep drops stopped nodes (a storage node once its copies no longer count);
* the admin page shows a node in maintenance as ``maintenance``, not ``down``;
* the admin page's free space counts a disk shared by two pools once.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from nodes.manager.registry import MAINTENANCE_KEY, NodeRecord, Registry
from pixelfox import errors
from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.grpcx.client import channel
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc
from tests.e2e.test_web import PASSWORD, Browser
from tests.ops.conftest import admin_key, cli, healthy, start_cluster, status, wait_for

NODE_TIMEOUT_S = 2.0
e2e = pytest.mark.e2e


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("leave")
    local = start_cluster(root, Counts(upload=1, proc=2, storage=2, web=1, managers=2), {
        "PIXELFOX_NODE_TIMEOUT_S": str(NODE_TIMEOUT_S), "PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5"})
    try:
        yield local
    finally:
        local.stop()


async def test_sweep_drops_stopped_nodes_and_keeps_a_stopped_storage_node_while_its_copies_count(
        redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    reg = Registry(r, node_timeout_s=NODE_TIMEOUT_S)
    try:
        for rec in (NodeRecord("proc9", common_pb2.NODE_ROLE_PROC, "127.0.0.1:1"),
                    NodeRecord("storage9", common_pb2.NODE_ROLE_STORAGE, "127.0.0.1:2"),
                    NodeRecord("upload9", common_pb2.NODE_ROLE_UPLOAD, "127.0.0.1:3")):
            await reg.upsert(rec)
        await reg.set_maintenance("proc9", True)
        assert await reg.leave("proc9") and await reg.leave("storage9")
        assert not await reg.leave("nobody")
        # a heartbeat sent before the node's last word and answered after it does not bring it back
        assert not await reg.heartbeat("proc9", 0, 1, 0, common_pb2.NODE_STATUS_DRAINING)
        proc9 = await reg.get("proc9")
        assert proc9 is not None and reg.status(proc9) == common_pb2.NODE_STATUS_STOPPED and not reg.healthy(proc9)

        assert await reg.sweep(3600.0, keep_stopped_storage_s=600.0) == ["proc9"]
        assert await r.sismember(MAINTENANCE_KEY, "proc9")  # kept for the node's next start
        assert [n.node_id for n in await reg.all()] == ["upload9", "storage9"]
        assert await reg.sweep(3600.0, keep_stopped_storage_s=0.0) == ["storage9"]
        assert await reg.sweep(0.0, keep_stopped_storage_s=0.0) == ["upload9"]  # silent past forget_after_s
        assert await reg.all() == []
    finally:
        await r.aclose()


async def test_a_node_that_speaks_while_the_sweep_looks_keeps_its_record(redis_url: str) -> None:
    """The sweep reads the registry, then drops what it judged stale: a heartbeat (or a new registration)
    landing between the two used to be deleted with the stale record, so a live node vanished until its
    next heartbeat (and a node in maintenance left it). Driven step by step: read, the node speaks, drop."""
    r = aioredis.from_url(redis_url)
    reg = Registry(r, node_timeout_s=NODE_TIMEOUT_S)
    try:
        for rec in (NodeRecord("proc8", common_pb2.NODE_ROLE_PROC, "127.0.0.1:1"),
                    NodeRecord("upload8", common_pb2.NODE_ROLE_UPLOAD, "127.0.0.1:2")):
            await reg.upsert(rec)
        await reg.set_maintenance("proc8", True)
        assert await reg.leave("upload8")
        stale = await reg.stale(0.0, keep_stopped_storage_s=0.0)  # forget_after_s 0: every node is silent
        assert sorted((s.rec.node_id, s.silent) for s in stale) == [("proc8", True), ("upload8", True)]
        assert await reg.heartbeat("proc8", 1, 4, 0, common_pb2.NODE_STATUS_ACTIVE)  # proc8 speaks now
        await reg.upsert(NodeRecord("upload8", common_pb2.NODE_ROLE_UPLOAD, "127.0.0.1:2"))  # started again
        assert [await reg.drop(s) for s in stale] == [False, False]
        nodes = {n.node_id: n for n in await reg.all()}
        assert sorted(nodes) == ["proc8", "upload8"] and nodes["proc8"].in_use == 1
        assert nodes["proc8"].maintenance and reg.status(nodes["upload8"]) == common_pb2.NODE_STATUS_ACTIVE
        assert sorted(await reg.sweep(0.0, keep_stopped_storage_s=0.0)) == ["proc8", "upload8"]  # nobody spoke
        assert await reg.all() == [] and not await r.sismember(MAINTENANCE_KEY, "proc8")
    finally:
        await r.aclose()


async def test_a_node_that_registers_while_an_admin_forgets_it_keeps_its_record(redis_url: str) -> None:
    """``forget`` read the record, then deleted it unconditionally: a node started again between the two
    lost its record (and its maintenance mark) until its next heartbeat. It now deletes with the sweep's
    compare (``_DROP``) and says Conflict. Driven step by step: read, the node registers, drop."""
    r = aioredis.from_url(redis_url)
    reg = Registry(r, node_timeout_s=NODE_TIMEOUT_S)
    proc7 = NodeRecord("proc7", common_pb2.NODE_ROLE_PROC, "127.0.0.1:1")
    try:
        await reg.upsert(proc7)
        await reg.set_maintenance("proc7", True)
        assert await reg.leave("proc7")  # stopped: an admin may forget it
        rec, raw = await reg.forgettable("proc7")
        assert rec is not None and reg.status(rec) == common_pb2.NODE_STATUS_STOPPED
        await reg.upsert(NodeRecord("proc7", common_pb2.NODE_ROLE_PROC, "127.0.0.1:1"))  # it starts again
        with pytest.raises(errors.Conflict, match="registered again"):
            await reg.drop_forgotten("proc7", rec, raw)
        kept = await reg.get("proc7")
        assert kept is not None and kept.status == common_pb2.NODE_STATUS_ACTIVE and kept.maintenance
        # a node only in maintenance (no record): one that registers meanwhile keeps its record too
        await r.sadd(MAINTENANCE_KEY, "upload7")
        assert await reg.forgettable("upload7") == (None, b"")
        await reg.upsert(NodeRecord("upload7", common_pb2.NODE_ROLE_UPLOAD, "127.0.0.1:2"))
        with pytest.raises(errors.Conflict):
            await reg.drop_forgotten("upload7", None, b"")
        assert [n.node_id for n in await reg.all()] == ["upload7", "proc7"]
        # nobody speaks: forget drops the record and the maintenance mark
        assert await reg.leave("proc7") and await reg.leave("upload7")
        assert [(await reg.forget(n)).node_id for n in ("proc7", "upload7")] == ["proc7", "upload7"]  # type: ignore[union-attr]
        assert await reg.all() == [] and not await r.sismember(MAINTENANCE_KEY, "proc7")
        await r.sadd(MAINTENANCE_KEY, "gone7")
        assert await reg.forget("gone7") is None and not await r.sismember(MAINTENANCE_KEY, "gone7")
    finally:
        await r.aclose()


@e2e
def test_a_node_stopped_cleanly_shows_stopped_and_is_no_failure(own: LocalCluster) -> None:
    own.child("proc2").proc.send_signal(signal.SIGTERM)
    assert own.child("proc2").proc.wait(30) == 0
    assert status(own.root)["proc2"]["status"] == "stopped"
    wait_for(lambda: status(own.root)["proc2"]["last_heartbeat_age_s"] > NODE_TIMEOUT_S, timeout_s=15)
    rows = status(own.root)
    assert rows["proc2"]["status"] == "stopped", rows["proc2"]  # it used to turn "inactive" (exit 1) for an hour
    res = cli(own.root, "status")
    assert res.returncode == 0 and "stopped" in res.stdout, res.stdout + res.stderr
    # started again, it registers again and is active
    own.restart("proc2", sig=signal.SIGTERM)
    wait_for(lambda: healthy(own, "proc2"), timeout_s=30)
    assert status(own.root)["proc2"]["status"] == "active"


@e2e
def test_nodes_forget_drops_a_dead_node_and_refuses_a_live_one(own: LocalCluster) -> None:
    refused = cli(own.root, "nodes", "forget", "proc2")
    assert refused.returncode == 2, refused.stdout
    assert refused.stderr.startswith("pixelfox: node 'proc2' still heartbeats (last "), refused.stderr
    assert "`pixelfox nodes maintenance proc2` (conflict)" in refused.stderr, refused.stderr
    assert status(own.root)["proc2"]["status"] == "active"
    # in maintenance already, it was still told to put the node in maintenance
    assert cli(own.root, "nodes", "maintenance", "proc2").returncode == 0
    held = cli(own.root, "nodes", "forget", "proc2")
    assert held.returncode == 2 and held.stderr.rstrip().endswith(
        "it is in maintenance already (no new work); stop its process, then forget it (conflict)"), held.stderr
    assert cli(own.root, "nodes", "maintenance", "proc2", "--off").returncode == 0
    assert status(own.root)["proc2"]["status"] == "active"
    unknown = cli(own.root, "nodes", "forget", "nope")
    assert unknown.returncode != 0 and "no node 'nope' in the registry (not-found)" in unknown.stderr, unknown.stderr
    # an id in another case, or a near miss, is refused with the id it most likely meant (it said only "no node")
    for given, says in (("PROC2", "did you mean 'proc2'? (node ids are case-sensitive)"),
                        ("proc-2", "did you mean 'proc2'?")):
        for args in (("nodes", "forget", given), ("nodes", "maintenance", given)):
            miss = cli(own.root, *args)
            assert miss.returncode != 0, miss.stdout
            assert f"no node '{given}' in the registry; {says} (not-found)" in miss.stderr, (args, miss.stderr)
    assert status(own.root)["proc2"]["status"] == "active"

    own.child("proc2").proc.send_signal(signal.SIGKILL)  # died: no last word
    own.child("proc2").proc.wait(10)
    wait_for(lambda: status(own.root)["proc2"]["status"] == "inactive", timeout_s=NODE_TIMEOUT_S + 10)
    assert cli(own.root, "status").returncode == 1
    res = cli(own.root, "nodes", "forget", "proc2")
    assert res.returncode == 0 and "proc2: forgotten" in res.stdout, res.stdout + res.stderr
    assert "proc2" not in status(own.root)
    assert cli(own.root, "status").returncode == 0


async def _overview(local: LocalCluster) -> manager_pb2.AdminOverviewResponse:
    async with channel(local.manager_address) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        return await stub.AdminOverview(manager_pb2.AdminOverviewRequest(),
                                        metadata=api_key_metadata(admin_key(local)), timeout=10)


@e2e
def test_free_space_of_two_pools_on_one_disk_counts_once(own: LocalCluster) -> None:
    """Both storage nodes of ``pixelfox up`` keep their pools in the cluster folder, on one disk: the
    overview used to add its free space twice."""
    o = asyncio.run(_overview(own))
    stores = [n for n in o.nodes if n.role == common_pb2.NODE_ROLE_STORAGE and n.healthy]
    disk = shutil.disk_usage(own.root).free
    assert len(stores) == 2 and abs(o.storage_free_bytes - disk) < disk * 0.05, (o.storage_free_bytes, disk)
    assert len({c for n in stores for c in n.capabilities if c.startswith("fs:")}) == 1


async def _admin_page(base: str, name: str) -> str:
    """``/admin`` as admin user ``name`` (logged in through the web node at ``base``)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        admin = Browser(http, base)
        await admin.login(name)
        code, html, _ = await admin.get("/admin")
    assert code == 200, html
    return html


@e2e
def test_admin_page_shows_a_node_in_maintenance_as_maintenance(own: LocalCluster) -> None:
    name = "leave_admin"
    made = subprocess.run([sys.executable, "-m", "pixelfox", "users", "create", name, "--admin", "--password-stdin"],
                          cwd=own.root, input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    assert cli(own.root, "nodes", "maintenance", "proc1").returncode == 0
    try:
        html = asyncio.run(_admin_page(own.web_urls[0], name))
        row = re.search(r"<tr><td>proc1</td>.*?</tr>", html, re.S)
        assert row, html
        # the status and the health column both say maintenance (the health cell said "down")
        assert row.group(0).count(">maintenance<") == 2 and "down" not in row.group(0), row.group(0)
    finally:
        assert cli(own.root, "nodes", "maintenance", "proc1", "--off").returncode == 0


@e2e
def test_a_manager_stopped_cleanly_shows_stopped_and_is_no_failure(own: LocalCluster) -> None:
    """Runs last: it stops one of the two managers."""
    own.child("manager2").proc.send_signal(signal.SIGTERM)
    assert own.child("manager2").proc.wait(30) == 0
    wait_for(lambda: status(own.root)["manager2"]["last_heartbeat_age_s"] > NODE_TIMEOUT_S, timeout_s=15)
    rows = status(own.root)
    assert rows["manager2"]["status"] == "stopped" and rows["manager1"]["health"] == "healthy", rows
    res = cli(own.root, "status")
    assert res.returncode == 0, res.stdout + res.stderr  # a manager stopped on purpose is no manager down
