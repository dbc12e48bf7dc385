"""Replication on a private LocalCluster with two storage nodes (issue 6).

Kill one storage node: files stay reachable (URLs fail over to the other holder), a new
upload is stored on the live node and recorded as under-replicated; restart the node: the
manager's repair loop copies every missing object and clears the debt. The web node's cached
image (the Redis read model) follows: once a node is unhealthy, or listens on another port,
the API and the page name the live holder.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pixelfox.cli.launcher import Counts, LocalCluster, free_port
from pixelfox.grpcx.auth import node_metadata
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc
from tests.conftest import start_local
from tests.jobtools import make_photo
from tests.ops.conftest import FAST_REPAIR_ENV, cli

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO.parent / "shared" / "corpus" / "photos"


@pytest.fixture(scope="module")
def two_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("replicas")
    local = LocalCluster(
        root, Counts(upload=1, proc=1, storage=2, web=1),
        extra_env=dict(FAST_REPAIR_ENV),
    )
    start_local(local)
    try:
        yield local
    finally:
        local.stop()


def put(local: LocalCluster, path: Path) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", "pixelfox", "put", "--json", "--wait", str(path)], cwd=local.root,
                         capture_output=True, text=True, timeout=180, check=False)
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0]["status"] == "ready", res.stdout + res.stderr
    return lines[0]


def urls(img: dict[str, Any]) -> list[str]:
    return [img["stored_original_url"], *(v["url"] for v in img["variants"])]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        return r.read()


def pool_files(local: LocalCluster, node: str) -> dict[str, str]:
    """Object key -> sha256 of every visible object file in ``node``'s pool."""
    root = local.state / "data" / node
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.name.endswith(".meta") and ".tmp-" not in p.name}


def debts(local: LocalCluster) -> list[tuple[str, str, int, int]]:
    with sqlite3.connect(local.state / "pixelfox.db") as db:
        return db.execute("SELECT key, image_id, have, want FROM replica_debts").fetchall()


def last_errors(local: LocalCluster) -> set[str]:
    with sqlite3.connect(local.state / "pixelfox.db") as db:
        return {r[0] for r in db.execute("SELECT last_error FROM replica_debts")}


async def get_image(local: LocalCluster, slug: str) -> common_pb2.Image:
    async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        return await stub.GetImage(manager_pb2.GetImageRequest(slug=slug), metadata=node_metadata(local.secret),
                                   timeout=10)


async def storage_health(local: LocalCluster) -> dict[str, bool]:
    async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        reply = await stub.ListNodes(manager_pb2.ListNodesRequest(), metadata=node_metadata(local.secret), timeout=5)
    return {n.node_id: n.healthy for n in reply.nodes if n.role == common_pb2.NODE_ROLE_STORAGE}


def wait_for(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


async def storage_urls(local: LocalCluster) -> dict[str, str]:
    """Storage node id -> its http address, as registered."""
    async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        reply = await stub.ListNodes(manager_pb2.ListNodesRequest(), metadata=node_metadata(local.secret), timeout=5)
    return {n.node_id: n.http_url.rstrip("/") for n in reply.nodes if n.role == common_pb2.NODE_ROLE_STORAGE}


def web_storage_urls(local: LocalCluster, path: str) -> tuple[str, list[str]]:
    """The web node's answer at ``path`` and every storage object URL in it (the page's ``<img>``s too)."""
    with urllib.request.urlopen(local.web_urls[0] + path, timeout=10) as r:
        assert r.status == 200
        text = html.unescape(r.read().decode())
    return text, sorted(set(re.findall(r"http://[\d.:]+/o/[^\s\"'<>()\[\],]+", text)))


def test_node_down_upload_then_repair_restores_two_replicas(two_storage: LocalCluster) -> None:
    local = two_storage
    first = put(local, PHOTOS / "painting_rgb.png")
    s1, s2 = pool_files(local, "storage1"), pool_files(local, "storage2")
    assert len(s1) == 1 + len(first["variants"]) and s1 == s2  # every object on both nodes, same bytes
    assert debts(local) == []

    local.child("storage2").proc.kill()
    local.child("storage2").proc.wait(10)
    wait_for(lambda: asyncio.run(storage_health(local)) == {"storage1": True, "storage2": False}, 15,
             "the manager to see storage2 down")

    # reads fail over: every URL of the first image now names storage1 and answers
    moved = asyncio.run(get_image(local, first["id"]))
    for url in [moved.original_url, *(v.url for v in moved.variants)]:
        assert "/o/" in url
        body = fetch(url)
        key = url.split("/o/", 1)[1].split("?", 1)[0]
        assert hashlib.sha256(body).hexdigest() == s1[key]

    # a new upload goes to the live node only and is recorded as under-replicated
    second = put(local, PHOTOS / "blackbug_alpha.png")
    for url in urls(second):
        assert fetch(url)
    second_keys = {u.split("/o/", 1)[1].split("?", 1)[0] for u in urls(second)}
    assert second_keys <= set(pool_files(local, "storage1"))
    assert not second_keys & set(pool_files(local, "storage2"))
    wait_for(lambda: {d[0] for d in debts(local)} == second_keys, 20, "the repair pass to record the debts")
    image_ids = {d[1] for d in debts(local)}
    assert len(image_ids) == 1 and "" not in image_ids
    assert all((d[2], d[3]) == (1, 2) for d in debts(local))

    # the node comes back: the repair copies what it missed and the debts are cleared
    local.restart("storage2")
    wait_for(lambda: pool_files(local, "storage2") == pool_files(local, "storage1"), 60,
             "storage2 to receive the missing replicas")
    wait_for(lambda: debts(local) == [], 20, "the debts to be cleared")
    assert second_keys <= set(pool_files(local, "storage2"))


def test_a_debt_no_node_can_take_names_the_pool_and_what_to_do(two_storage: LocalCluster) -> None:
    """With the pool's only other node in maintenance, the debt of a new upload says which pool, how many
    nodes take copies against the replicas wanted, and what to do (it said "no healthy target in the pool")."""
    local = two_storage
    both = {"storage1": True, "storage2": True}
    wait_for(lambda: asyncio.run(storage_health(local)) == both, 30, "both storage nodes healthy")
    res = cli(local.root, "nodes", "maintenance", "storage2")
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        wait_for(lambda: asyncio.run(storage_health(local)) == {"storage1": True, "storage2": False}, 15,
                 "storage2 out of placement")
        img = put(local, PHOTOS / "htc_desire_gps_icc.webp")
        keys = {u.split("/o/", 1)[1].split("?", 1)[0] for u in urls(img)}
        wait_for(lambda: {d[0] for d in debts(local)} == keys, 20, "the repair pass to record the debts")
        said = last_errors(local)
        assert said == {"pool hot: 1 storage node takes copies, 2 replicas wanted (storage2: maintenance): start or "
                        "add a storage node in this pool, or take one out of maintenance "
                        "(`pixelfox nodes maintenance ID --off`)"}, said
    finally:
        res = cli(local.root, "nodes", "maintenance", "storage2", "--off")
        assert res.returncode == 0, res.stdout + res.stderr
    wait_for(lambda: debts(local) == [], 30, "the debts to be cleared once storage2 takes copies")
    assert keys <= set(pool_files(local, "storage2"))


def test_a_debt_whose_only_holder_hangs_says_so(two_storage: LocalCluster) -> None:
    """A key whose only holder is down while another node could take it: the debt names the holder (it said
    "no healthy target in the pool", with storage1 healthy)."""
    local = two_storage
    both = {"storage1": True, "storage2": True}
    wait_for(lambda: asyncio.run(storage_health(local)) == both, 30, "both storage nodes healthy")
    assert cli(local.root, "nodes", "maintenance", "storage1").returncode == 0
    proc = local.child("storage2").proc
    try:
        wait_for(lambda: asyncio.run(storage_health(local)) == {"storage1": False, "storage2": True}, 15,
                 "storage1 out of placement")
        img = put(local, PHOTOS / "rotating_squares_30f.gif")  # on storage2 only
        keys = {u.split("/o/", 1)[1].split("?", 1)[0] for u in urls(img)}
        wait_for(lambda: {d[0] for d in debts(local)} == keys, 20, "the repair pass to record the debts")
        os.kill(proc.pid, signal.SIGSTOP)  # hangs: within lost_after_s its copies count, none can be read
        wait_for(lambda: not asyncio.run(storage_health(local))["storage2"], 15, "storage2 down")
        assert cli(local.root, "nodes", "maintenance", "storage1", "--off").returncode == 0
        wait_for(lambda: last_errors(local) == {"no holder can be read now (storage2: down): start a holder again, "
                                                "the copy follows"}, 20, "the debts to name the holder")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        cli(local.root, "nodes", "maintenance", "storage1", "--off")
    wait_for(lambda: debts(local) == [], 30, "the debts to be cleared once storage2 answers")
    assert keys <= set(pool_files(local, "storage1"))


def test_a_frozen_storage_node_holds_an_upload_up_for_one_connect_timeout(two_storage: LocalCluster,
                                                                         tmp_path: Path) -> None:
    """A SIGSTOPped storage node still completes TCP handshakes (its kernel does), so each write to it
    waited gRPC's 20 s connect timeout, three tries: an upload placed on it took a minute. Now one 5 s
    connect timeout (``CONNECT_TIMEOUT_MS``) and no retry; the upload is ready with the other copy, and
    the repair makes the second once the node answers."""
    local = two_storage
    both = {"storage1": True, "storage2": True}
    wait_for(lambda: asyncio.run(storage_health(local)) == both, 30, "both storage nodes healthy")
    proc = local.child("storage2").proc
    os.kill(proc.pid, signal.SIGSTOP)  # placed on both until the registry misses its heartbeats
    try:
        began = time.monotonic()
        img = put(local, make_photo(tmp_path / "frozen.jpg", 1200, 900, seed=int(time.time())))  # new bytes
        took = time.monotonic() - began
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    print(f"upload with a frozen storage node: {took:.1f} s")
    assert img["status"] == "ready" and took < 40, took  # 60+ s before: three 20 s connect timeouts
    keys = {u.split("/o/", 1)[1].split("?", 1)[0] for u in urls(img)}
    wait_for(lambda: keys <= set(pool_files(local, "storage2")) and keys <= set(pool_files(local, "storage1")),
             60, "both copies after the node thawed")


def test_cached_image_urls_leave_an_unhealthy_or_moved_storage_node(two_storage: LocalCluster) -> None:
    """The read model caches the image with its storage URLs (1 h): a node going unhealthy, or coming
    back on another port, makes the next read name a healthy holder at its current address."""
    local = two_storage
    both = {"storage1": True, "storage2": True}
    wait_for(lambda: asyncio.run(storage_health(local)) == both, 30, "both storage nodes healthy")
    img = put(local, PHOTOS / "samsung_j3_orient6.jpg")
    api = f"/api/v1/images/{img['id']}"
    web_storage_urls(local, api)  # the first read fills the read model
    _, cached = web_storage_urls(local, api)
    served = {u.split("/o/", 1)[1].split("?", 1)[0]: hashlib.sha256(fetch(u)).hexdigest() for u in cached}
    assert len(served) >= 3, cached  # original + variants
    nodes = asyncio.run(storage_urls(local))
    first = next(n for n, base in nodes.items() if cached[0].startswith(base + "/"))
    other = next(n for n in nodes if n != first)

    def names_only(node: str, path: str) -> bool:
        found = web_storage_urls(local, path)[1]
        return bool(found) and all(u.startswith(nodes[node] + "/") for u in found)

    def same_bytes(found: list[str]) -> None:
        for u in found:
            assert hashlib.sha256(fetch(u)).hexdigest() == served[u.split("/o/", 1)[1].split("?", 1)[0]], u

    proc = local.child(first).proc
    os.kill(proc.pid, signal.SIGSTOP)  # hangs: still registered, no heartbeats
    try:
        wait_for(lambda: asyncio.run(storage_health(local)) == {first: False, other: True}, 15,
                 f"the manager to mark {first} unhealthy")
        unhealthy = time.monotonic()
        wait_for(lambda: names_only(other, api), 10, f"the API to name only {other}")
        print(f"URLs named {other} {time.monotonic() - unhealthy:.2f} s after {first} was unhealthy")
        same_bytes(web_storage_urls(local, api)[1])
        page, found = web_storage_urls(local, f"/i/{img['id']}")
        assert found and nodes[first] + "/" not in page, found
        same_bytes(found)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    wait_for(lambda: asyncio.run(storage_health(local)) == both, 15, f"{first} healthy again")

    # the node URLs name comes back on another port: no URL keeps its old address
    named = next(n for n, base in nodes.items() if web_storage_urls(local, api)[1][0].startswith(base + "/"))
    old, port = nodes[named], free_port()
    local.restart(named, env={"PIXELFOX_HTTP__PORT": str(port), "PIXELFOX_HTTP__PUBLIC_URL": f"http://127.0.0.1:{port}"})
    wait_for(lambda: asyncio.run(storage_urls(local))[named] == f"http://127.0.0.1:{port}"
             and asyncio.run(storage_health(local)) == both, 30, f"{named} back on port {port}")
    wait_for(lambda: not any(u.startswith(old + "/") for u in web_storage_urls(local, api)[1]), 5,
             f"the API to stop naming {old}")
    same_bytes(web_storage_urls(local, api)[1])


def test_lost_node_replaced_by_a_new_one_gets_every_copy(tmp_path: Path) -> None:
    """A storage node gone for longer than ``lost_after_s`` no longer counts; a new node receives its copies."""
    local = LocalCluster(
        tmp_path, Counts(upload=1, proc=1, storage=2, web=0),
        extra_env={"PIXELFOX_NODE_TIMEOUT_S": "2", "PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5",
                   "PIXELFOX_REPAIR__INTERVAL_S": "0.5",
                   "PIXELFOX_REPAIR__LOST_AFTER_S": "4"},
    )
    start_local(local)
    try:
        first = put(local, PHOTOS / "painting_rgb.png")
        assert pool_files(local, "storage1") == pool_files(local, "storage2")
        local.child("storage2").proc.kill()
        local.child("storage2").proc.wait(10)
        time.sleep(5)  # past lost_after_s: storage2's copies no longer count
        second = put(local, PHOTOS / "blackbug_alpha.png")  # one live node: factor 1, nothing owed yet
        local.add_storage("storage3")
        want = pool_files(local, "storage1")
        assert len(want) == 2 + len(first["variants"]) + len(second["variants"])
        wait_for(lambda: pool_files(local, "storage3") == want, 60, "storage3 to receive a copy of everything")
        wait_for(lambda: debts(local) == [], 20, "the debts to be cleared")
        for url in urls(asyncio.run(get_image_json(local, second["id"]))):
            assert fetch(url)
    finally:
        local.stop()


async def get_image_json(local: LocalCluster, slug: str) -> dict[str, Any]:
    img = await get_image(local, slug)
    return {"stored_original_url": img.original_url, "variants": [{"url": v.url} for v in img.variants]}
