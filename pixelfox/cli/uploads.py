"""``pixelfox uploads`` (the caller's unfinished resumable uploads: open, or paused until renewed) and
``pixelfox uploads cancel ID``.

They act for the user of the API key (``--api-key``, or the local admin's in a ``pixelfox up``
folder), as ``GET`` and ``DELETE /api/v1/uploads/<id>`` do on the web: an upload past the
open-upload limit is refused until one of these completes or is cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from rich.table import Table

from pixelfox import errors
from pixelfox.cli import context
from pixelfox.cli.argtypes import upload_id
from pixelfox.cli.tables import table_console
from pixelfox.client.images import upload_progress_json
from pixelfox.text import human_bytes
from pixelfox.uploadstate import nothing_to_cancel
from pixelfox.v1 import manager_pb2, manager_pb2_grpc


def upload_row(p: manager_pb2.UploadProgress) -> dict[str, Any]:
    """One open or paused upload as a JSON-ready dict (``pixelfox uploads --json``): the same fields as
    ``GET /api/v1/uploads/<id>`` (:func:`pixelfox.client.images.upload_progress_json`)."""
    return upload_progress_json(p)


async def _list(ref: context.ClusterRef) -> list[manager_pb2.UploadProgress]:
    async with context.manager_channel(ref) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        reply = await stub.ListUploads(manager_pb2.ListUploadsRequest(), metadata=ref.metadata(), timeout=30)
    return list(reply.uploads)


async def _cancel(ref: context.ClusterRef, upload_id: str) -> None:
    """Cancel ``upload_id``; Conflict when it was no longer open, NotFound for an unknown or another's."""
    async with context.manager_channel(ref) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        md = ref.metadata()
        reply = await stub.AbandonUpload(manager_pb2.AbandonUploadRequest(upload_id=upload_id), metadata=md,
                                         timeout=30)
        if not reply.abandoned:
            p = await stub.GetUpload(manager_pb2.GetUploadRequest(upload_id=upload_id), metadata=md, timeout=30)
            raise errors.Conflict(nothing_to_cancel(p.status))


def cmd_uploads(opts: argparse.Namespace) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    rows = [upload_row(p) for p in asyncio.run(_list(ref))]
    if opts.json:
        print(json.dumps({"uploads": rows}, indent=2))
        return 0
    table = Table("id", "filename", "status", "received", "expires")
    for r in rows:
        table.add_row(r["id"], r["filename"], r["status"], f"{human_bytes(r['offset'])} of {human_bytes(r['size'])}",
                      r["expires_at"] or "")
    table_console().print(table if rows else "no open uploads")
    if any(r["status"] == "paused" for r in rows):
        table_console().print("paused: its ticket ended; it resumes once its ticket is renewed (the same "
                              "`pixelfox put` does that) until it expires")
    return 0


def cmd_uploads_cancel(opts: argparse.Namespace) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    asyncio.run(_cancel(ref, opts.id))  # upper case (argtypes.upload_id): ULIDs are case-insensitive
    print(f"cancelled upload {opts.id}")
    return 0


def add_commands(sub: Any, with_target: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Add ``uploads`` (list) and ``uploads cancel ID`` to the ``pixelfox`` parser."""
    up = with_target(sub.add_parser("uploads", help="list your unfinished resumable uploads (open or paused)"))
    up.add_argument("--json", action="store_true")
    up.set_defaults(func=cmd_uploads)
    usub = up.add_subparsers(dest="uploads_cmd")
    cancel = with_target(usub.add_parser("cancel", help="cancel an open upload (its ticket is refused from then on)"))
    cancel.add_argument("id", type=upload_id)
    cancel.set_defaults(func=cmd_uploads_cancel)
