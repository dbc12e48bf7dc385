"""The storage pools part of ``pixelfox status`` (:mod:`pixelfox.cli.pools`): warning lines, the JSON
fields, and what an answer without pool figures (an older manager, a database error) becomes."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from pixelfox.cli import pools
from pixelfox.v1 import manager_pb2


def pool(name: str = "hot", nodes: int = 2, serving: int = 2, replicas: int = 2, **more: int) -> dict[str, Any]:
    return {"name": name, "replicas": replicas, "nodes": nodes, "serving": serving, "used_bytes": 0,
            "free_bytes": 0, "under_replicated": 0, **more}


@pytest.mark.parametrize(("p", "line"), [
    (pool(serving=1), "warning: pool hot: 1 of 2 storage nodes serving, 2 replicas wanted: its objects get at most "
                      "1 copy each until a node is back; start or add a storage node in this pool, or end a node's "
                      "maintenance"),
    (pool("cold", nodes=1, serving=0, replicas=3),
     "warning: pool cold: 0 of 1 storage node serving, 3 replicas wanted: no new copy of its objects can be "
     "written until a node is back; start or add a storage node in this pool, or end a node's maintenance"),
])
def test_short_pool_line(p: dict[str, Any], line: str) -> None:
    assert pools.short_line(p) == line


def test_lost_line_singular_and_plural() -> None:
    # it said "the only holder was forgotten" also of copies `scrub --fix` found deleted by hand
    found = ("no copy left on any storage node (every recorded copy is gone: its node was forgotten, or "
             "`pixelfox scrub --fix` found it missing)")
    assert pools.lost_line(1) == (f"warning: 1 object has {found}: its owner's upload of the same file restores "
                                  "its image")
    assert pools.lost_line(7) == (f"warning: 7 objects have {found}: their owners' uploads of the same files "
                                  "restore their images")


def test_warnings_name_short_pools_then_lost_objects() -> None:
    report = pools.PoolReport(pools=[pool("hot"), pool("warm", nodes=3, serving=1), pool("cold", 1, 1, 1)],
                              lost_objects=2)
    assert [p["name"] for p in pools.short_pools(report)] == ["warm"]
    assert pools.warnings(report) == [pools.short_line(report.pools[1]), pools.lost_line(2)]
    assert pools.warnings(pools.PoolReport(pools=[pool()], lost_objects=0)) == []


def test_answer_with_pools_becomes_json_rows() -> None:
    reply = manager_pb2.ListNodesResponse(pools_included=True, lost_objects=3, pools=[manager_pb2.StoragePool(
        name="hot", replicas=2, nodes=2, serving=1, used_bytes=1536, free_bytes=10 << 30, under_replicated=4)])
    report = pools.pool_report(reply, "127.0.0.1:7070")
    assert report.to_json() == {
        "pools": [{"name": "hot", "replicas": 2, "nodes": 2, "serving": 1, "used_bytes": 1536,
                   "free_bytes": 10 << 30, "under_replicated": 4}],
        "lost_objects": 3, "pools_error": None}
    console = Console(width=120, record=True)
    console.print(pools.table(report))
    row = next(line for line in console.export_text().splitlines() if "hot" in line)
    assert [c.strip() for c in row.split("│")[1:-1]] == ["hot", "2", "1/2", "1.5 KiB", "10.0 GiB", "4"]


def test_answer_without_pools_says_why() -> None:
    older = pools.pool_report(manager_pb2.ListNodesResponse(), "10.0.0.5:7070")  # ignores with_pools
    assert older.to_json() == {"pools": [], "lost_objects": None, "pools_error": (
        "the manager at 10.0.0.5:7070 does not report storage pools (it is older than this pixelfox command)")}
    failed = pools.pool_report(manager_pb2.ListNodesResponse(pools_error="OperationalError: database is locked"), "m")
    assert failed.to_json()["pools_error"] == "OperationalError: database is locked"
    assert pools.warnings(failed) == ["note: no storage pool figures: OperationalError: database is locked"]
    assert pools.short_pools(failed) == []
