"""Taking a storage node out for good, as docs/operations.md "Taking a storage node out" says (issue 6).

Three storage nodes, two replicas: maintenance, wait for the repair figure to read 0, stop, ``pixelfox nodes
forget``; the repair copies what the node held to the remaining nodes until every object has two copies there,
and the figure reads 0 again. Then one more goes the same way: with one node left for two replicas the factor
is 1, so nothing is owed and the figure reads 0 while every object has one copy; ``pixelfox status`` says the
pool is short of its replicas.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from pixelfox.cli.launcher import Counts, LocalCluster
from tests.e2e.test_replication import PHOTOS, debts, pool_files, put, urls, wait_for
from tests.ops.conftest import FAST_REPAIR_ENV, cli, start_cluster, status

pytestmark = pytest.mark.e2e

FIGURE = "pixelfox_storage_repair_short_objects"


@pytest.fixture(scope="module")
def three_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = start_cluster(
        tmp_path_factory.mktemp("decommission"), Counts(upload=1, proc=1, storage=3, web=0),
        FAST_REPAIR_ENV)
    try:
        yield local
    finally:
        local.stop()


def figure(local: LocalCluster, name: str = FIGURE) -> float:
    """``name`` on the manager's ``/metrics``, found as an operator does: its ``metrics_url`` in ``status --json``
    (a labelled counter not counted yet is not listed: 0)."""
    url = next(r["metrics_url"] for r in status(local.root).values() if r["role"] == "manager")
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found or "{" in name, f"{name} not on {url}"
    return float(found.group(1)) if found else 0.0


def keys_of(img: dict[str, Any]) -> set[str]:
    return {u.split("/o/", 1)[1].split("?", 1)[0] for u in urls(img)}


def take_out(local: LocalCluster, node: str) -> None:
    """The documented steps up to ``forget``: maintenance, the figure at 0, SIGTERM, ``nodes forget``."""
    res = cli(local.root, "nodes", "maintenance", node)
    assert res.returncode == 0, res.stdout + res.stderr
    wait_for(lambda: figure(local) == 0, 30, "every object at its factor before the node stops")
    used = status(local.root)[node]["in_use"]
    assert used > 0, status(local.root)[node]  # the bytes of its store
    local.terminate(node)
    wait_for(lambda: status(local.root)[node]["status"] == "stopped", 15, f"{node} stopped")
    assert status(local.root)[node]["in_use"] == used  # its files are still there: it read 0 B
    res = cli(local.root, "nodes", "forget", node)
    assert res.returncode == 0 and f"{node}: forgotten" in res.stdout, res.stdout + res.stderr
    assert node not in status(local.root)


def test_decommissioned_node_leaves_every_object_with_two_copies(three_storage: LocalCluster) -> None:
    local = three_storage
    names = ("storage1", "storage2", "storage3")
    keys: set[str] = set()
    for photo in ("painting_rgb.png", "blackbug_alpha.png", "rotating_squares_30f.gif"):
        keys |= keys_of(put(local, PHOTOS / photo))
    held = {n: pool_files(local, n) for n in names}
    assert all(sum(k in held[n] for n in names) == 2 for k in keys), held  # two copies each
    gone = max(names, key=lambda n: (len(held[n]), n))  # the node whose leaving costs most copies
    rest = [n for n in names if n != gone]
    assert any(k not in held[n] for k in held[gone] for n in rest)  # the repair has copies to make
    wait_for(lambda: figure(local) == 0, 30, "a whole repair walk with nothing to copy")
    copies = figure(local, 'pixelfox_storage_repairs_total{result="ok"}')

    take_out(local, gone)
    wait_for(lambda: all(keys <= set(pool_files(local, n)) for n in rest), 60,
             f"the repair to copy {gone}'s objects to {rest}")
    wait_for(lambda: figure(local) == 0, 30, "the repair figure back at 0")
    assert debts(local) == [] and figure(local, "pixelfox_storage_under_replicated_objects") == 0
    # one copy made per object the node held (its other copy was on one of the two left)
    assert figure(local, 'pixelfox_storage_repairs_total{result="ok"}') - copies == len(held[gone])
    sha = {k: v for n in names for k, v in held[n].items()}
    for n in rest:  # the same bytes everywhere
        assert {k: pool_files(local, n)[k] for k in keys} == {k: sha[k] for k in keys}

    # one node left for two replicas: the factor is 1, nothing is owed, every object has one copy
    last, out = rest
    take_out(local, out)
    wait_for(lambda: figure(local) == 0, 30, "the repair figure at 0")
    assert debts(local) == []
    assert keys <= set(pool_files(local, last))
    extra = keys_of(put(local, PHOTOS / "htc_desire_gps_icc.webp"))
    assert extra <= set(pool_files(local, last))
    wait_for(lambda: figure(local) == 0, 30, "the repair figure at 0 after a new upload")
    assert debts(local) == []
    # nothing is owed, but status says the pool is left short of its two replicas (it said nothing, exit 0)
    short = cli(local.root, "status")
    assert short.returncode == 1 and short.stderr.splitlines() == [
        "warning: pool hot: 1 of 1 storage node serving, 2 replicas wanted: its objects get at most 1 copy each "
        "until a node is back; start or add a storage node in this pool, or end a node's maintenance"], short.stderr
    pools = json.loads(cli(local.root, "status", "--json").stdout)
    assert pools["pools"][0] | {"used_bytes": 0, "free_bytes": 0} == {
        "name": "hot", "replicas": 2, "nodes": 1, "serving": 1, "used_bytes": 0, "free_bytes": 0,
        "under_replicated": 0}, pools
    assert pools["lost_objects"] == 0 and pools["pools_error"] is None
