"""``pixelfox jobs``, ``pixelfox jobs retry ID`` and ``pixelfox reprocess`` (issue 7).

They call the manager's ``JobService`` with the local admin's credential (or ``--api-key`` of
an admin). ``reprocess`` queues re-runs in the *batch* lane, which the dispatcher serves only
when no upload waits, and paces its calls to ``--rate`` images per second, so a recipe change
never starves the site.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from pixelfox import ids
from pixelfox.cli import context
from pixelfox.cli.argtypes import POSITIVE, decimal_number, row_id, whole_number
from pixelfox.cli.tables import table_console
from pixelfox.v1 import jobs_pb2, jobs_pb2_grpc

STATES = {"queued": jobs_pb2.JOB_STATE_QUEUED, "running": jobs_pb2.JOB_STATE_RUNNING,
          "delayed": jobs_pb2.JOB_STATE_DELAYED, "dead": jobs_pb2.JOB_STATE_DEAD}
STATE_NAMES = {v: k for k, v in STATES.items()}
SKIPPED_REASON = "a job for it is already queued or running"  # reprocess --json, for an image left alone


async def _call(ref: context.ClusterRef, method: str, request: Any) -> Any:
    async with context.manager_channel(ref) as ch:
        stub = jobs_pb2_grpc.JobServiceStub(ch)
        return await getattr(stub, method)(request, metadata=ref.admin_metadata(), timeout=30)


def job_row(j: jobs_pb2.JobInfo) -> dict[str, Any]:
    """One job as a JSON-ready dict (the shape of ``pixelfox jobs --json``)."""
    return {"id": j.job_id, "state": STATE_NAMES.get(j.state, "?"), "image_id": j.image_id, "slug": j.image_slug,
            "attempt": j.attempt, "lost": j.lost, "lane": j.lane, "kind": j.kind, "node": j.node_id,
            "manager": j.consumer, "age_s": round(j.age_s, 1), "due_in_s": round(j.due_in_s, 1),
            "reason": j.reason, "requires_gpu": j.requires_gpu}


def cmd_jobs(opts: argparse.Namespace) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    states = [STATES[s] for s in opts.state or []]
    reply = asyncio.run(_call(ref, "ListJobs", jobs_pb2.ListJobsRequest(states=states, limit=opts.limit)))
    counts = {"queued": reply.queued, "running": reply.running, "delayed": reply.delayed, "dead": reply.dead}
    rows = [job_row(j) for j in reply.jobs]
    if opts.json:
        print(json.dumps({"counts": counts, "jobs": rows}, indent=2))
        return 0
    console = table_console()
    console.print(" ".join(f"{k}: {v}" for k, v in counts.items()))
    table = Table("id", "state", "image", "attempt", "lost", "lane", "node", "age", "reason")
    for r in rows:
        age = f"due in {r['due_in_s']:.0f} s" if r["state"] == "delayed" else f"{r['age_s']:.0f} s"
        table.add_row(r["id"], r["state"], r["slug"] or r["image_id"], str(r["attempt"]), str(r["lost"]), r["lane"],
                      r["node"], age, r["reason"][:60], style="red" if r["state"] == "dead" else "")
    console.print(table)
    return 0


def cmd_jobs_retry(opts: argparse.Namespace) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    reply = asyncio.run(_call(ref, "RetryJob", jobs_pb2.RetryJobRequest(job_id=opts.id)))
    row = job_row(reply.job)
    print(json.dumps(row) if opts.json else f"queued again as {row['id']} (image {row['slug'] or row['image_id']})")
    return 0


async def _reprocess(ref: context.ClusterRef, opts: argparse.Namespace, progress: _Progress) -> int:
    rate = opts.rate  # 0.1 to 1000 (argparse checked it)
    batch = max(1, int(rate))
    todo = list(opts.slugs)
    while True:
        start = time.monotonic()
        if opts.all:
            req = jobs_pb2.ReprocessRequest(all=True, limit=batch, after=progress.after, recipe_version=opts.recipe,
                                            requires_gpu=opts.gpu)
        else:
            if not todo:
                break
            req = jobs_pb2.ReprocessRequest(slugs=todo[:batch], recipe_version=opts.recipe, requires_gpu=opts.gpu)
            todo = todo[batch:]
        reply = await _call(ref, "Reprocess", req)
        progress.total += reply.queued
        progress.skipped += len(reply.skipped)
        if opts.json:
            for slug in reply.slugs:
                print(json.dumps({"slug": slug, "queued": True}), flush=True)
            for slug in reply.skipped:
                print(json.dumps({"slug": slug, "queued": False, "reason": SKIPPED_REASON}), flush=True)
        if opts.all and not reply.next:
            break
        progress.after = reply.next
        await asyncio.sleep(max(0.0, batch / rate - (time.monotonic() - start)))
    if not opts.json:
        skipped = (f"; skipped {progress.skipped} that already have a job queued or running (pixelfox jobs)"
                   if progress.skipped else "")
        print(f"queued {progress.total} image(s) for re-processing (batch lane){skipped}")
    return 0


def cmd_reprocess(opts: argparse.Namespace) -> int:
    if not opts.all and not opts.slugs:  # ValueError: main's one line and exit 2 (bad input)
        raise ValueError("reprocess: name images (SLUG...) or pass --all")
    if opts.all and opts.slugs:  # the slugs were ignored and every image queued
        raise ValueError("reprocess: name images (SLUG...) or pass --all, not both")
    if opts.after and not opts.all:
        raise ValueError("reprocess: --after goes with --all (it names where a run over all images stopped)")
    ref = context.resolve(opts.manager, opts.api_key)
    progress = _Progress(after=opts.after)
    try:
        return asyncio.run(_reprocess(ref, opts, progress))
    except KeyboardInterrupt:
        resume = ""
        if opts.all and progress.after:
            same = "".join([f" --rate {opts.rate:g}" if opts.rate != 5.0 else "",
                            f" --recipe {opts.recipe}" if opts.recipe else "", " --gpu" if opts.gpu else ""])
            resume = f"; go on with: pixelfox reprocess --all{same} --after {progress.after}"
        print(f"interrupted after queueing {progress.total} image(s){resume}", file=sys.stderr)
        return 130


@dataclass
class _Progress:
    """What a ``reprocess`` run has done so far: images queued, images skipped (a job for them was
    already live), and with ``--all`` the last image id looked at."""

    total: int = 0
    skipped: int = 0
    after: str = ""


RATE = decimal_number(0.1, 1000, "number of images per second")
"""``reprocess --rate``: at most 1000, the most the manager queues per call."""


def cmd_jobs_discard(opts: argparse.Namespace) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    reply = asyncio.run(_call(ref, "DiscardJob", jobs_pb2.DiscardJobRequest(job_id=opts.id)))
    if ids.ENTRY_ID.fullmatch(opts.id):
        print(f"discarded dead-letter job {opts.id}")
    else:
        print(f"discarded {reply.discarded} dead-letter job(s) of image {opts.id}")
    return 0


def add_commands(sub: Any, with_target: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Add ``jobs`` (list, ``retry ID``, ``discard ID``) and ``reprocess`` to the ``pixelfox`` parser."""
    jobs = with_target(sub.add_parser("jobs", help="list queued, running, delayed and dead jobs"))
    jobs.add_argument("--state", action="append", choices=sorted(STATES), help="only these states (repeatable)")
    jobs.add_argument("--limit", type=whole_number(1, 1000), default=100, help="rows per state (default 100)")
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=cmd_jobs)
    jsub = jobs.add_subparsers(dest="jobs_cmd")
    retry = with_target(jsub.add_parser("retry", help="queue a dead job again (dead-letter ID or image slug)"))
    retry.add_argument("id")
    retry.add_argument("--json", action="store_true")
    retry.set_defaults(func=cmd_jobs_retry)
    discard = with_target(jsub.add_parser(
        "discard", help="remove a dead job without running it (dead-letter ID, or an image slug: all of its)"))
    discard.add_argument("id")
    discard.set_defaults(func=cmd_jobs_discard)

    rp = with_target(sub.add_parser("reprocess", help="re-run variant generation (batch priority, rate-limited)"))
    rp.add_argument("slugs", nargs="*", metavar="SLUG")
    rp.add_argument("--all", action="store_true", help="every ready image")
    rp.add_argument("--rate", type=RATE, default=5.0, help="images queued per second, 0.1 to 1000 (default 5)")
    rp.add_argument("--recipe", type=POSITIVE, default=0, help="recipe version (default: the manager's)")
    rp.add_argument("--after", default="", type=row_id, metavar="IMAGE_ID",
                    help="with --all: go on after this image id (an interrupted run prints it)")
    rp.add_argument("--gpu", action="store_true", help="run them on GPU-capable processing nodes only")
    rp.add_argument("--json", action="store_true", help="one JSON line per queued image")
    rp.set_defaults(func=cmd_reprocess)
