"""Entry point of the ``pixelfox`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import functools
import getpass
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from pixelfox import errors
from pixelfox.cli import context, down, launcher, leftovers, ops, put, scrub, storage_cmds
from pixelfox.cli import jobs as jobs_cli
from pixelfox.cli import pools as pools_cli
from pixelfox.cli import uploads as uploads_cli
from pixelfox.cli import users as users_cli
from pixelfox.cli.argtypes import byte_rate, decimal_number, image_title, seconds_or_days, whole_number
from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.cli.parser import Parser, version
from pixelfox.cli.tables import table_console
from pixelfox.client.stall import NO_NODE_S
from pixelfox.config import RedisSettings
from pixelfox.idlenodes import none_takes, why_idle
from pixelfox.text import human_bytes
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc

ROLE_NAMES = {
    common_pb2.NODE_ROLE_MANAGER: "manager", common_pb2.NODE_ROLE_UPLOAD: "upload",
    common_pb2.NODE_ROLE_PROC: "proc", common_pb2.NODE_ROLE_STORAGE: "storage", common_pb2.NODE_ROLE_WEB: "web",
}
STATUS_NAMES = ops.STATUS_NAMES
#: statuses that are an operator's or the node's own choice, not a failure: ``status`` exits 0 with them
INTENDED = frozenset({"maintenance", "stopped"})
#: roles the cluster stops working without, and what stops while none of their nodes takes new work
NEEDED_ROLES = {"upload": ("upload", "takes new uploads", "uploads are refused"),
                "proc": ("processing", "takes jobs", "new images wait unprocessed"),
                "storage": ("storage", "takes new files", "uploads are refused (503)")}


def idle_roles(rows: list[dict[str, Any]]) -> list[str]:
    """``warning:`` lines of ``pixelfox status`` for each role of :data:`NEEDED_ROLES` whose listed nodes
    all take no new work (in maintenance, draining, stopped, unhealthy or not ready), naming them
    with their status: ``warning: no storage node takes new files (storage1: maintenance): uploads are
    refused (503); `pixelfox nodes maintenance ID --off` ends a node's maintenance``. Every storage node
    in maintenance used to leave status at exit 0 while every upload was refused."""
    lines = []
    for role, (name, takes, stops) in NEEDED_ROLES.items():
        nodes = [r for r in rows if r["role"] == role]
        if not nodes or any(r["health"] == "healthy" and r["ready"] and r["status"] == "active" for r in nodes):
            continue
        said = none_takes(name, takes, [(r["id"], why_idle(r["status"], r["health"])) for r in nodes])
        hint = ("; `pixelfox nodes maintenance ID --off` ends a node's maintenance"
                if any(r["status"] == "maintenance" for r in nodes) else "")
        lines.append(f"warning: {said}: {stops}{hint}")
    return lines


#: free bytes under which ``pixelfox status`` names a storage node's disk as (nearly) full: two photos of a
#: 100 MiB upload limit (PIXELFOX_LIMITS__MAX_UPLOAD_BYTES' default); a node is sent an object only when its
#: last heartbeat said it had room for it (nodes/manager/registry.py)
LOW_FREE_BYTES = 256 * 1024 * 1024
#: free bytes under which the warning says the disk is full (no photo fits)
FULL_BYTES = 1024 * 1024


def full_disks(rows: list[dict[str, Any]]) -> list[str]:
    """``warning:`` lines of ``pixelfox status`` for each live storage node with less than
    :data:`LOW_FREE_BYTES` free (its pool's disk, or an S3 pool's ``capacity_bytes`` less what it holds):
    ``warning: storage1 has 12.0 KiB free: it gets no object larger than that...``. A full disk showed only
    as under-replicated objects, and no line named it."""
    lines = []
    for r in rows:
        if r["role"] != "storage" or r["status"] != "active" or r["health"] != "healthy":
            continue
        if r["free_bytes"] < FULL_BYTES:
            lines.append(f"warning: {r['id']}'s disk is full ({human_bytes(r['free_bytes'])} free): it gets no new "
                         "object (other storage nodes take them; with none left, uploads are refused as storage "
                         "full); make room on its disk or add a storage node")
        elif r["free_bytes"] < LOW_FREE_BYTES:
            lines.append(f"warning: {r['id']} has {human_bytes(r['free_bytes'])} free: it gets no object larger "
                         "than that (other storage nodes take them; with none left, uploads are refused as "
                         "storage full); make room on its disk or add a storage node")
    return lines


# ---- up --------------------------------------------------------------------------------------

def _lock_folder(root: Path) -> Any:
    """Hold ``.pixelfox/lock`` (flock) for the life of ``pixelfox up``; refuse a second cluster in one folder."""
    state = root / context.STATE_DIR
    state.mkdir(exist_ok=True)
    fh = (state / "lock").open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        raise errors.AlreadyExists(f"a cluster is already running in this folder (pid {pid}); stop it first "
                                  "(Ctrl-C in its terminal, or `pixelfox down` in this folder)") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


async def _supervise(cluster: LocalCluster, stop: asyncio.Event, console: Console) -> int:
    """Restart a node that exits (after 1 s); give up (exit 1) when one dies 5 times within 60 s."""
    deaths: dict[str, list[float]] = {}
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        for c in [] if stop.is_set() else cluster.dead_children():
            now = time.monotonic()
            recent = [t for t in deaths.get(c.name, []) if now - t < 60] + [now]
            deaths[c.name] = recent
            console.print(f"[red]{c.name} exited with {c.proc.returncode}; see {c.log}[/]")
            if len(recent) >= 5:
                console.print(f"[red]{c.name} keeps failing; stopping the cluster[/]")
                return 1
            await asyncio.sleep(1.0)
            cluster.restart(c.name)
            cluster.record_pids()
            console.print(f"{c.name} restarted")
    return 0


async def _refuse_bad_settings(cluster: LocalCluster) -> None:
    """Refuse, before any node starts, what the nodes would refuse at their start, in one line each:
    a manager or web node setting those nodes would refuse, named by its variable (BadRequest), a heartbeat
    interval too long for the node timeout (BadRequest; every node gets this process' environment,
    so both values are known here), then a database URL the managers cannot use, a SQLite folder
    that does not exist, or a database that does not answer (BadRequest, Unavailable). Says so
    when a SQLite database is new (a typo in its file name must not go unseen)."""
    from nodes.manager.config import ManagerSettings  # here: other commands need not import SQLAlchemy
    from nodes.manager.registry import check_heartbeat
    from pixelfox.cli.setting_names import warn_unknown_settings
    from pixelfox.config import read_settings
    from pixelfox.db.checks import check_database
    from web.config import WebSettings

    warn_unknown_settings(os.environ)  # a misspelled name would be ignored by every node
    settings = read_settings(ManagerSettings)
    read_settings(WebSettings)  # the web nodes' own settings (PIXELFOX_TRUSTED_PROXIES), refused as theirs
    check_heartbeat(settings.cluster.heartbeat_interval_s, settings.node_timeout_s)
    await _check_external_redis(cluster.redis_url, settings.redis)
    url, note = context.choose_database_url(cluster.state, os.environ.get("PIXELFOX_DATABASE__URL", ""))
    if note:  # the database recorded by the last start, or an environment that names another one
        print(note, file=sys.stderr, flush=True)
    if new := await check_database(url):
        print(f"new SQLite database at {new}", file=sys.stderr, flush=True)


async def _check_external_redis(flag_url: str, env: RedisSettings) -> None:
    """An external Redis (``--redis-url``, else ``PIXELFOX_REDIS__URL``) must be a Redis URL (BadRequest
    naming the flag) that answers a PING (Unavailable naming the URL, password hidden): the nodes would
    otherwise wait for it until ``up`` gave up. Nothing to check when ``up`` starts its own."""
    from pixelfox import redisx

    if not flag_url and "PIXELFOX_REDIS__URL" not in os.environ:
        return
    where = "--redis-url" if flag_url else "PIXELFOX_REDIS__URL"
    try:
        settings = env.model_copy(update={"url": RedisSettings(url=flag_url).url}) if flag_url else env
    except ValidationError as exc:
        raise errors.BadRequest(f"--redis-url: {exc.errors()[0]['ctx']['error']}") from None
    try:
        await redisx.ping(settings)
    except errors.Unavailable as exc:
        raise errors.Unavailable(f"{where}: {exc.message}") from None


def import_list(folder: Path) -> tuple[list[Path], int, int, int]:
    """What ``up --import`` uploads from ``folder``: every file in it and its subfolders (a camera's
    ``DCIM/100XXX``), sorted by path; how many hidden entries (a name starting with ".": a
    ``.thumbnails`` cache, ``.DS_Store``) were left out; how many subfolders could not be read
    (a USB stick's root-only ``lost+found``), also left out; and how many other entries were left out:
    symlinked folders (not followed: no loops), and what is not a file (a dangling or looping symlink,
    a pipe, a device), which used to be left out without a word. A symlink to a file counts as that file.
    Raises OSError if ``folder`` itself cannot be read."""
    files: list[Path] = []
    hidden = other = 0
    unreadable: list[OSError] = []
    os.listdir(folder)  # the folder itself must be readable: its error is the user's answer
    for top, dirs, names in os.walk(folder, onerror=unreadable.append):
        hidden += sum(d.startswith(".") for d in dirs) + sum(n.startswith(".") for n in names)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        other += sum(Path(top, d).is_symlink() for d in dirs)  # os.walk does not go into them
        found = [Path(top, n) for n in names if not n.startswith(".")]
        kept = [p for p in found if p.is_file()]
        files += kept
        other += len(found) - len(kept)
    return sorted(files), hidden, len(unreadable), other


def import_totals(results: list[dict[str, Any]]) -> tuple[str, int]:
    """The totals line of ``up --import`` for ``put.put_files``' results ("import: 5 files, 2 imported,
    1 already uploaded, 2 refused"; a file whose upload stopped on the way, ``paused``, and one still processing
    after the wait are counted as such; an existing image whose files are lost counts as refused) and how many files
    did not end ready (refused by the upload, failed processing, lost, paused, or still processing)."""
    new = sum(1 for r in results if r["status"] == "ready" and not r.get("deduplicated"))
    dup = sum(1 for r in results if r["status"] == "ready" and r.get("deduplicated"))
    refused = sum(1 for r in results if r["status"] in ("rejected", "failed", "lost"))
    paused = sum(1 for r in results if r["status"] == "paused")
    waiting = len(results) - new - dup - refused - paused
    parts = [f"{len(results)} files", f"{new} imported", f"{dup} already uploaded", f"{refused} refused"]
    parts += [f"{paused} paused (the next import resumes them)"] if paused else []
    parts += [f"{waiting} still processing"] if waiting else []
    return "import: " + ", ".join(parts), refused + paused + waiting


async def _import(cluster: LocalCluster, admin_key: str, files: list[Path], stop: asyncio.Event,
                  console: Console) -> int:
    """``up --import``: upload ``files`` as the admin, as ``pixelfox put --wait`` would (resuming from its
    journal), then print the totals (:func:`import_totals`) and ``import done``; Ctrl-C (``stop``) ends it
    with put's ``interrupted:`` line per file under way, and a manager that cannot be reached with
    ``import stopped: cannot reach the manager at ...``. Returns how many files did not end ready (0
    after Ctrl-C)."""
    ref = context.ClusterRef(cluster.manager_address, api_key=admin_key, web_url=cluster.web_urls[0])
    out, sending = Console(soft_wrap=True), dict[Path, int]()
    resume = put.journal_for(ref, out)  # an interrupted import goes on where it stopped, as `put` does
    job = asyncio.create_task(put.put_files(ref, files, as_json=False, wait=True, timeout_s=300, console=out,
                                            resume=resume, sending=sending))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({job, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not job.done():
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
    resume.journal.release()  # `up` runs on: what it left unfinished is free for `pixelfox put`
    if job.cancelled():  # Ctrl-C during the import
        for path, sent in sending.items():
            console.print(put.interrupted_line(path, sent, resume, ref.metadata()), markup=False, highlight=False)
        console.print("import interrupted")
        return 0
    try:
        results = job.result()
    except errors.Unavailable as exc:  # the manager cannot be reached: put stops at the first file
        console.print(f"import stopped: {exc.message.split('; ')[0]}", markup=False, highlight=False)
        return len(files)
    line, not_ready = import_totals(results)
    print(line, flush=True)
    print("import done", flush=True)
    return not_ready


async def _up(opts: argparse.Namespace, console: Console) -> int:
    if opts.import_dir and not Path(opts.import_dir).is_dir():
        raise errors.BadRequest(f"--import: {opts.import_dir} is not a folder")
    if opts.exit_after_import and not opts.import_dir:  # it started the cluster and never stopped it
        raise errors.BadRequest("--exit-after-import needs --import FOLDER: without it, `up` runs until Ctrl-C")
    files: list[Path] = []
    if opts.import_dir:  # listed before anything starts: an unreadable folder stops nothing
        files, hidden, unreadable, other = import_list(Path(opts.import_dir))
        left_out = [f"{hidden} hidden files and folders (names starting with '.')"] if hidden else []
        left_out += [f"{unreadable} folders it may not read"] if unreadable else []
        left_out += [f"{other} entries that are no files (symlinked folders, broken symlinks, pipes, "
                     "devices)"] if other else []
        if left_out:
            print(f"not importing {' and '.join(left_out)} in {opts.import_dir}", file=sys.stderr, flush=True)
    os.umask(launcher.PRIVATE_UMASK)  # the database and Redis' files hold secrets: ours alone
    if launcher.private_folder(state := Path.cwd() / context.STATE_DIR):
        inside = launcher.private_tree(state)  # an older folder's files (the database at 0644)
        also = f"; {inside} files and folders in it no longer readable by others" if inside else ""
        print(f"made {state} private (mode 0700): it holds password hashes and sessions{also}",
              file=sys.stderr, flush=True)
    lock = _lock_folder(Path.cwd())
    leftovers.stop_left(Path.cwd(), sys.stderr)
    cluster = LocalCluster(Path.cwd(), Counts(opts.upload, opts.proc, opts.storage, opts.web, managers=opts.managers),
                           redis_url=opts.redis_url or "")
    storage_env, note = context.choose_storage_env(cluster.state, os.environ)
    if note:  # the S3 pools recorded by the last start, or an environment that names another backend
        print(note, file=sys.stderr, flush=True)
    os.environ.update(storage_env)  # every node's environment is this process' own
    await _refuse_bad_settings(cluster)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: its terminal was closed
        loop.add_signal_handler(sig, stop.set)
    try:
        cluster.start()
        with console.status("starting the cluster..."):
            nodes = await cluster.wait_ready(opts.timeout)
            admin_key = await cluster.ensure_admin()
        for node_id in cluster.in_maintenance(nodes):
            console.print(f"[yellow]{node_id} is in maintenance (kept from before): it takes no new work until "
                          f"`pixelfox nodes maintenance {node_id} --off`[/]")
        cluster.write_state(admin_key)
        print(f"web: {cluster.web_urls[0]}", flush=True)
        if await cluster.forget_changed_password():  # the file must not point at a password that no longer works
            print(f"admin login: user admin, password changed under Settings since the first start "
                  f"(removed {cluster.admin_password_file}, which held the old one)", flush=True)
        elif cluster.admin_password_file.exists():
            print(f"admin login: user admin, password in {cluster.admin_password_file} (change it under Settings)",
                  flush=True)
        print(f"manager: {cluster.manager_address}", flush=True)
        print("ready", flush=True)
        supervisor = asyncio.create_task(_supervise(cluster, stop, console))
        not_ready = await _import(cluster, admin_key, files, stop, console) if opts.import_dir else 0
        if opts.exit_after_import:
            stop.set()
        # with --exit-after-import, a file not imported fails the command, as it fails `pixelfox put`
        return await supervisor or (1 if opts.exit_after_import and not_ready else 0)
    finally:
        with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) must not keep the nodes running
            console.print("stopping the cluster...")
        began = time.monotonic()
        stopped, killed = cluster.stop()
        with contextlib.suppress(OSError):
            console.print(stopped_line(stopped, killed, time.monotonic() - began), markup=False, highlight=False)
        lock.close()


def stopped_line(stopped: int, killed: list[str], took_s: float) -> str:
    """``up``'s last line once its nodes are down: ``stopped (9 processes) in 2.4 s``, naming the ones
    that had to be killed after the grace period; the last line used to be "stopping the cluster..."."""
    line = f"stopped ({stopped} process{'es' if stopped != 1 else ''}) in {took_s:.1f} s"
    return f"{line}; killed {', '.join(killed)}: they did not stop in time" if killed else line


def cmd_up(opts: argparse.Namespace) -> int:
    return asyncio.run(_up(opts, Console(stderr=True)))


# ---- status ----------------------------------------------------------------------------------

async def _nodes(ref: context.ClusterRef) -> manager_pb2.ListNodesResponse:
    """Every node, with the storage pools' figures (:mod:`pixelfox.cli.pools`)."""
    async with context.manager_channel(ref) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        reply: manager_pb2.ListNodesResponse = await stub.ListNodes(
            manager_pb2.ListNodesRequest(with_pools=True), metadata=ref.admin_metadata(), timeout=10)
        return reply


#: statuses of a node that has stopped heartbeating or said it stopped: it is not live, so never ``ready``
NOT_LIVE = frozenset({"stopped", "inactive"})


def node_row(n: common_pb2.Node) -> dict[str, Any]:
    """One node of ``ListNodes`` as a ``pixelfox status --json`` row (a dict of str, bool, int, float).
    ``ready`` is True only for a live node (not ``stopped`` nor ``inactive``) whose last heartbeat said
    ready: it used to stay True for a SIGTERMed or frozen node (the last heartbeat's word), so a script
    trusted a dead node. ``health`` is the manager's: "healthy" means it takes new work."""
    status = STATUS_NAMES.get(n.status, "?")
    return {
        "role": ROLE_NAMES.get(n.role, "?"), "id": n.node_id, "address": n.grpc_address,
        "health": "healthy" if n.healthy else "unhealthy", "ready": not n.not_ready and status not in NOT_LIVE,
        "status": status,
        "load": round(n.load, 3), "in_use": n.in_use, "capacity": n.capacity, "free_bytes": n.free_bytes,
        "last_heartbeat_age_s": round(n.last_heartbeat_age_s, 2), "http_url": n.http_url,
        "metrics_url": n.metrics_url,
    }


def health_text(row: dict[str, Any]) -> str:
    """The health column of text ``pixelfox status`` for a :func:`node_row`: "maintenance" for a node an
    admin put in maintenance (no failure; the admin page says so too; it used to read "unhealthy"), else
    its health, with " (not ready)" when a live node reports its dependencies down."""
    if row["status"] == "maintenance" and row["health"] != "healthy":
        return "maintenance"
    if row["ready"] or row["status"] in NOT_LIVE:
        return str(row["health"])
    return f"{row['health']} (not ready)"  # its dependencies are down


def cmd_status(opts: argparse.Namespace) -> int:
    """``pixelfox status``: the nodes, then the storage pools. Exits 1 when a node is unhealthy (unless in
    maintenance or stopped on purpose), no node of a needed role takes new work, or a pool has fewer serving
    storage nodes than its replica count; ``--json`` always exits 0 (read the figures)."""
    ref = context.resolve(opts.manager, opts.api_key, left_running=True)  # the nodes of a SIGKILLed `up` too
    reply = asyncio.run(_nodes(ref))
    nodes, pools = reply.nodes, pools_cli.pool_report(reply, ref.manager)
    rows = [node_row(n) for n in nodes]
    if not any(r["role"] == "manager" for r in rows):  # managers older than issue 6 do not list themselves
        rows.insert(0, {"role": "manager", "id": "manager", "address": ref.manager, "health": "healthy", "ready": True,
                        "status": "active", "load": 0.0, "in_use": 0, "capacity": 0, "free_bytes": 0,
                        "last_heartbeat_age_s": 0.0, "http_url": "", "metrics_url": ""})
    warnings = idle_roles(rows)
    said = warnings + full_disks(rows) + pools_cli.warnings(pools)
    if opts.json:  # the warning lines go to stderr as in text mode, and in "warnings" for scripts
        print(json.dumps({"nodes": rows, **pools.to_json(), "warnings": said}, indent=2))
        print("\n".join(said), file=sys.stderr, end="\n" if said else "")
        return 0
    table = Table("role", "id", "address", "health", "status", "load", "in use", "last heartbeat", "http")
    for r in rows:
        style = "" if r["health"] == "healthy" else "dim" if r["status"] in INTENDED else "red"
        health = health_text(r)
        table.add_row(r["role"], r["id"], r["address"], health, r["status"], f"{r['load']:.0%}",
                      _in_use(r), f"{r['last_heartbeat_age_s']:.1f} s ago", r["http_url"],
                      style=style)
    console = table_console()
    console.print(table)
    if pools.pools:
        console.print(pools_cli.table(pools))
    print("\n".join(said), file=sys.stderr, end="\n" if said else "")
    # a node an admin put in maintenance, or one that stopped cleanly, takes no new work on purpose: not a
    # failure, unless no node of its role is left to take it, or its pool is left short of its replicas
    failed = warnings or pools_cli.short_pools(pools)
    return 0 if not failed and all(r["health"] == "healthy" or r["status"] in INTENDED for r in rows) else 1


# ---- users / keys ------------------------------------------------------------------------------

def password_from(stdin: str) -> str:
    """The password ``--password-stdin`` reads: ``stdin``'s one line without its line break (LF, CRLF
    from a file saved on Windows, or CR). BadRequest when more lines with text follow: which one is the
    password? (Only the first was taken, silently; a CRLF file made a password ending in CR that no
    login form sends.)"""
    lines = re.split(r"\r\n|\n|\r", stdin)
    if any(line for line in lines[1:]):
        raise errors.BadRequest(f"--password-stdin reads one line, and stdin held {sum(1 for x in lines if x)}: "
                                "give the password alone")
    return lines[0]


def cmd_users_create(opts: argparse.Namespace) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    if opts.password_stdin:
        password = password_from(sys.stdin.read())
    else:
        password = getpass.getpass(f"password for {opts.name}: ")
        if password != getpass.getpass("again: "):
            raise errors.BadRequest("the passwords differ")
    user = asyncio.run(context.call_manager(ref, "CreateUser", manager_pb2.CreateUserRequest(
        name=opts.name, password=password, admin=opts.admin)))
    assert isinstance(user, manager_pb2.User)
    print(f"created {user.role} {user.name} ({user.id})")
    return 0


def cmd_keys_create(opts: argparse.Namespace) -> int:
    """``keys create NAME``: the key on stdout, how to revoke it on stderr, and a warning there when NAME
    is disabled (the key is made all the same, as the manager keeps a disabled user's keys for when they
    are enabled again; it said nothing, and the key answered "account disabled")."""
    ref = context.resolve(opts.manager, opts.api_key)
    reply = asyncio.run(context.call_manager(ref, "CreateApiKey", manager_pb2.CreateApiKeyRequest(
        user_name=opts.name, label=opts.label)))
    assert isinstance(reply, manager_pb2.CreateApiKeyResponse)
    print(reply.key)  # alone on stdout, for scripts: KEY=$(pixelfox keys create NAME)
    if reply.user_disabled:  # made all the same: a disabled user's keys are kept and work once enabled
        flags = context.target_flags(opts.manager, opts.api_key)
        print(f"warning: user {reply.user_name} is disabled, so this key is refused until you run "
              f"`pixelfox users enable {reply.user_name}{flags}`", file=sys.stderr)
    # the last line, the id last on it: a double-click or a copy up to the line's end takes it alone
    print(f"revoke this key with: pixelfox keys revoke {reply.key_id}", file=sys.stderr)
    return 0


def cmd_put(opts: argparse.Namespace) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    return put.run(ref, opts.files, as_json=opts.json, wait=opts.wait, timeout_s=opts.timeout, title=opts.title,
                   resume=not opts.no_resume, max_rate=opts.limit_rate, retry_s=opts.retry_for,
                   visibility="private" if opts.private else "",
                   flags=context.target_flags(opts.manager, opts.api_key),
                   key_hint=functools.partial(context.local_key_hint, opts.manager, opts.api_key))


# ---- parser ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="pixelfox", description="PixelFox: self-hosted image hosting that scales out")
    p.add_argument("--version", action="version", version=f"pixelfox {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_target(sp: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> argparse.ArgumentParser:
        # SUPPRESS: a subcommand's parser (``uploads cancel``, ``jobs retry``) leaves the value given to
        # its parent alone; with a None default it overwrote it, and ``pixelfox uploads --api-key K
        # cancel ID`` silently ran as the local admin. The top parser's (None) takes them before the
        # command too: ``pixelfox --manager 10.0.0.1:7070 status``
        sp.add_argument("--manager", default=default,
                        help="manager HOST:PORT (env PIXELFOX_MANAGER; default: local cluster)")
        sp.add_argument("--api-key", default=default,
                        help="API key (env PIXELFOX_API_KEY; default: local admin)")
        return sp

    with_target(p, None)

    up = sub.add_parser("up", help="run a whole local cluster on loopback until Ctrl-C")
    up.add_argument("--upload", type=NODE_COUNT, default=2, help="upload nodes (default 2)")
    up.add_argument("--proc", type=NODE_COUNT, default=2, help="processing nodes (default 2)")
    up.add_argument("--storage", type=NODE_COUNT, default=2, help="storage nodes (default 2)")
    up.add_argument("--web", type=NODE_COUNT, default=1, help="web nodes (default 1)")
    up.add_argument("--managers", type=NODE_COUNT, default=1,
                    help="managers sharing Redis and the database (default 1)")
    up.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    up.add_argument("--import", dest="import_dir", metavar="DIR",
                    help="upload every file in DIR and its subfolders once ready (hidden ones left out)")
    up.add_argument("--exit-after-import", action="store_true", help="stop the cluster once --import is done")
    up.add_argument("--timeout", type=seconds_or_days(1, "number of seconds"), default=90.0,
                    help="seconds to wait for every node (default 90)")
    up.set_defaults(func=cmd_up)

    dn = sub.add_parser("down", help="stop the cluster a `pixelfox up` runs in this folder (as its Ctrl-C would)")
    dn.add_argument("--timeout", type=seconds_or_days(1, "number of seconds"), default=down.DOWN_TIMEOUT_S,
                    help="seconds to wait for it to stop (default %(default)g)")
    dn.set_defaults(func=down.cmd_down)

    pt = with_target(sub.add_parser("put", help="upload files and print their share links"))
    pt.add_argument("files", nargs="+", metavar="FILE")
    pt.add_argument("--json", action="store_true", help="print one JSON object per file (JSON Lines)")
    pt.add_argument("--wait", action="store_true", help="wait until each image is ready or failed")
    pt.add_argument("--timeout", type=seconds_or_days(0, "number of seconds"), default=120.0,
                    help="seconds to wait per image with --wait (default: %(default)g); an image "
                         "still processing then is reported as processing, exit 1")
    pt.add_argument("--title", type=image_title, default="",
                    help="title of each new image (at most 255 characters; a file you already uploaded keeps its own)")
    pt.add_argument("--private", action="store_true",
                    help="make each new image private (its links open only for you and admins); a file you "
                         "already have as a public image gets a private image of its own")
    pt.add_argument("--no-resume", action="store_true",
                    help="send every file from its first byte, cancelling the upload an interrupted run left "
                         "unfinished")
    pt.add_argument("--limit-rate", type=byte_rate, default=0, metavar="RATE",
                    help="send at most RATE bytes a second (512K, 2M): leave room on a slow link")
    pt.add_argument("--retry-for", type=decimal_number(0, 3600, "number of seconds"), default=NO_NODE_S,
                    metavar="SECONDS",
                    help="once no upload node answers, keep trying this long (default: %(default)g; 0: not at "
                         "all), then stop the file's upload as paused: the same command resumes it")
    pt.set_defaults(func=cmd_put)

    st = with_target(sub.add_parser("status", help="list every node with health and load, and the storage pools"))
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    users = sub.add_parser("users", help="manage users").add_subparsers(dest="users_cmd", required=True)
    uc = with_target(users.add_parser("create", help="create a user (password prompted)"))
    uc.add_argument("name", type=users_cli.user_name)
    uc.add_argument("--admin", action="store_true")
    uc.add_argument("--password-stdin", action="store_true",
                    help="read the password from stdin: one line (LF, CRLF or CR ends it)")
    uc.set_defaults(func=cmd_users_create)
    users_cli.add_commands(users, with_target)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_cmd", required=True)
    kc = with_target(keys.add_parser("create", help="print a new API key for user NAME"))
    kc.add_argument("name", type=users_cli.user_name)
    kc.add_argument("--label", default="cli")
    kc.set_defaults(func=cmd_keys_create)
    users_cli.add_key_commands(keys, with_target)
    jobs_cli.add_commands(sub, with_target)
    uploads_cli.add_commands(sub, with_target)
    ops.add_commands(sub, with_target)
    storage_cmds.add_commands(sub, with_target)
    scrub.add_commands(sub, with_target)
    return p


def _in_use(row: dict[str, Any]) -> str:
    """A status row's "in use" cell: bytes for people on storage nodes (their figures are bytes),
    plain counts (slots, uploads) for the others."""
    if row["role"] == "storage":
        return f"{human_bytes(row['in_use'])} / {human_bytes(row['capacity'])}"
    return f"{row['in_use']}/{row['capacity']}"


NODE_COUNT = whole_number(1, 32)  # nodes of one role that `pixelfox up` starts


def main(argv: list[str] | None = None) -> None:
    opts = build_parser().parse_args(argv)
    try:
        sys.exit(opts.func(opts))
    except errors.PixelfoxError as exc:  # 2: the caller's input is at fault; 1: the cluster or the machine
        print(f"pixelfox: {exc.message} ({exc.code})", file=sys.stderr)
        if isinstance(exc, errors.Unauthenticated) and (
                hint := context.local_key_hint(opts.manager, opts.api_key, exc.code)):
            print(hint, file=sys.stderr)
        sys.exit(exc.exit_status)
    except SystemExit as exc:
        if not isinstance(exc.code, str):  # a command's own status, or argparse's usage error (2)
            raise
        print(f"pixelfox: {exc.code}", file=sys.stderr)  # the environment: no cluster here, a node failed to start
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except ValidationError as exc:
        if os.environ.get("PIXELFOX_DEBUG"):
            raise
        # a model built from flags or files refused a value (settings read from the environment
        # come as BadRequest naming the variable: pixelfox.config.read_settings)
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
        print(f"pixelfox: {where}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, EOFError) as exc:  # a user's input our code refused in its own words
        if os.environ.get("PIXELFOX_DEBUG"):  # PIXELFOX_DEBUG=1: the traceback, for a bug report
            raise
        print(f"pixelfox: {exc or 'the input ended before an answer was read'}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # `pixelfox put --json ... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush must not fail again
        sys.exit(141)  # 128 + SIGPIPE, as a shell reports it
    except OSError as exc:  # the machine's fault, not ours: a full disk under `> out.json`, a file gone
        where = f": {exc.filename}" if exc.filename else ""
        print(f"pixelfox: {exc.strerror or exc}{where}", file=sys.stderr)
        with contextlib.suppress(OSError):  # stdout may be what failed: the exit flush must not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:
        store = {"sqlalchemy": "database", "redis": "Redis"}.get(type(exc).__module__.split(".")[0])
        if store is None or os.environ.get("PIXELFOX_DEBUG"):
            raise
        # the database or Redis said no (gone, refused, no such database): its first line, not a traceback
        print(f"pixelfox: {store} error: {(str(exc).splitlines() or [type(exc).__name__])[0][:300]}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
