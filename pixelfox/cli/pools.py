"""The storage pools part of ``pixelfox status``: a table, warning lines and the ``--json`` fields.

The figures come from ``ListNodes`` with ``with_pools`` (:mod:`nodes.manager.pools`). A pool with fewer
serving storage nodes than its replica count is a failure (``status`` exits 1: new objects get fewer
copies than wanted); lost objects are warned about but do not change the exit code (they stay lost until
their images are uploaded again or deleted). A manager that cannot give the figures (older than
``with_pools``, or its database did not answer) leaves ``pools_error`` set and status shows the nodes as
before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from pixelfox.text import human_bytes
from pixelfox.v1 import manager_pb2


@dataclass
class PoolReport:
    """What status shows of the pools: ``pools`` (one dict each, the ``--json`` shape), ``lost_objects``
    (None when unknown) and ``error`` ("" when the manager gave the figures)."""

    pools: list[dict[str, Any]] = field(default_factory=list)
    lost_objects: int | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        """The ``pools``, ``lost_objects`` and ``pools_error`` (null when none) fields of ``status --json``."""
        return {"pools": self.pools, "lost_objects": self.lost_objects, "pools_error": self.error or None}


def pool_report(reply: manager_pb2.ListNodesResponse, manager: str) -> PoolReport:
    """The pools of a ``ListNodes(with_pools=True)`` answer from ``manager`` (its address, for the error)."""
    if not reply.pools_included:
        return PoolReport(error=reply.pools_error or f"the manager at {manager} does not report storage pools "
                                                     f"(it is older than this pixelfox command)")
    pools = [{"name": p.name, "replicas": p.replicas, "nodes": p.nodes, "serving": p.serving,
              "used_bytes": p.used_bytes, "free_bytes": p.free_bytes, "under_replicated": p.under_replicated}
             for p in reply.pools]
    return PoolReport(pools=pools, lost_objects=reply.lost_objects)


def short_pools(report: PoolReport) -> list[dict[str, Any]]:
    """The pools with fewer serving storage nodes than their replica count."""
    return [p for p in report.pools if p["serving"] < p["replicas"]]


def short_line(pool: dict[str, Any]) -> str:
    """The warning for a pool short of serving nodes, e.g. ``warning: pool hot: 1 of 2 storage nodes serving,
    2 replicas wanted: its objects get at most 1 copy each until a node is back; start or add a storage node
    in this pool, or end a node's maintenance``. With none serving: ``...: no new copy of its objects can be
    written until a node is back; ...`` (it said "at most 0 copies each"; copies on nodes in maintenance
    are still read)."""
    n, serving, want = pool["nodes"], pool["serving"], pool["replicas"]
    effect = (f"its objects get at most {serving} cop{'y' if serving == 1 else 'ies'} each" if serving
              else "no new copy of its objects can be written")
    return (f"warning: pool {pool['name']}: {serving} of {n} storage node{'' if n == 1 else 's'} serving, "
            f"{want} replica{'' if want == 1 else 's'} wanted: {effect} until a node is back; start or add a storage "
            f"node in this pool, or end a node's maintenance")


def lost_line(lost: int) -> str:
    """The warning for ``lost`` (> 0) objects with no copy left."""
    return (f"warning: {lost} object{' has' if lost == 1 else 's have'} no copy left on any storage node (every "
            "recorded copy is gone: its node was forgotten, or `pixelfox scrub --fix` found it missing): "
            + ("its owner's upload of the same file restores its image" if lost == 1
               else "their owners' uploads of the same files restore their images"))


def warnings(report: PoolReport) -> list[str]:
    """``status``'s warning lines about the pools: one per short pool (:func:`short_line`), lost objects
    (:func:`lost_line`), and a note when the figures are unknown."""
    lines = [short_line(p) for p in short_pools(report)]
    if report.lost_objects:
        lines.append(lost_line(report.lost_objects))
    if report.error:
        lines.append(f"note: no storage pool figures: {report.error}")
    return lines


def table(report: PoolReport) -> Table:
    """The pools as a rich table: pool, replicas, serving/nodes, used, free, under-replicated."""
    out = Table("pool", "replicas", "serving", "used", "free", "under-replicated")
    for p in report.pools:
        out.add_row(p["name"], str(p["replicas"]), f"{p['serving']}/{p['nodes']}", human_bytes(p["used_bytes"]),
                    human_bytes(p["free_bytes"]), str(p["under_replicated"]),
                    style="red" if p["serving"] < p["replicas"] else "")
    return out
