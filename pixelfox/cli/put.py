"""``pixelfox put``: upload files over gRPC with a progress bar, optionally wait until ready."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from pixelfox import errors
from pixelfox.cli.context import ClusterRef
from pixelfox.client.images import owner_image_json, rejected_json, status_name
from pixelfox.client.uploader import upload_file
from pixelfox.grpcx.client import channel, map_rpc_errors
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc, upload_pb2

#: images ``put --wait`` waits for at once while it uploads the next files
MAX_WAITING = 16


async def wait_image(
    stub: manager_pb2_grpc.ManagerServiceStub, md: Any, slug: str, timeout_s: float
) -> common_pb2.Image:
    """Poll ``GetImage`` every 0.25 s until the image is ready or failed, or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with map_rpc_errors():
            img = await stub.GetImage(manager_pb2.GetImageRequest(slug=slug), metadata=md, timeout=10)
        if status_name(img) != "processing" or time.monotonic() > deadline:
            return img
        await asyncio.sleep(0.25)


def _check_file(path: Path) -> None:
    """Raise BadRequest for a folder or a device/pipe, NotFound for a missing file."""
    if path.is_dir():
        raise errors.BadRequest(f"{path} is a folder: pass the files in it ({path}/*)")
    if path.exists() and not path.is_file():
        raise errors.BadRequest(f"{path} is not a regular file (a device or a pipe)")
    if not path.is_file():
        raise errors.NotFound(f"no such file: {path}")


def _say(out: dict[str, Any], as_json: bool, console: Console) -> None:
    """Print one file's result: its ``put --json`` line, or a line for people on ``console``."""
    if as_json:
        print(json.dumps(out), flush=True)
    elif out["status"] == "rejected":
        console.print(f"[red]✗[/] {out['file']}: {out['error']['message']}")
    elif out["status"] == "failed":
        console.print(f"[red]✗[/] {out['file']}: {out['error']['message']} ({out['url']})")
    else:
        mark = "[green]✓[/]" if out["status"] == "ready" else "[yellow]…[/]"
        again = "  [dim](already uploaded: the existing image, unchanged)[/]" if out["deduplicated"] else ""
        console.print(f"{mark} {out['file']} → {out['url']}  [dim]{out['status']}[/]{again}")
        if console.stderr and not sys.stdout.isatty():  # URL=$(pixelfox put x.png) gets the link
            print(out["url"], flush=True)


async def put_files(
    ref: ClusterRef, files: list[Path], *, as_json: bool, wait: bool, timeout_s: float, console: Console,
    title: str = "",
) -> list[dict[str, Any]]:
    """Upload ``files`` in order, each new image titled ``title``; returns one JSON object per file
    (``put --json`` lines: the image, plus ``deduplicated``, true when the user already had those
    bytes and got that image back unchanged, ``title`` not applied), printed and returned in the
    order of ``files``.

    With ``wait``, the wait for an image to be processed runs while the next files upload: files go
    one after the other (one upload uses the link), but their jobs are processed side by side on
    every processing node's workers. Waiting for each image before uploading the next kept all but
    one worker of the cluster idle (12 photos: one job at a time). At most :data:`MAX_WAITING` images
    are waited for at once (each polls ``GetImage`` 4 times a second): past that, the oldest is waited
    for before the next file goes."""
    md = ref.metadata()
    results: list[dict[str, Any]] = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )

    def emit(out: dict[str, Any]) -> None:
        results.append(out)
        _say(out, as_json, console)

    async with channel(ref.manager) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)

        async def finish(path: Path, receipt: upload_pb2.UploadReceipt) -> dict[str, Any]:
            try:
                img = await wait_image(stub, md, receipt.image.slug, timeout_s) if wait else receipt.image
            except errors.PixelfoxError as exc:
                return rejected_json(str(path), exc.code, exc.message)
            return {"file": str(path), **owner_image_json(img), "deduplicated": receipt.deduplicated}

        waiting: list[asyncio.Future[dict[str, Any]]] = []  # in the order of files
        try:
            with progress:
                for path in files:
                    task = progress.add_task(path.name, total=path.stat().st_size if path.is_file() else 0)
                    try:
                        _check_file(path)
                        receipt = await upload_file(
                            stub, md, path, progress=lambda n, _t, t=task: progress.update(t, completed=n),
                            title=title)
                        waiting.append(asyncio.ensure_future(finish(path, receipt)))
                    except errors.PixelfoxError as exc:
                        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                        done.set_result(rejected_json(str(path), exc.code, exc.message))
                        waiting.append(done)
                    progress.remove_task(task)
                    while waiting and (waiting[0].done() or len(waiting) >= MAX_WAITING):
                        emit(await waiting.pop(0))  # in order; at most MAX_WAITING images polled at once
            while waiting:
                emit(await waiting.pop(0))
        finally:  # interrupted (Ctrl-C during `pixelfox up --import`): no wait is left running
            for fut in waiting:
                fut.cancel()
    return results


def run(ref: ClusterRef, files: list[str], as_json: bool, wait: bool, timeout_s: float, title: str = "") -> int:
    console = Console(stderr=True, soft_wrap=True)
    results = asyncio.run(put_files(ref, [Path(f) for f in files], as_json=as_json, wait=wait, timeout_s=timeout_s,
                                    console=console, title=title))
    good = {"ready"} if wait else {"ready", "processing"}
    return 0 if all(r["status"] in good for r in results) else 1
