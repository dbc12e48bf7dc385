"""Operator commands: ``pixelfox nodes maintenance|forget``, ``migrate-db``, ``backup`` and ``restore``.

``nodes maintenance NODE_ID [--off]`` asks a manager (admin key or the local cluster's
secret) to put a node into maintenance: it keeps serving what it holds but gets no new
uploads, jobs or placements until ``--off``. ``nodes forget NODE_ID`` drops a node that died for
good from the registry (refused while it still heartbeats). The database commands work on database URLs
directly (the manager need not run) and are described in :mod:`pixelfox.db.dbcopy` (``migrate-db``)
and :mod:`pixelfox.db.backup` (``backup``, ``restore``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixelfox import idlenodes
from pixelfox.cli import context
from pixelfox.cli.argtypes import POSITIVE
from pixelfox.v1 import manager_pb2

STATUS_NAMES = idlenodes.STATUS_NAMES


#: seconds a ``nodes`` command waits for the manager's answer
NODE_CALL_TIMEOUT_S = 10


async def _node_call(ref: context.ClusterRef, method: str, request: Any) -> Any:
    """``ManagerService.<method>(request)`` as the operator, with no credential check of its own: a
    manager not reached is said before a missing credential (:func:`context.call_manager`)."""
    return await context.call_manager(ref, method, request, credential_required=False,
                                      timeout_s=NODE_CALL_TIMEOUT_S)


def cmd_maintenance(opts: argparse.Namespace) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    req = manager_pb2.SetNodeMaintenanceRequest(node_id=opts.node_id, maintenance=not opts.off)
    node = asyncio.run(_node_call(ref, "SetNodeMaintenance", req))
    print(f"{node.node_id}: {STATUS_NAMES.get(node.status, '?')}")
    return 0


def cmd_forget(opts: argparse.Namespace) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    asyncio.run(_node_call(ref, "ForgetNode", manager_pb2.ForgetNodeRequest(node_id=opts.node_id)))
    print(f"{opts.node_id}: forgotten")
    return 0


def _state() -> tuple[Path | None, dict[str, Any]]:
    state = context.find_state()
    return state, (json.loads(state.read_text()) if state else {})


def cluster_database() -> tuple[str, str] | None:
    """``(URL, where from)`` of the database this folder's cluster uses: ``PIXELFOX_DATABASE__URL``, else
    ``database_url`` in ``.pixelfox/cluster.json`` (the URL ``pixelfox up`` gave its managers), else that
    folder's SQLite file (a state file written before the URL was recorded); None outside a cluster folder."""
    if env := os.environ.get("PIXELFOX_DATABASE__URL"):
        return env, "PIXELFOX_DATABASE__URL"
    state, data = _state()
    if state is None:
        return None
    return context.recorded_database_url(state, data), f"the cluster in {state.parent.parent}"


def live_database() -> str | None:
    """The database the local cluster uses while its ``pixelfox up`` runs (None when it does not run)."""
    state, data = _state()
    if state is None or not context.is_running(data.get("pid")):
        return None
    return context.recorded_database_url(state, data)


def _db_url(explicit: str | None, action: str, command: str, flag: str = "--db") -> str:
    """``flag`` if given, else :func:`cluster_database`; says on stderr which database ``action`` uses.
    ``ValueError`` (a usage error, exit 2, hinting at ``pixelfox COMMAND --help``) when neither is there."""
    from pixelfox.db.checks import check_url, redact

    if explicit:
        url, origin = explicit, flag
    elif found := cluster_database():
        url, origin = found
    else:
        raise ValueError(f"no database given: pass {flag} URL (or run in a `pixelfox up` folder) "
                         f"(see `pixelfox {command} --help`)")
    print(f"pixelfox: {action} {redact(url)} (from {origin})", file=sys.stderr)
    check_url(url)
    return url


def cmd_migrate_db(opts: argparse.Namespace) -> int:
    from pixelfox.db.checks import redact
    from pixelfox.db.dbcopy import copy_database

    source = _db_url(opts.source, "copying from", "migrate-db", "--source")
    print(f"pixelfox: copying to {redact(opts.target)} (--target)", file=sys.stderr)
    report = asyncio.run(copy_database(source, opts.target, batch=opts.batch, live_url=live_database()))
    print(json.dumps(report.as_dict(), indent=2))
    return 0 if report.verified else 1


def cmd_backup(opts: argparse.Namespace) -> int:
    from pixelfox.db.backup import backup

    url = _db_url(opts.db, "backing up", "backup")
    if opts.file == "-":  # the backup itself goes to standard output, the header to stderr
        report = asyncio.run(backup(url, None))
        sys.stdout.flush()
        print(json.dumps(report, indent=2), file=sys.stderr)
        return 0
    report = asyncio.run(backup(url, Path(opts.file)))
    print(json.dumps(report, indent=2))
    return 0


def cmd_restore(opts: argparse.Namespace) -> int:
    from pixelfox.db.backup import read_header, restore
    from pixelfox.db.identity import refuse_live

    url = _db_url(opts.db, "restoring into", "restore")
    read_header(Path(opts.file))  # a missing or foreign file: refused before any database is opened
    asyncio.run(refuse_live(url, live_database(), "restoring a backup over it"))
    report = asyncio.run(restore(Path(opts.file), url, force=opts.force))
    print(json.dumps(report, indent=2))
    return 0


def cmd_upgrade_db(opts: argparse.Namespace) -> int:
    from pixelfox.db import migrate

    asyncio.run(migrate.upgrade(_db_url(opts.db, "upgrading", "upgrade-db")))
    print("database at head")
    return 0


def add_commands(sub: Any, with_target: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Add the operator sub-commands to ``pixelfox``'s parser (``sub`` from ``add_subparsers``)."""
    nodes = sub.add_parser("nodes", help="manage cluster nodes").add_subparsers(dest="nodes_cmd", required=True)
    nm = with_target(nodes.add_parser("maintenance", help="drain NODE_ID from new work (--off: back to active)"))
    nm.add_argument("node_id")
    nm.add_argument("--off", action="store_true", help="end maintenance")
    nm.set_defaults(func=cmd_maintenance)
    nf = with_target(nodes.add_parser("forget", help="drop NODE_ID, a node that died for good, from the registry"))
    nf.add_argument("node_id")
    nf.set_defaults(func=cmd_forget)

    md = sub.add_parser("migrate-db", help="copy the metadata to another database (SQLite -> PostgreSQL)")
    md.add_argument("--source", help="source database URL (default: the database the local cluster uses, "
                    "from PIXELFOX_DATABASE__URL or .pixelfox/cluster.json)")
    md.add_argument("--target", required=True, help="target URL, e.g. postgresql+asyncpg://user@host:5432/pixelfox")
    md.add_argument("--batch", type=POSITIVE, default=500, help="rows per batch (default 500)")
    md.set_defaults(func=cmd_migrate_db)

    bk = sub.add_parser("backup", help="write the metadata to a JSON Lines file (gzip if it ends in .gz; mode 0600; "
                        "- for standard output)")
    bk.add_argument("file")
    bk.add_argument("--db", help="database URL (default: the local cluster's database)")
    bk.set_defaults(func=cmd_backup)

    rs = sub.add_parser("restore", help="load a backup into an empty database (one made at an older schema "
                        "revision is upgraded to the current one)")
    rs.add_argument("file")
    rs.add_argument("--db", help="database URL (default: the local cluster's database)")
    rs.add_argument("--force", action="store_true", help="empty the tables first")
    rs.set_defaults(func=cmd_restore)

    ud = sub.add_parser("upgrade-db", help="run the Alembic migrations up to head")
    ud.add_argument("--db", help="database URL (default: the local cluster's database)")
    ud.set_defaults(func=cmd_upgrade_db)
