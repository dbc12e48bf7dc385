"""Tier moves on a private LocalCluster: storage1 is pool ``hot``, storage2 pool ``warm`` (issue 6).

New uploads land in the hot pool only; ``pixelfox tiers move --dry-run`` lists what is due
and changes nothing; ``pixelfox tiers move`` copies every object to the warm node, verifies
it there, then removes the hot copies, and the image's URLs follow to the warm node.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.grpcx.auth import node_metadata
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.conftest import start_local

pytestmark = pytest.mark.e2e

PHOTOS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "photos"


def cli(local: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pixelfox", *args], cwd=local.root, capture_output=True, text=True,
                          timeout=180, check=False)


async def capabilities(local: LocalCluster) -> dict[str, list[str]]:
    async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        reply = await stub.ListNodes(manager_pb2.ListNodesRequest(), metadata=node_metadata(local.secret), timeout=5)
    return {n.node_id: list(n.capabilities) for n in reply.nodes if n.healthy}


@pytest.fixture(scope="module")
def tiered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("tiers"), Counts(upload=1, proc=1, storage=2, web=0),
                         extra_env={"PIXELFOX_NODE_TIMEOUT_S": "2", "PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5",
                                    "PIXELFOX_REPAIR__INTERVAL_S": "0.5"})

    def warm_storage2(local: LocalCluster) -> None:
        local.restart("storage2", env={"PIXELFOX_POOL": "warm"})
        deadline = time.monotonic() + 30
        while "pool:warm" not in asyncio.run(capabilities(local)).get("storage2", []):
            assert time.monotonic() < deadline, "storage2 did not come back as pool warm"
            time.sleep(0.25)

    start_local(local, then=warm_storage2)
    try:
        yield local
    finally:
        local.stop()


async def http_urls(local: LocalCluster) -> dict[str, str]:
    async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        reply = await stub.ListNodes(manager_pb2.ListNodesRequest(), metadata=node_metadata(local.secret), timeout=5)
    return {n.node_id: n.http_url.rstrip("/") for n in reply.nodes}


def objects(local: LocalCluster, node: str) -> dict[str, str]:
    root = local.state / "data" / node
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.name.endswith(".meta") and ".tmp-" not in p.name}


def urls(img: dict[str, Any]) -> list[str]:
    return [img["stored_original_url"], *(v["url"] for v in img["variants"])]


def test_uploads_land_hot_then_move_to_warm_verified(tiered: LocalCluster) -> None:
    local = tiered
    res = cli(local, "put", "--json", "--wait", str(PHOTOS / "painting_rgb.png"))
    img = json.loads(res.stdout.splitlines()[0])
    assert img["status"] == "ready", res.stdout + res.stderr
    hot = objects(local, "storage1")
    assert len(hot) == 1 + len(img["variants"])
    assert objects(local, "storage2") == {}  # the warm pool takes no new uploads

    # not due under the default rules (30 days old, 14 unseen)
    res = cli(local, "tiers", "move", "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["moves"] == []

    res = cli(local, "tiers", "move", "--dry-run", "--json", "--older-than", "0", "--idle", "0")
    plan = json.loads(res.stdout)
    assert [(m["slug"], m["src"], m["dst"], m["done"]) for m in plan["moves"]] == [(img["id"], "hot", "warm", False)]
    assert objects(local, "storage1") == hot and objects(local, "storage2") == {}  # a dry run changes nothing

    res = cli(local, "tiers", "move", "--json", "--older-than", "0", "--idle", "0")
    assert res.returncode == 0, res.stdout + res.stderr
    done = json.loads(res.stdout)["moves"]
    assert [(m["slug"], m["done"], m["keys"]) for m in done] == [(img["id"], True, len(hot))]
    assert objects(local, "storage2") == hot  # every object, same bytes
    assert objects(local, "storage1") == {}  # the hot copies are gone only after that

    res = cli(local, "tiers", "move", "--json", "--older-than", "0", "--idle", "0", "--dry-run")
    again = json.loads(res.stdout)
    assert again["moves"] == []  # already warm, and there is no cold node: said, not "nothing to move"
    assert again["skipped"] == "1 image(s) due for cold, but no healthy storage node serves pool 'cold'", again
    assert again["unserved"] == {"cold": 1}
    for bad in (["--older-than", "-1"], ["--idle", "inf"], ["--limit", "-5"]):
        res = cli(local, "tiers", "move", "--dry-run", *bad)
        assert res.returncode == 2 and ("out of range" in res.stderr or "not a" in res.stderr), res.stderr
    warm_http = asyncio.run(http_urls(local))["storage2"]
    for url in urls(img):
        key = url.split("/o/", 1)[1].split("?", 1)[0]
        fresh = _image_url(local, img["id"], key)
        assert fresh.startswith(warm_http + "/o/")  # the URL follows the object to the warm node
        with urllib.request.urlopen(fresh, timeout=10) as r:
            assert hashlib.sha256(r.read()).hexdigest() == hot[key]


def _image_url(local: LocalCluster, slug: str, key: str) -> str:
    async def get() -> list[str]:
        async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
            stub = manager_pb2_grpc.ManagerServiceStub(ch)
            image = await stub.GetImage(manager_pb2.GetImageRequest(slug=slug), metadata=node_metadata(local.secret),
                                        timeout=10)
        return [image.original_url, *(v.url for v in image.variants)]

    found = [u for u in asyncio.run(get()) if u.split("?", 1)[0].endswith("/o/" + key)]
    assert found, key
    return found[0]


def test_a_move_that_cannot_verify_keeps_the_source_and_resumes(tiered: LocalCluster) -> None:
    local = tiered
    res = cli(local, "put", "--json", "--wait", str(PHOTOS / "blackbug_alpha.png"))
    img = json.loads(res.stdout.splitlines()[0])
    assert img["status"] == "ready", res.stdout + res.stderr
    keys = [u.split("/o/", 1)[1].split("?", 1)[0] for u in urls(img)]
    hot_before = {k: v for k, v in objects(local, "storage1").items() if k in keys}
    assert sorted(hot_before) == sorted(keys)
    # other bytes already sit under one of the keys in the warm pool: that copy cannot verify
    planted = local.state / "data" / "storage2" / keys[-1]
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(b"not these bytes")

    res = cli(local, "tiers", "move", "--json", "--older-than", "0", "--idle", "0")
    assert res.returncode == 1, res.stdout + res.stderr
    [mv] = [m for m in json.loads(res.stdout)["moves"] if m["slug"] == img["id"]]
    assert not mv["done"] and "already-exists" in mv["error"]
    assert {k: v for k, v in objects(local, "storage1").items() if k in keys} == hot_before  # source kept

    planted.unlink()
    planted.with_name(planted.name + ".meta").unlink(missing_ok=True)
    res = cli(local, "tiers", "move", "--json", "--older-than", "0", "--idle", "0")
    assert res.returncode == 0, res.stdout + res.stderr
    assert {k: v for k, v in objects(local, "storage2").items() if k in keys} == hot_before  # resumed, verified
    assert not set(keys) & set(objects(local, "storage1"))


def test_a_move_into_a_pool_of_fewer_nodes_says_it_keeps_fewer_copies(tiered: LocalCluster) -> None:
    """Two hot nodes hold 2 copies of each object (PIXELFOX_REPLICAS=2); the warm pool has one node, so
    a move keeps 1. It did so without a word; now the dry run and the move say it on stderr."""
    local = tiered
    local.add_storage("storage3")  # a second hot node
    deadline = time.monotonic() + 30
    while "storage3" not in asyncio.run(capabilities(local)):
        assert time.monotonic() < deadline, "storage3 did not register"
        time.sleep(0.25)
    res = cli(local, "put", "--json", "--wait", str(PHOTOS / "htc_desire_gps_icc.webp"))
    img = json.loads(res.stdout.splitlines()[0])
    assert img["status"] == "ready", res.stdout + res.stderr
    keys = [u.split("/o/", 1)[1].split("?", 1)[0] for u in urls(img)]
    assert set(keys) <= set(objects(local, "storage1")) and set(keys) <= set(objects(local, "storage3"))
    said = ("warning: pool warm has 1 healthy storage node for 2 replicas: 1 moved image {} 1 copy of each object "
            "(they had 2); add a storage node to pool warm to keep 2")
    plan = cli(local, "tiers", "move", "--dry-run", "--json", "--older-than", "0", "--idle", "0")
    assert plan.returncode == 0, plan.stderr
    [mv] = [m for m in json.loads(plan.stdout)["moves"] if m["slug"] == img["id"]]
    assert (mv["had"], mv["copies"]) == (2, 1), mv
    assert said.format("would get") in plan.stderr, plan.stderr
    res = cli(local, "tiers", "move", "--older-than", "0", "--idle", "0")
    assert res.returncode == 0 and f"{img['id']}  hot -> warm  moved" in res.stdout, res.stdout + res.stderr
    assert said.format("got") in res.stderr, res.stderr
    assert set(keys) <= set(objects(local, "storage2"))
    assert not set(keys) & (set(objects(local, "storage1")) | set(objects(local, "storage3")))


def test_a_move_while_another_mover_holds_the_lease_says_who_and_exits_75(tiered: LocalCluster) -> None:
    """After a mover was killed, every run for the lease's TTL said only "skipped: another tier mover
    holds the lease" and exited 0, as a run with nothing due does: a cron job could not tell. It now
    names the holder and the time left, and exits 75 (EX_TEMPFAIL)."""
    import redis

    from pixelfox.leases import lease_key

    r = redis.Redis.from_url(tiered.redis_url)
    r.set(lease_key("tiers"), "cli:deadbeef0001", px=30_000)  # what a killed `tiers move` leaves
    try:
        res = cli(tiered, "tiers", "move", "--older-than", "0", "--idle", "0")
        assert res.returncode == 75, (res.returncode, res.stdout, res.stderr)
        assert "skipped: another tier mover holds the lease (cli:deadbeef0001, for " in res.stdout, res.stdout
        assert "s more unless it renews it): nothing was moved" in res.stdout, res.stdout
        as_json = cli(tiered, "tiers", "move", "--json")
        assert as_json.returncode == 75 and json.loads(as_json.stdout)["held_elsewhere"] is True, as_json.stdout
    finally:
        r.delete(lease_key("tiers"))
        r.close()
    assert cli(tiered, "tiers", "move", "--dry-run").returncode == 0
