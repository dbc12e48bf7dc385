"""``pixelfox scrub [--node ID] [--fix] [--limit N] [--json]``: do the storage nodes still hold the recorded copies?

Asks a manager (admin key or the local cluster's secret) to ``Stat`` every copy the database records on each
storage node (:mod:`nodes.manager.scrub`) and prints a table per node (checked, missing, unreachable) and the
missing keys with their image. ``--fix`` forgets each missing copy and records a replica debt for its key, so
the repair copies it back from another replica (or, with none left, the image shows as lost until its owner
uploads the same file again). Exit status: 0 when every node was checked and nothing is missing, 1 when something
is missing or a node could not be checked (with or without ``--fix``, so that a cron job hears of it), 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from rich.table import Table

from pixelfox.cli import context
from pixelfox.cli.argtypes import whole_number
from pixelfox.cli.tables import table_console
from pixelfox.v1 import manager_pb2

#: seconds ``pixelfox scrub`` waits for the manager's answer (it Stats every recorded copy)
SCRUB_TIMEOUT_S = 3600


def scrub_dict(reply: manager_pb2.ScrubResponse) -> dict[str, Any]:
    """The answer as the JSON ``pixelfox scrub --json`` prints: ``nodes`` (``node``, ``checked``, ``missing``,
    ``unreachable``, ``error``), ``missing`` (``key``, ``node``, ``image``, ``fixed``), ``missing_total`` and
    ``fixed``."""
    return {
        "nodes": [{"node": n.node_id, "checked": n.checked, "missing": n.missing, "unreachable": n.unreachable,
                   "error": n.error} for n in reply.nodes],
        "missing": [{"key": m.key, "node": m.node_id, "image": m.image_slug, "fixed": m.fixed}
                    for m in reply.missing],
        "missing_total": sum(n.missing for n in reply.nodes),
        "fixed": reply.fixed,
    }


def cmd_scrub(opts: argparse.Namespace) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    req = manager_pb2.ScrubRequest(node_id=opts.node or "", fix=opts.fix, limit=opts.limit)
    reply = asyncio.run(context.call_manager(ref, "Scrub", req, credential_required=False,
                                             timeout_s=SCRUB_TIMEOUT_S))
    out = scrub_dict(reply)
    if opts.json:
        print(json.dumps(out, indent=2))
    else:
        _print(out, opts.fix)
    # a node not checked is no all-clear: a cron job must hear of it as of a missing copy
    return 1 if out["missing_total"] or any(n["unreachable"] for n in out["nodes"]) else 0


def _print(out: dict[str, Any], fix: bool) -> None:
    console = table_console()
    nodes = Table("node", "checked", "missing", "unreachable", "error")
    for n in out["nodes"]:
        nodes.add_row(n["node"], str(n["checked"]), str(n["missing"]), str(n["unreachable"]), n["error"])
    console.print(nodes)
    if out["missing"]:
        keys = Table("node", "key", "image", *(("fixed",) if fix else ()))
        for m in out["missing"]:
            keys.add_row(m["node"], m["key"], m["image"] or "-", *(("yes" if m["fixed"] else "no",) if fix else ()))
        console.print(keys)
    total, listed = out["missing_total"], len(out["missing"])
    if listed < total:
        console.print(f"{total - listed} more missing copies not listed (the answer lists the first {listed})")
    for n in out["nodes"]:
        if n["unreachable"]:
            print(f"pixelfox: storage node {n['node']} was not checked ({n['error']}): run the scrub again once "
                  "it is up", file=sys.stderr)
    if not total:
        console.print("no copy is missing")
    elif fix:
        console.print(f"{_copies(total)} missing; {out['fixed']} forgotten with a replica debt: the repair "
                      "copies them back from another replica, and images with no copy left show as lost")
    else:
        # not "to have the repair restore them": a key missing on its every holder has no copy to restore from
        console.print(f"{_copies(total, now=True)} missing: run `pixelfox scrub --fix` to forget "
                      f"{'it' if total == 1 else 'them'}; the repair copies each back from another replica where "
                      "one is left, and an image with none left shows as lost until its owner uploads the same "
                      "file again")


def _copies(n: int, now: bool = False) -> str:
    """``1 copy was`` / ``3 copies were`` (``now``: ``is`` / ``are``)."""
    verb = ("is" if now else "was") if n == 1 else ("are" if now else "were")
    return f"{n} cop{'y' if n == 1 else 'ies'} {verb}"


def add_commands(sub: Any, with_target: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Add ``pixelfox scrub`` to ``pixelfox``'s parser (``sub`` from ``add_subparsers``)."""
    sc = with_target(sub.add_parser("scrub", help="check that the storage nodes still hold the copies the "
                                    "database records (exit 1 when some are missing)"))
    sc.add_argument("--node", metavar="ID", help="scrub this storage node only (default: every one)")
    sc.add_argument("--fix", action="store_true", help="forget the missing copies and record replica debts, so "
                    "the repair copies them back from another replica")
    sc.add_argument("--limit", type=whole_number(0, 2**31 - 1), default=0,
                    help="keys checked per node, in key order (default 0: all)")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=cmd_scrub)
