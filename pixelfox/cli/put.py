"""``pixelfox put``: upload files over gRPC with a progress bar, optionally wait until ready."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from pixelfox import errors
from pixelfox.cli.context import UNREACHABLE_HINT, ClusterRef
from pixelfox.client.images import owner_image_json, rejected_json, status_name
from pixelfox.client.journal import Journal, epoch
from pixelfox.client.resume import Resume
from pixelfox.client.stall import NO_NODE_S
from pixelfox.client.uploader import upload_file
from pixelfox.grpcx.client import channel, connect_failure, map_rpc_errors
from pixelfox.text import escaped_controls, human_bytes
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc, upload_pb2

#: images ``put --wait`` waits for at once while it uploads the next files
MAX_WAITING = 16


#: seconds between two ``GetImage`` calls of :func:`wait_image` while the manager does not answer
UNANSWERED_POLL_S = 1.0


async def wait_image(
    stub: manager_pb2_grpc.ManagerServiceStub, md: Any, slug: str, timeout_s: float,
    known: common_pb2.Image | None = None,
) -> common_pb2.Image:
    """Poll ``GetImage`` every 0.25 s until the image is ready or failed, or ``timeout_s`` passes.

    A manager that does not answer (``Unavailable``, ``Timeout``: restarting, as ``pixelfox up`` restarts a
    manager that died) is asked again every :data:`UNANSWERED_POLL_S` until ``timeout_s``; then ``known``
    (the upload's answer: the image, still processing) is returned, or that error raised without it. The
    image was stored: a put that reported it "rejected" here, with no id, had a manager restart to blame."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with map_rpc_errors():
                img = await stub.GetImage(manager_pb2.GetImageRequest(slug=slug), metadata=md, timeout=10)
        except (errors.Unavailable, errors.Timeout):
            if time.monotonic() > deadline:
                if known is None:
                    raise
                return known
            await asyncio.sleep(UNANSWERED_POLL_S)
            continue
        if status_name(img) != "processing" or time.monotonic() > deadline:
            return img
        await asyncio.sleep(0.25)


def _check_file(path: Path) -> None:
    """Raise BadRequest for a folder, a device/pipe, a symlink loop (ELOOP; it said "no such file") or a
    file this user may not read (it ended the whole run with exit 1), NotFound for a missing file (naming
    the missing target of a dangling symlink): each the caller's error (exit 2, :func:`exit_status`)."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISREG(mode):
            os.close(os.open(path, os.O_RDONLY))
    except FileNotFoundError:
        if path.is_symlink():  # the link is there; what it names is not
            raise errors.NotFound(f"{path} is a symlink to {os.readlink(path)}, which does not exist") from None
        if str(path) == "-":  # the usual "standard input" of Unix tools
            raise errors.NotFound("no such file: - (put sends files, not standard input: it needs the size "
                                  "first and resumes from the file; save what the pipe sends to a file and put "
                                  "that)") from None
        raise errors.NotFound(f"no such file: {path}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise errors.BadRequest(f"{path} is a symlink loop (ELOOP): a link in it leads back to itself; "
                                    "point it at a file") from None
        raise errors.BadRequest(f"{path} cannot be read ({exc.strerror}): check its permissions") from None
    if stat.S_ISDIR(mode):
        raise errors.BadRequest(f"{path} is a folder: pass the files in it ({path}/*)")
    if not stat.S_ISREG(mode):
        raise errors.BadRequest(f"{path} is not a regular file (a device or a pipe)")


async def unreachable_manager(failed: errors.PixelfoxError, ch: grpc.aio.Channel,
                              ref: ClusterRef) -> errors.Unavailable | None:
    """After a file ``failed`` with ``Unavailable``: whether ``ref``'s manager (``ch``) can be reached at all,
    by one gRPC health check (any answer will do). ``Unavailable("cannot reach the manager at ADDRESS
    (CAUSE); start it with ...")`` when no connection can be made (the whole run's error: every other
    file would fail the same way), else ``None`` (a problem of that file, or of an upload node; any
    other error of the file: no check)."""
    if not isinstance(failed, errors.Unavailable):
        return None
    try:
        async with map_rpc_errors(f"the manager at {ref.manager}", UNREACHABLE_HINT):
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    except errors.Unavailable as exc:
        cause = exc.__cause__
        if isinstance(cause, grpc.aio.AioRpcError) and connect_failure(cause)[0]:
            return exc
    except errors.PixelfoxError:
        pass
    return None


def no_node_line(path: Path, retry_s: float, why: str = "") -> str:
    """What ``pixelfox put`` says on stderr the moment no upload node answers ``path``'s upload: why (``why``,
    the manager's words when it said no upload node takes uploads, e.g. every one in maintenance; else "no
    upload node answers") and that it keeps trying for ``retry_s`` seconds (``--retry-for``), then stops it
    (``paused``, resumed by the same command); ``retry_s`` 0: that it does not retry."""
    why = why.removesuffix("; try again later") or "no upload node answers"
    if retry_s <= 0:
        return f"{path}: {why}; not retrying (--retry-for 0)"
    return f"{path}: {why}; retrying for up to {retry_s:g} s (Ctrl-C to stop; the same command resumes later)"


def _emit_answered(waiting: list[asyncio.Future[dict[str, Any]]], emit: Callable[[dict[str, Any]], None]) -> None:
    """``emit`` the results of the futures at the head of ``waiting`` that are done, up to the first that
    is not (taken out of ``waiting``)."""
    while waiting and waiting[0].done():
        emit(waiting.pop(0).result())


def shown(text: Any) -> str:
    """``text`` (:func:`~pixelfox.text.escaped_controls`: one line) fit for a rich markup line: ``[``
    escaped, so a name such as ``a[/]b.png`` is printed as it is (it was read as markup: a MarkupError
    traceback, or ``[bold]x[/bold].png`` printed as ``x.png``)."""
    return escape(escaped_controls(str(text)))


def _say(out: dict[str, Any], as_json: bool, console: Console, flags: str = "", waited_s: float | None = None
         ) -> None:
    """Print one file's result: its ``put --json`` line, or a line for people on ``console``; a refusal
    with a CLI hint (:func:`refusal_hint`, its commands ending with ``flags``) adds it on ``console``, and
    so does an image still processing after a ``--wait`` of ``waited_s`` seconds (even under --json)."""
    hint = refusal_hint(out["error"]["code"], flags) if out["status"] == "rejected" else ""
    if as_json:
        print(json.dumps(out), flush=True)
    elif out["status"] in ("rejected", "paused"):
        console.print(f"[red]✗[/] {shown(out['file'])}: {shown(out['error']['message'])}")
    elif out["status"] in ("failed", "lost"):
        console.print(f"[red]✗[/] {shown(out['file'])}: {shown(out['error']['message'])} ({shown(out['url'])})")
    else:
        mark = "[green]✓[/]" if out["status"] == "ready" else "[yellow]…[/]"
        again = "  [dim](already uploaded: the existing image, unchanged)[/]" if out["deduplicated"] else ""
        private = ", private" if out.get("visibility") == "private" else ""
        console.print(f"{mark} {shown(out['file'])} → {shown(out['url'])}  [dim]{out['status']}{private}[/]{again}")
        if console.stderr and not sys.stdout.isatty():  # URL=$(pixelfox put x.png) gets the link
            print(out["url"], flush=True)
        if out.get("deletion_url"):  # an anonymous upload: the only way to delete it
            console.print(f"  delete: {shown(out['deletion_url'])}  [dim](keep this link: the only way to delete "
                          "this anonymous upload)[/]", highlight=False)
    if hint:
        console.print(hint, markup=False, highlight=False)
    if waited_s is not None and out["status"] == "processing":
        console.print(f"{escaped_controls(out['file'])}: still processing after {waited_s:g} s; its link works once "
                      "it is ready (`pixelfox jobs` shows the queue; wait longer with --timeout)",
                      markup=False, highlight=False)


class _Bar:
    """One file's line in ``put``'s progress: ``sent`` (:data:`~pixelfox.client.uploader.Progress`) moves its
    bar and records the bytes sent in ``sending`` (when given); ``no_node``
    (:data:`~pixelfox.client.stall.NoNode`) says :func:`no_node_line` on ``console`` when no upload node
    answers, and marks the bar "waiting for an upload node" until one does."""

    def __init__(self, progress: Progress, path: Path, console: Console, retry_s: float,
                 sending: dict[Path, int] | None) -> None:
        self.progress, self.path, self.console, self.retry_s, self.sending = progress, path, console, retry_s, sending
        # the bar's text is rich markup: the name escaped (shown)
        self.task = progress.add_task(shown(path.name), total=path.stat().st_size if path.is_file() else 0)

    def sent(self, n: int, _total: int) -> None:
        self.progress.update(self.task, completed=n)
        if self.sending is not None:
            self.sending[self.path] = n

    def no_node(self, lost: bool, why: str) -> None:
        name = shown(self.path.name)
        self.progress.update(self.task, description=f"{name} (waiting for an upload node)" if lost else name)
        if lost:
            self.console.print(no_node_line(self.path, self.retry_s, why), markup=False, highlight=False)


async def put_files(
    ref: ClusterRef, files: list[Path], *, as_json: bool, wait: bool, timeout_s: float, console: Console,
    title: str = "", resume: Resume | None = None, max_rate: int = 0, sending: dict[Path, int] | None = None,
    flags: str = "", retry_s: float = NO_NODE_S, visibility: str = "",
) -> list[dict[str, Any]]:
    """Upload ``files`` in order, each new image titled ``title`` and, with ``visibility`` ``private``
    (``--private``), private (a file the user already has as a public image then makes a private image of its
    own: :func:`~pixelfox.client.uploader.upload_file`); returns one JSON object per file
    (``put --json`` lines: the image, plus ``deduplicated``, true when the user already had those
    bytes and got that image back unchanged, ``title`` not applied, and ``deletion_url``, an anonymous
    upload's deletion link, else ``""``), printed and returned in the order of ``files``.

    With ``wait``, the wait for an image to be processed runs while the next files upload: files go
    one after the other (one upload uses the link), but their jobs are processed side by side on
    every processing node's workers. Waiting for each image before uploading the next kept all but
    one worker of the cluster idle (12 photos: one job at a time). At most :data:`MAX_WAITING` images
    are waited for at once (each polls ``GetImage`` 4 times a second): past that, the oldest is waited
    for before the next file goes. ``flags`` (the ``--manager`` / ``--api-key`` given) end the commands of
    a refusal's hint (:func:`refusal_hint`).

    A manager that cannot be reached at all (:func:`unreachable_manager`, asked after a file's
    ``Unavailable``) ends the run: that ``Unavailable`` is raised, naming the manager's address, and the
    files after it are not tried (each said "cannot reach ..." in turn).

    With ``wait``, an image still processing when ``timeout_s`` (seconds) runs out keeps status
    ``processing`` and gets a ``FILE: still processing after N s; ...`` line on ``console``.

    When no upload node answers a file's upload (every one killed, stopped or cut off, or the manager says
    none takes uploads: all in maintenance), a line says so at once on ``console`` (:func:`no_node_line`,
    with the manager's words when it gave them) and its progress bar reads "waiting for an upload node"; the
    upload goes on when one answers within ``retry_s`` seconds, else the file ends ``paused`` (its journal
    entry kept: the same command resumes it) with the bytes the server holds, or ``rejected`` with the
    manager's ``no-node-available`` when its upload had not started."""
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
        _say(out, as_json, console, flags, timeout_s if wait else None)

    async with channel(ref.manager) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)

        async def finish(path: Path, receipt: upload_pb2.UploadReceipt) -> dict[str, Any]:
            try:
                img = (await wait_image(stub, md, receipt.image.slug, timeout_s, receipt.image) if wait
                       else receipt.image)
            except errors.PixelfoxError as exc:
                return rejected_json(str(path), exc.code, exc.message)
            return {"file": str(path), **owner_image_json(img), "deduplicated": receipt.deduplicated,
                    "deletion_url": receipt.deletion_url}

        waiting: list[asyncio.Future[dict[str, Any]]] = []  # in the order of files
        try:
            with progress:
                for path in files:
                    bar = _Bar(progress, path, console, retry_s, sending)
                    try:
                        _check_file(path)
                        if sending is not None:
                            sending[path] = 0
                        receipt = await upload_file(stub, md, path, progress=bar.sent, title=title,
                                                    visibility=visibility, resume=resume,
                                                    max_rate=max_rate, no_node_s=retry_s, no_node=bar.no_node,
                                                    wait_for_node=True,
                                                    max_stall_s=max(60.0, retry_s))
                        waiting.append(asyncio.ensure_future(finish(path, receipt)))
                    except errors.PixelfoxError as exc:
                        if whole := await unreachable_manager(exc, ch, ref):  # no other file is tried
                            _emit_answered(waiting, emit)  # the files sent before that have their answer
                            raise whole from exc
                        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                        done.set_result(rejected_json(str(path), exc.code, exc.message,
                                                      "paused" if _kept(exc, path, resume, md) else "rejected"))
                        waiting.append(done)
                    if sending is not None:
                        sending.pop(path, None)
                    progress.remove_task(bar.task)
                    while waiting and (waiting[0].done() or len(waiting) >= MAX_WAITING):
                        emit(await waiting.pop(0))  # in order; at most MAX_WAITING images polled at once
            while waiting:
                emit(await waiting.pop(0))
        finally:  # interrupted (Ctrl-C during `pixelfox up --import`): no wait is left running
            for fut in waiting:
                fut.cancel()
    return results


def _kept(exc: errors.PixelfoxError, path: Path, resume: Resume | None, md: Any) -> bool:
    """Whether ``path``'s upload stopped on the way for a cluster that did not answer (Unavailable, Timeout)
    and its journal entry is kept: the same command resumes it (``put --json`` status ``paused``, not a
    refusal of the file)."""
    if not isinstance(exc, (errors.Unavailable, errors.Timeout)) or resume is None:
        return False
    try:
        return resume.journal.get(resume.key(path, md)) is not None
    except OSError:
        return False


def interrupted_line(path: Path, sent: int, resume: Resume | None, md: Any, flags: str = "") -> str:
    """What ``pixelfox put`` says of a file it was sending when Ctrl-C came: how much went, until when the
    same command resumes it and how to cancel it (its journal entry), or that nothing is kept. ``flags``
    ends the cancel command: the ``--manager`` / ``--api-key`` put was given
    (:func:`pixelfox.cli.context.target_flags`)."""
    try:
        size = path.stat().st_size
        entry = resume.journal.get(resume.key(path, md)) if resume else None
    except OSError:  # the file went away meanwhile
        return f"interrupted: {path} {human_bytes(sent)} sent; the file is gone: nothing to resume"
    said = f"interrupted: {path} {human_bytes(sent)} of {human_bytes(size)} sent"
    if entry is None:
        return f"{said}; nothing to resume: the next run starts it again"
    # an owner renews the ticket (RenewUpload) while the upload's state lives: state_ttl_s after the bytes
    # just sent; an anonymous upload (no credential) ends with its ticket
    end = min(time.time() + entry.state_ttl_s, entry.alive_until()) if md and entry.state_ttl_s else \
        epoch(entry.expires_at)
    until = datetime.fromtimestamp(end, UTC)
    when = until.strftime("%H:%M UTC" if until.date() == datetime.now(UTC).date() else "%Y-%m-%d %H:%M UTC")
    return (f"{said}; run the same command again before {when} to resume, "
            f"or cancel it: pixelfox uploads cancel {entry.upload_id}{flags}")


def journal_for(ref: ClusterRef, console: Console, lookup: bool = True, flags: str = "") -> Resume:
    """The upload journal of ``ref``'s manager (:class:`~pixelfox.client.resume.Resume`), saying on
    ``console`` each file whose upload of an earlier run goes on, and each upload of an earlier run
    cancelled because its file changed since (a warning with the cancel command, ending with ``flags``,
    when it could not be); ``lookup=False``: ``--no-resume`` (each upload of an earlier run of a file is
    cancelled, said the same way)."""

    def resumed(path: Path, upload_id: str, offset: int) -> None:
        console.print(f"resuming {path} (upload {upload_id}): {human_bytes(offset)} already sent", markup=False,
                      highlight=False)

    def cancelled(path: Path, upload_id: str, problem: str) -> None:
        why = f"{path} changed since upload {upload_id} of it began" if lookup else \
            f"--no-resume: {path} replaces its upload {upload_id} of an earlier run"
        line = (f"{why}: cancelled it, sending the file afresh" if not problem else
                f"warning: {why}, which could not be cancelled ({problem}); sending the file afresh; "
                f"cancel it: pixelfox uploads cancel {upload_id}{flags}")
        console.print(line, markup=False, highlight=False)

    return Resume(Journal(), ref.manager, resumed, lookup=lookup, cancelled=cancelled)


def refusal_hint(code: str, flags: str = "") -> str:
    """A line for CLI users after a refusal of ``code`` that names what to run ("" for none): the server's
    message on ``too-many-open-uploads`` speaks HTTP (``GET /api/v1/uploads``) to every client."""
    if code == errors.TooManyOpenUploads.code:
        return (f"hint: list your unfinished uploads with `pixelfox uploads{flags}`, cancel one with "
                f"`pixelfox uploads cancel ID{flags}`")
    return ""


def run(ref: ClusterRef, files: list[str], as_json: bool, wait: bool, timeout_s: float, title: str = "",
        resume: bool = True, max_rate: int = 0, flags: str = "", key_hint: Callable[[str], str] | None = None,
        retry_s: float = NO_NODE_S, visibility: str = "") -> int:
    """``pixelfox put``: 0 when every file ended ready (or processing, without ``wait``), else 2 or 1
    (:func:`exit_status`), 130 after Ctrl-C, with a line on stderr for the file it was sending
    (:func:`interrupted_line`).
    Unfinished uploads are kept in the journal (:class:`~pixelfox.client.journal.Journal`): the same
    command goes on where it stopped; ``resume=False`` starts every file afresh (and still records it).
    ``flags`` (the ``--manager`` / ``--api-key`` put was given) end the cancel command that line prints;
    ``key_hint(code)`` is said once on stderr (unless "") when a file was refused as unauthenticated
    or as an account disabled, ``code`` being that refusal's (:func:`pixelfox.cli.context.local_key_hint`).
    ``retry_s`` (``--retry-for``): how long a file's upload waits for an upload node once none answers
    (:func:`put_files`). ``visibility`` ``private`` (``--private``) makes each new image private."""
    console = Console(stderr=True, soft_wrap=True)
    journal = journal_for(ref, console, lookup=resume, flags=flags)
    sending: dict[Path, int] = {}
    try:
        results = asyncio.run(put_files(ref, [Path(f) for f in files], as_json=as_json, wait=wait,
                                        timeout_s=timeout_s, console=console, title=title, resume=journal,
                                        max_rate=max_rate, sending=sending, flags=flags, retry_s=retry_s,
                                        visibility=visibility))
    except KeyboardInterrupt:
        for path, sent in sending.items():
            print(interrupted_line(path, sent, journal, ref.metadata(), flags), file=sys.stderr, flush=True)
        return 130
    refused = next((r["error"]["code"] for r in results if r["status"] == "rejected" and r["error"]["code"] in (
        errors.Unauthenticated.code, errors.AccountDisabled.code)), None)
    if key_hint and refused and (hint := key_hint(refused)):
        print(hint, file=sys.stderr, flush=True)
    return exit_status(results, wait)


def exit_status(results: list[dict[str, Any]], wait: bool) -> int:
    """``pixelfox put``'s exit status for its ``results`` (:func:`put_files`): 0 when every file ended
    ready (or processing, without ``wait``); 2 when each file that did not was refused for the caller's fault
    (a missing, unreadable or special file, a symlink loop, bytes that are no image, a wrong API key:
    :data:`pixelfox.errors.CALLER_STATUSES`), as for a usage error; else 1 (the cluster's: a processing that
    failed, a file still processing after the wait, an upload paused, a cluster that did not answer)."""
    good = {"ready"} if wait else {"ready", "processing"}
    bad = [r for r in results if r["status"] not in good]
    if not bad:
        return 0
    return 2 if all(r["status"] == "rejected" and errors.exit_status_of(r["error"]["code"]) == 2 for r in bad) else 1
