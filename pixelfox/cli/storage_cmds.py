"""Storage admin commands: ``pixelfox tiers move [--dry-run]`` and ``pixelfox migrate-store``.

``tiers move`` runs the manager's :class:`~nodes.manager.tiers.TierMover` in this process,
under the same Redis lease as the managers' own passes, against the metadata database and
the storage nodes. In the folder of ``pixelfox up`` it finds Redis, the secret and the
database the cluster uses (``database_url`` in ``.pixelfox/cluster.json``) by itself; elsewhere
it reads the manager's settings from the environment (``PIXELFOX_DATABASE__URL``,
``PIXELFOX_REDIS__URL``, ``PIXELFOX_CLUSTER__SECRET``, ``PIXELFOX_TIERS__*``, ``PIXELFOX_REPLICAS``).

``migrate-store --from SRC --to DST`` copies every object of one pool to another while the
storage node keeps serving (see :mod:`pixelfox.storage.migrate`); SRC and DST are ``fs:<dir>``
or ``s3`` / ``s3:<prefix>`` (bucket and credentials from ``PIXELFOX_S3__*``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pixelfox import errors
from pixelfox.cli import context
from pixelfox.cli.argtypes import POSITIVE, seconds_or_days, whole_number


def _manager_settings() -> Any:
    from nodes.manager.config import ManagerSettings
    from pixelfox.config import read_settings

    settings = read_settings(ManagerSettings)
    state = context.find_state()
    if state is not None:
        data = json.loads(state.read_text())
        if not os.environ.get("PIXELFOX_REDIS__URL") and not context.is_running(data.get("pid")):
            # its Redis is gone with it: say so, as the other commands do, not "Redis error: Error 111"
            raise context.not_running(state, "set PIXELFOX_REDIS__URL and PIXELFOX_DATABASE__URL for another cluster")
        update: dict[str, Any] = {}
        if not os.environ.get("PIXELFOX_REDIS__URL") and data.get("redis_url"):
            update["redis"] = settings.redis.model_copy(update={"url": data["redis_url"]})
        if not os.environ.get("PIXELFOX_CLUSTER__SECRET") and data.get("secret"):
            from pydantic import SecretStr

            update["cluster"] = settings.cluster.model_copy(update={"secret": SecretStr(data["secret"])})
        if not os.environ.get("PIXELFOX_DATABASE__URL"):  # the database `pixelfox up` gave its managers
            url = context.recorded_database_url(state, data)
            update["database"] = settings.database.model_copy(update={"url": url})
        if not os.environ.get("PIXELFOX_REPLICAS"):
            update["replicas"] = 2
        settings = settings.model_copy(update=update)
    return settings


async def _tiers_move(opts: argparse.Namespace) -> dict[str, Any]:
    from nodes.manager.registry import Registry
    from nodes.manager.tiers import TierMover, TierRule
    from pixelfox import redisx
    from pixelfox.db.checks import check_url, redact
    from pixelfox.db.engine import make_engine, session_factory

    settings = _manager_settings()
    print(f"pixelfox: database {redact(settings.database.url)}", file=sys.stderr)
    check_url(settings.database.url, must_exist=True)
    tiers = settings.tiers
    if opts.older_than is not None or opts.idle is not None:
        rules = {name: TierRule(after_days=opts.older_than if opts.older_than is not None else r.after_days,
                                idle_days=opts.idle if opts.idle is not None else r.idle_days)
                 for name, r in tiers.rules.items()}
        tiers = tiers.model_copy(update={"rules": rules})
    if opts.limit:
        tiers = tiers.model_copy(update={"batch": opts.limit})
    engine = make_engine(settings.database)
    redis = redisx.connect(settings.redis)
    try:
        mover = TierMover(session_factory(engine), Registry(redis, settings.node_timeout_s), redis,
                          settings.cluster.secret.get_secret_value(), settings.replicas, tiers, owner="cli")
        report = await mover.move(dry_run=opts.dry_run)
    finally:
        await redis.aclose()
        await engine.dispose()
    return {"dry_run": opts.dry_run, "skipped": report.skipped, "held_elsewhere": report.held_elsewhere,
            "unserved": report.unserved,
            "replicas": settings.replicas, "moves": [asdict(m) for m in report.moves]}


def fewer_copies(out: dict[str, Any]) -> list[str]:
    """Warnings for moves into a pool with fewer healthy storage nodes than the images had copies (a tier of
    1 node under ``PIXELFOX_REPLICAS=2`` keeps 1 copy of each moved object), one per target pool."""
    cut: dict[str, list[dict[str, Any]]] = {}
    for m in out["moves"]:
        if m["copies"] < min(m["had"], out["replicas"]) and (out["dry_run"] or m["done"]):
            cut.setdefault(m["dst"], []).append(m)
    verb = "would get" if out["dry_run"] else "got"
    return [f"warning: pool {dst} has {ms[0]['copies']} healthy storage node{'' if ms[0]['copies'] == 1 else 's'} "
            f"for {out['replicas']} replicas: {len(ms)} moved image{'' if len(ms) == 1 else 's'} {verb} "
            f"{ms[0]['copies']} cop{'y' if ms[0]['copies'] == 1 else 'ies'} of each object (they had "
            f"{max(m['had'] for m in ms)}); add a storage node to pool {dst} to keep {out['replicas']}"
            for dst, ms in sorted(cut.items())]


#: ``tiers move``'s exit status when another mover holds the lease and nothing ran (sysexits.h EX_TEMPFAIL)
TEMPFAIL = 75


def cmd_tiers_move(opts: argparse.Namespace) -> int:
    out = asyncio.run(_tiers_move(opts))
    if opts.json:
        print(json.dumps(out))
    else:
        if out["skipped"]:
            print(f"skipped: {out['skipped']}")
        for m in out["moves"]:
            state = "planned" if out["dry_run"] else ("moved" if m["done"] else f"stopped: {m['error']}")
            print(f"{m['slug']}  {m['src']} -> {m['dst']}  {state}  ({m['reason']})")
        if not out["moves"] and not out["skipped"]:
            print("nothing to move")
    for line in fewer_copies(out):
        print(line, file=sys.stderr)
    failed = [m for m in out["moves"] if not out["dry_run"] and not m["done"]]
    # images due for a tier no node serves are reported ("unserved"), not a failure: a cluster may
    # simply run without that tier
    if out["held_elsewhere"]:  # nothing ran: EX_TEMPFAIL (sysexits.h), which a cron job can tell from "nothing due"
        return TEMPFAIL
    return 1 if failed else 0


def _live_pools() -> list[tuple[str, Any]]:
    """``(node, PoolSpec)`` of each storage node of the local cluster, if it runs (``cluster.json``)."""
    from pixelfox.storage.migrate import PoolSpec
    from pixelfox.storage.s3 import S3Settings

    state = context.find_state()
    if state is None:
        return []
    data = json.loads(state.read_text())
    if not context.is_running(data.get("pid")):
        return []
    out = []
    for node, pool in (data.get("pools") or {}).items():
        if pool.get("backend") == "s3":
            s3 = S3Settings(endpoint_url=pool.get("endpoint_url", ""), region=pool.get("region", "us-east-1"),
                            bucket=pool.get("bucket", "pixelfox"), prefix=pool.get("prefix", ""))
            out.append((node, PoolSpec("s3", s3=s3)))
        elif pool.get("data_dir"):
            out.append((node, PoolSpec("fs", path=Path(os.path.realpath(pool["data_dir"])))))
    return out


def _refuse_live_source(src: Any) -> None:
    """``BadRequest`` when ``--delete-source`` would delete the pool a running storage node of this folder serves."""
    for node, pool in _live_pools():
        if src.overlap(pool):
            raise errors.BadRequest(
                f"{src} is (part of) the pool that {node} of the running cluster serves: --delete-source "
                f"would make {node} answer 404 for every object it moved. Copy without --delete-source while it "
                f"runs; then stop the cluster (or point {node} at the new pool and restart it) and run again "
                "with --delete-source")


def cmd_migrate_store(opts: argparse.Namespace) -> int:
    from pixelfox.storage.migrate import check_pair, migrate, open_pool, parse_pool

    src_spec, dst_spec = parse_pool(opts.src), parse_pool(opts.dst)
    check_pair(src_spec, dst_spec)
    if opts.delete_source:
        _refuse_live_source(src_spec)

    async def run() -> Any:
        src = await open_pool(src_spec, source=True)
        try:
            dst = await open_pool(dst_spec)
        except BaseException:
            await src.close()
            raise
        try:
            def progress(key: str, action: str) -> None:
                if opts.verbose:
                    print(f"{action:8} {key}", file=sys.stderr)

            return await migrate(src, dst, delete_source=opts.delete_source, progress=progress,
                                 concurrency=opts.concurrency)
        finally:
            await src.close()
            await dst.close()

    print(f"pixelfox: copying {src_spec} -> {dst_spec}", file=sys.stderr)
    report = asyncio.run(run())
    if report.copied + report.present + report.failed == 0:
        print(f"pixelfox: warning: the source pool {src_spec} holds no objects; nothing was copied",
              file=sys.stderr)
    print(json.dumps(asdict(report)) if opts.json else
          f"copied {report.copied}, already there {report.present}, failed {report.failed}, "
          f"source deleted {report.deleted}, bytes copied {report.bytes_copied}")
    return 1 if report.failed else 0


def add_commands(sub: Any, with_target: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``tiers move`` and ``migrate-store`` on the ``pixelfox`` parser."""
    tiers = sub.add_parser("tiers", help="storage tiers (hot -> warm -> cold)").add_subparsers(
        dest="tiers_cmd", required=True)
    tm = tiers.add_parser("move", help="move images that are due to the next tier")
    tm.add_argument("--dry-run", action="store_true", help="only list what would move")
    days = seconds_or_days(0, "number of days")
    tm.add_argument("--older-than", type=days, metavar="DAYS", help="override every tier's age threshold")
    tm.add_argument("--idle", type=days, metavar="DAYS", help="override every tier's days-without-views")
    tm.add_argument("--limit", type=whole_number(0), default=0, help="move at most this many images (0: no limit)")
    tm.add_argument("--json", action="store_true")
    tm.set_defaults(func=cmd_tiers_move)

    ms = sub.add_parser("migrate-store", help="copy a pool between local disk and S3 (online, resumable)")
    ms.add_argument("--from", dest="src", required=True, help="fs:<dir> | s3[:<prefix>]")
    ms.add_argument("--to", dest="dst", required=True, help="fs:<dir> | s3[:<prefix>]")
    ms.add_argument("--delete-source", action="store_true",
                    help="delete each source object once verified; the source must not be a pool a running storage "
                    "node serves (stop or switch the node first; refused for this folder's running cluster)")
    ms.add_argument("--concurrency", type=POSITIVE, default=4, help="objects in flight (default 4)")
    ms.add_argument("--json", action="store_true")
    ms.add_argument("-v", "--verbose", action="store_true")
    ms.set_defaults(func=cmd_migrate_store)

