"""``pixelfox status`` shows the storage pools (ListNodes with_pools, nodes/manager/pools.py).

A private cluster with two storage nodes in pool ``hot`` and two replicas: with both serving, status
exits 0 and lists the pool; a storage node stopped cleanly (status "stopped", which alone exits 0)
leaves the pool short of its replicas, so status warns and exits 1 until it is back. An object whose only
copy was on a node that is then forgotten is counted as lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pixelfox.cli import pools as pools_cli
from pixelfox.cli.launcher import Counts, LocalCluster
from tests.e2e.test_decommission import keys_of
from tests.e2e.test_replication import PHOTOS, pool_files, put, wait_for
from tests.ops.conftest import FAST_REPAIR_ENV, cli, start_cluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_hot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = start_cluster(
        tmp_path_factory.mktemp("status-pools"), Counts(upload=1, proc=1, storage=2, web=0),
        FAST_REPAIR_ENV)
    try:
        yield local
    finally:
        local.stop()


def status_json(root: Path) -> dict[str, Any]:
    res = cli(root, "status", "--json")
    assert res.returncode == 0 and res.stdout, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def node_status(root: Path, node: str) -> str:
    return str(next(r["status"] for r in status_json(root)["nodes"] if r["id"] == node))


def hot(root: Path) -> dict[str, Any]:
    """The ``hot`` pool of ``status --json`` (the only pool), after checking the figures were given."""
    doc = status_json(root)
    assert doc["pools_error"] is None, doc["pools_error"]
    assert [p["name"] for p in doc["pools"]] == ["hot"], doc["pools"]
    pool: dict[str, Any] = doc["pools"][0]
    return pool


def stored_bytes(local: LocalCluster) -> int:
    """Bytes of the object files in both storage nodes' folders (what their stores count as used)."""
    return sum((local.state / "data" / n / k).stat().st_size for n in ("storage1", "storage2")
               for k in pool_files(local, n))


def test_a_stopped_storage_node_leaves_its_pool_short(two_hot: LocalCluster) -> None:
    local, root = two_hot, two_hot.root
    put(local, PHOTOS / "painting_rgb.png")
    wait_for(lambda: hot(root)["used_bytes"] == stored_bytes(local), 15, "the heartbeats to report the new bytes")
    pool = hot(root)
    assert {k: v for k, v in pool.items() if k not in ("used_bytes", "free_bytes")} == {
        "name": "hot", "replicas": 2, "nodes": 2, "serving": 2, "under_replicated": 0}, pool
    assert pool["free_bytes"] > 0 and pool["used_bytes"] > 0
    assert status_json(root)["lost_objects"] == 0 and status_json(root)["warnings"] == []
    ok = cli(root, "status")
    assert ok.returncode == 0 and "warning" not in ok.stderr, ok.stdout + ok.stderr
    assert any(line.split()[:6] == ["│", "hot", "│", "2", "│", "2/2"] for line in ok.stdout.splitlines()), ok.stdout

    local.terminate("storage2")  # stopped cleanly: on its own no failure (exit 0 before pools were shown)
    wait_for(lambda: node_status(root, "storage2") == "stopped", 15, "storage2 shown stopped")
    pool = hot(root)
    assert (pool["replicas"], pool["nodes"], pool["serving"]) == (2, 2, 1), pool
    assert [w[:38] for w in status_json(root)["warnings"]] == ["warning: pool hot: 1 of 2 storage node"]
    short = cli(root, "status")
    assert short.returncode == 1, short.stdout + short.stderr
    assert short.stderr == (
        "warning: pool hot: 1 of 2 storage nodes serving, 2 replicas wanted: its objects get at most 1 copy each "
        "until a node is back; start or add a storage node in this pool, or end a node's maintenance\n"), short.stderr
    assert any(line.split()[:6] == ["│", "hot", "│", "2", "│", "1/2"] for line in short.stdout.splitlines()), \
        short.stdout

    local.restart("storage2")
    wait_for(lambda: hot(root)["serving"] == 2, 30, "storage2 serving again")
    back = cli(root, "status")
    assert back.returncode == 0 and back.stderr == "", back.stdout + back.stderr


def test_objects_whose_only_holder_was_forgotten_are_lost(two_hot: LocalCluster) -> None:
    local, root = two_hot, two_hot.root
    assert cli(root, "nodes", "maintenance", "storage1").returncode == 0
    try:
        held = cli(root, "status")  # an admin's maintenance leaves the pool short too
        assert held.returncode == 1 and held.stderr == pools_cli.short_line(
            {"name": "hot", "nodes": 2, "serving": 1, "replicas": 2}) + "\n", held.stderr
        keys = keys_of(put(local, PHOTOS / "blackbug_alpha.png"))  # stored on storage2 alone
        assert keys <= set(pool_files(local, "storage2")) and not keys & set(pool_files(local, "storage1"))
        local.terminate("storage2")
        wait_for(lambda: node_status(root, "storage2") == "stopped", 15, "storage2 shown stopped")
        res = cli(root, "nodes", "forget", "storage2")
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        assert cli(root, "nodes", "maintenance", "storage1", "--off").returncode == 0
    wait_for(lambda: hot(root)["serving"] == 1, 15, "storage1 out of maintenance")
    doc = status_json(root)
    assert doc["lost_objects"] == len(keys), doc
    assert [(p["name"], p["nodes"], p["serving"], p["replicas"]) for p in doc["pools"]] == [("hot", 1, 1, 2)]
    res = cli(root, "status")
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.splitlines() == [
        pools_cli.short_line({"name": "hot", "nodes": 1, "serving": 1, "replicas": 2}),
        pools_cli.lost_line(len(keys))], res.stderr
