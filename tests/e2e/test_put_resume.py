"""``pixelfox put`` stopped by Ctrl-C goes on where it stopped the next time it runs (the real CLI, a
real SIGINT, the session cluster).

The first run sends at ``--limit-rate`` so that the test can wait, without racing the upload, until
the server committed a quarter of the file (``GetUpload``) before it interrupts it. The last test
calls ``upload_file`` in-process with a journal entry made for other bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from pixelfox.client.journal import Entry, Journal
from pixelfox.client.uploader import Resume, upload_file
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.text import human_bytes
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.conftest import ClusterHandle
from tests.e2e.uploadkit import big_png, create, new_user_key

pytestmark = pytest.mark.e2e

RATE = "4M"  # bytes a second of the interrupted run: ~2.5 s to a quarter of the big file


def start_put(cluster: ClusterHandle, state: Path, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """``pixelfox put ARGS`` in the cluster's folder, its journal under ``state``, with Ctrl-C working
    however pytest was started: a run started in the background by a non-interactive shell ignores
    SIGINT, and a child inherits an ignored signal (Python then never raises KeyboardInterrupt), so
    the handler is set for the moment of the start (a handled signal goes back to default on exec).
    ``cwd`` (default: the cluster's folder) is where it runs."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen([sys.executable, "-m", "pixelfox", "put", *args], cwd=cwd or cluster.root,
                                env={**os.environ, "XDG_STATE_HOME": str(state)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, before)


def progress(cluster: ClusterHandle, upload_id: str) -> manager_pb2.UploadProgress:
    with grpc.insecure_channel(cluster.manager_address.split(",")[0]) as ch:
        return manager_pb2_grpc.ManagerServiceStub(ch).GetUpload(
            manager_pb2.GetUploadRequest(upload_id=upload_id), metadata=api_key_metadata(cluster.admin_api_key),
            timeout=10)


def interrupt(cluster: ClusterHandle, proc: subprocess.Popen[str], journal: Journal, at_least: int) -> tuple[str, str]:
    """Ctrl-C ``proc`` once the server committed ``at_least`` bytes of its upload (the one its journal
    records); returns the upload id and what the run printed on stderr."""
    deadline = time.monotonic() + 120
    upload_id = ""
    while time.monotonic() < deadline and proc.poll() is None:
        entries = list(journal.entries().values())
        upload_id = entries[0].upload_id if entries else ""
        if upload_id and progress(cluster, upload_id).offset >= at_least:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60)
    assert upload_id and proc.returncode == 130, (proc.returncode, err)
    return upload_id, err


def run_again(cluster: ClusterHandle, state: Path, path: Path, skip: str = "") -> tuple[dict[str, Any], str, float]:
    """The same ``pixelfox put --json --wait`` of ``path`` again (it must exit 0): its JSON line, its
    stderr, and the bytes the upload nodes (but ``skip``) wrote meanwhile."""
    written = upload_bytes(cluster, skip)
    done = start_put(cluster, state, "--json", "--wait", str(path))
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err, upload_bytes(cluster, skip) - written


def upload_bytes(cluster: ClusterHandle, skip: str = "") -> float:
    """Bytes the running upload nodes but ``skip`` (a stopped one, say) wrote so far (their
    ``pixelfox_upload_bytes_total``, summed)."""
    total = 0.0
    for child in cluster.local.children:
        if child.name.startswith("upload") and child.name != skip and child.proc.poll() is None:
            with urllib.request.urlopen(cluster.local.metrics_url(child.name), timeout=10) as r:
                text = r.read().decode()
            total += sum(float(v) for v in re.findall(r"^pixelfox_upload_bytes_total (\S+)$", text, re.M))
    return total


def test_put_interrupted_by_ctrl_c_resumes_on_the_next_run(cluster: ClusterHandle, tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    sha = big_png(path, 3600)  # ~39 MB uncompressed
    size = path.stat().st_size
    state = tmp_path / "state"
    journal = Journal(state / "pixelfox" / "uploads.json")

    upload_id, err = interrupt(cluster, start_put(cluster, state, "--limit-rate", RATE, str(path)), journal,
                               size // 4)
    assert "Traceback" not in err
    line = next(ln for ln in err.splitlines() if ln.startswith("interrupted: "))
    assert re.fullmatch(rf"interrupted: {re.escape(str(path))} \d+\.\d MiB of {human_bytes(size)} sent; "
                        r"run the same command again before (\d{4}-\d\d-\d\d )?\d\d:\d\d UTC to resume, "
                        rf"or cancel it: pixelfox uploads cancel {upload_id}",
                        line), line
    left = progress(cluster, upload_id)
    assert left.status == "open" and size // 4 <= left.offset < size

    res, err, sent = run_again(cluster, state, path)
    assert (res["status"], res["width"], res["height"], res["sha256"]) == ("ready", 3600, 3600, sha)
    assert f"resuming {path} (upload {upload_id}): " in err
    assert 0 < sent <= size - left.offset  # only the rest went: not the quarter sent before
    finished = progress(cluster, upload_id)
    assert (finished.status, finished.image.slug) == ("complete", res["id"])  # the same upload, completed
    assert journal.entries() == {}


def test_an_upload_cancelled_meanwhile_is_started_afresh(cluster: ClusterHandle, tmp_path: Path) -> None:
    path = tmp_path / "again.png"
    sha = big_png(path, 1800)  # ~9.3 MB
    size = path.stat().st_size
    state = tmp_path / "state"
    journal = Journal(state / "pixelfox" / "uploads.json")
    upload_id, err = interrupt(cluster, start_put(cluster, state, "--limit-rate", "2M", str(path)), journal, 1)
    assert f"pixelfox uploads cancel {upload_id}" in err
    cancel = cluster.pixelfox("uploads", "cancel", upload_id)
    assert cancel.returncode == 0 and cancel.stdout.strip() == f"cancelled upload {upload_id}", cancel.stderr

    written = upload_bytes(cluster)
    done = start_put(cluster, state, "--json", "--wait", str(path))
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert (res["status"], res["sha256"]) == ("ready", sha)
    assert "resuming" not in err
    assert upload_bytes(cluster) - written == size  # all of it again, to a new upload
    assert progress(cluster, upload_id).status == "abandoned"
    assert journal.entries() == {}


async def test_an_entry_for_other_bytes_is_not_resumed(cluster: ClusterHandle, tmp_path: Path) -> None:
    """A file changed since its upload began, with the same size and mtime: its hash says so, the upload
    of the old bytes is cancelled (it can never complete) and the new bytes go to a new upload."""
    path = tmp_path / "changed.png"
    sha = big_png(path, 400)
    size = path.stat().st_size
    manager = cluster.manager_address.split(",")[0]
    md = api_key_metadata(cluster.admin_api_key)
    journal = Journal(tmp_path / "uploads.json")
    said, cancelled = list[tuple[object, ...]](), list[tuple[object, ...]]()
    resume = Resume(journal, manager, lambda *a: said.append(a), cancelled=lambda *a: cancelled.append(a))
    old = await create(manager, cluster.admin_api_key, size)
    journal.put(resume.key(path, md), Entry(old.upload_id, old.upload_address, old.ticket, old.expires_at,
                                            old.chunk_size, sha256="00" * 32))
    async with grpc.aio.insecure_channel(manager) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        receipt = await upload_file(stub, md, path, resume=resume)
        gone = await stub.GetUpload(manager_pb2.GetUploadRequest(upload_id=old.upload_id), metadata=md, timeout=10)
    assert receipt.upload_id != old.upload_id and receipt.sha256 == sha and receipt.size == size
    assert said == [] and journal.entries() == {}
    assert cancelled == [(path, old.upload_id, "")]
    assert gone.status == "abandoned"


def test_the_cancel_line_carries_the_flags_put_was_given(cluster: ClusterHandle, tmp_path: Path) -> None:
    """Run outside the cluster's folder with ``--manager`` and ``--api-key``, the printed ``pixelfox uploads
    cancel ID`` had neither, so pasted there it said "no cluster found". It now ends with both, the key
    shown by its first 10 characters only; with the whole key put back, it cancels the upload."""
    path = tmp_path / "flags.png"
    big_png(path, 1800)  # ~9.3 MB
    state = tmp_path / "state"
    key = cluster.admin_api_key
    proc = start_put(cluster, state, "--manager", cluster.manager_address, "--api-key", key, "--limit-rate", "2M",
                     str(path), cwd=tmp_path)
    upload_id, err = interrupt(cluster, proc, Journal(state / "pixelfox" / "uploads.json"), 1)
    assert key not in err and key[:10] in err
    line = next(ln for ln in err.splitlines() if ln.startswith("interrupted: "))
    command = line.partition("or cancel it: ")[2]
    assert command == (f"pixelfox uploads cancel {upload_id} --manager {shlex.quote(cluster.manager_address)} "
                       f"--api-key {key[:10]}…"), line
    pasted = shlex.split(command.replace(f"{key[:10]}…", key))
    cancel = subprocess.run([sys.executable, "-m", *pasted], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, check=False)
    assert (cancel.returncode, cancel.stdout) == (0, f"cancelled upload {upload_id}\n"), cancel.stderr
    assert progress(cluster, upload_id).status == "abandoned"


def committed_entry(cluster: ClusterHandle, proc: subprocess.Popen[str], journal: Journal, at_least: int) -> Entry:
    """The journal entry of the upload ``proc`` (a ``pixelfox put``) is sending, once the server committed
    ``at_least`` bytes of it (``GetUpload``); fails the test with the run's output when that does not come
    within 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        entries = list(journal.entries().values())
        if entries and progress(cluster, entries[0].upload_id).offset >= at_least:
            return entries[0]
        time.sleep(0.05)
    pytest.fail(f"no upload reached {at_least} bytes: {proc.communicate(timeout=60)}")

@dataclass
class SlowPut:
    """A ``put --json --wait --limit-rate 1M`` of a new ~4.3 MB PNG (~4 s) with a quarter of it committed:
    the file, its SHA-256 and size (bytes), put's state folder and journal, the process, its upload id."""

    path: Path
    sha: str
    size: int
    state: Path
    journal: Journal
    proc: subprocess.Popen[str]
    upload_id: str


def slow_put(cluster: ClusterHandle, tmp_path: Path, name: str, side_px: int = 1200, *args: str) -> SlowPut:
    """Start a :class:`SlowPut` of ``tmp_path / name`` (:func:`big_png` of ``side_px``; 2000: ~12 MB), with
    put's further ``args``, and wait until a quarter of it is committed."""
    path = tmp_path / name
    sha = big_png(path, side_px)
    size = path.stat().st_size
    state = tmp_path / "state"
    journal = Journal(state / "pixelfox" / "uploads.json")
    proc = start_put(cluster, state, "--json", "--wait", "--limit-rate", "1M", *args, str(path))
    return SlowPut(path, sha, size, state, journal, proc, committed_entry(cluster, proc, journal, size // 4).upload_id)


def upload_nodes(cluster: ClusterHandle) -> list[str]:
    """The names of the cluster's running upload nodes."""
    return [c.name for c in cluster.local.children if c.name.startswith("upload") and c.proc.poll() is None]


def kill_all(cluster: ClusterHandle, names: list[str]) -> None:
    """SIGKILL the nodes ``names`` and wait for each to be gone (their ports refuse connections)."""
    for name in names:
        cluster.local.child(name).proc.kill()
    for name in names:
        cluster.local.child(name).proc.wait(10)


def node_named(cluster: ClusterHandle, address: str) -> str:
    """The name of the upload node (``upload1``...) serving gRPC at ``address``."""
    port = int(address.rsplit(":", 1)[1])
    return next(c.name for c in cluster.local.children
                if c.name.startswith("upload") and c.env and c.env.get("PIXELFOX_GRPC__PORT") == str(port))


def outlast(cluster: ClusterHandle, proc: subprocess.Popen[str], *, act: Callable[[], None] = lambda: None,
            restore: Callable[[], None] = lambda: None, timeout_s: float = 150) -> tuple[str, str, float]:
    """Do ``act`` to the cluster (freeze or kill its upload nodes) and wait for the put ``proc`` to end:
    its stdout, stderr and the seconds from the end of ``act``. Whatever happens, ``proc`` is killed if
    it still runs, then ``restore`` undoes ``act`` and the cluster is waited on to be ready again."""
    try:
        act()
        began = time.monotonic()
        out, err = proc.communicate(timeout=timeout_s)
        return out, err, time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
        restore()
        asyncio.run(cluster.local.wait_ready(60))


@pytest.mark.parametrize(("how", "ticket_ended"), [("killed", False), ("killed", True), ("stopped", False)],
                         ids=["killed", "killed-ticket-ended", "stopped"])
def test_a_resume_whose_upload_node_is_gone_asks_the_manager(cluster: ClusterHandle, tmp_path: Path, how: str,
                                                             ticket_ended: bool) -> None:
    """The journal names the upload node the first run used; that node is gone before the next run: SIGKILLed
    (its port refuses connections) or SIGSTOPped (it accepts them and never answers, as a host that is down or
    cut off: QueryUpload times out; the run used to ask it again until gRPC gave up connecting). The next run asks
    the manager where the upload lives now (RelocateUpload with a live ticket; RenewUpload first when the entry
    says its ticket ended) and sends only the rest, to the same upload, through the other node. The node is
    started again (same ports) or continued afterwards."""
    path = tmp_path / "moved.png"
    sha = big_png(path, 1800)  # ~9.3 MB
    size = path.stat().st_size
    state = tmp_path / "state"
    journal = Journal(state / "pixelfox" / "uploads.json")
    upload_id, _ = interrupt(cluster, start_put(cluster, state, "--limit-rate", "2M", str(path)), journal, size // 4)
    (slot, entry), = journal.entries().items()
    if ticket_ended:  # as a run after the ticket's end sees it: renewed before anything else
        data = json.loads(journal.path.read_text())  # edited as it is: Journal.put would make this process its owner
        data["entries"][slot]["expires_at"] = datetime.fromtimestamp(time.time() - 1, UTC).isoformat()
        journal.path.write_text(json.dumps(data))
    gone = cluster.local.child(node_named(cluster, entry.upload_address))
    if how == "killed":
        gone.proc.kill()
        gone.proc.wait(10)
    else:
        gone.proc.send_signal(signal.SIGSTOP)
    try:
        left = progress(cluster, upload_id)
        began = time.monotonic()
        res, err, sent = run_again(cluster, state, path, skip=gone.name)
        took = time.monotonic() - began
    finally:
        if how == "killed":
            cluster.local.restart(gone.name)
        else:
            gone.proc.send_signal(signal.SIGCONT)
        asyncio.run(cluster.local.wait_ready(60))
    assert (res["status"], res["sha256"]) == ("ready", sha), err
    assert f"resuming {path} (upload {upload_id}): " in err
    assert 0 < sent <= size - left.offset  # only the rest went, to the other node
    assert progress(cluster, upload_id).image.slug == res["id"]
    assert journal.entries() == {}
    if how == "stopped":  # moved on after QueryUpload's 10 s; it used to wait for gRPC's 20 s connect timeout
        # (then UNAVAILABLE, then RelocateUpload): 30-31 s here, 15 s now, with --wait; 22 s failed once at load 5
        assert took < 26, took


def test_an_upload_of_a_file_changed_since_is_cancelled(cluster: ClusterHandle, tmp_path: Path) -> None:
    """Ctrl-C, then the file gets other bytes (another size and mtime): the next run starts a new upload,
    as before, and now also cancels the old one, saying so in one line; the old one used to stay open,
    holding an open-upload slot and its declared size of the quota for the ticket's 15 min."""
    path = tmp_path / "changing.png"
    big_png(path, 1800)  # ~9.3 MB
    state = tmp_path / "state"
    journal = Journal(state / "pixelfox" / "uploads.json")
    upload_id, _ = interrupt(cluster, start_put(cluster, state, "--limit-rate", "2M", str(path)), journal, 1)
    assert progress(cluster, upload_id).status == "open"
    sha = big_png(path, 1200)  # other bytes, another size
    res, err, sent = run_again(cluster, state, path)
    assert (res["status"], res["sha256"], res["deduplicated"]) == ("ready", sha, False)
    said = [ln for ln in err.splitlines() if upload_id in ln]
    assert said == [f"{path} changed since upload {upload_id} of it began: cancelled it, sending the file afresh"]
    assert "resuming" not in err and sent == path.stat().st_size
    assert progress(cluster, upload_id).status == "abandoned"
    assert journal.entries() == {}


def test_a_file_that_shrinks_while_it_is_sent_is_refused_at_once_and_its_upload_cancelled(
        cluster: ClusterHandle, tmp_path: Path) -> None:
    """The file is cut short while ``put`` sends it: the run "resumed" past its end for a minute and then
    said the cluster stalled ("run the same command again", which could not work). It stops at once
    naming the two sizes, exit 2, and cancels the upload."""
    slow = slow_put(cluster, tmp_path, "shrinks.png")
    began = time.monotonic()
    os.truncate(slow.path, 500_000)
    out, err = slow.proc.communicate(timeout=120)
    took = time.monotonic() - began
    res = json.loads(out.strip().splitlines()[-1])
    assert slow.proc.returncode == 2 and took < 20, (slow.proc.returncode, took, out, err)
    assert res["status"] == "rejected" and res["error"] == {"code": "file-changed", "message": (
        f"{slow.path} shrank from {slow.size} to 500000 bytes while it was being sent; send it again once it is "
        "written")}, res
    assert progress(cluster, slow.upload_id).status == "abandoned"
    assert slow.journal.entries() == {}


def test_a_file_that_grows_while_it_is_sent_goes_up_as_it_was_declared(cluster: ClusterHandle,
                                                                       tmp_path: Path) -> None:
    """Bytes appended while ``put`` sends a file (a tool still writing it) were sent too, and the node
    refused them as "more bytes than the declared" size (exit 2; the upload left open). The run sends
    the size it declared and hashed: the image is what the file was when the run began."""
    slow = slow_put(cluster, tmp_path, "grows.png")
    with slow.path.open("ab") as f:
        f.write(os.urandom(100_000))
    out, err = slow.proc.communicate(timeout=180)
    res = json.loads(out.strip().splitlines()[-1])
    assert slow.proc.returncode == 0 and res["status"] == "ready", (out, err)
    assert (res["sha256"], res["bytes"]) == (slow.sha, slow.size), res


def test_no_resume_cancels_the_upload_it_replaces(cluster: ClusterHandle, tmp_path: Path) -> None:
    """Ctrl-C, then ``pixelfox put --no-resume`` of the same file: it sends the file afresh to a new upload,
    as before, and now cancels the interrupted one first, saying so in one line; the old one used to stay
    open (listed by ``pixelfox uploads``), holding an open-upload slot and its declared size of the quota
    until its ticket ended."""
    path = tmp_path / "again.png"
    sha = big_png(path, 1800)  # ~9.3 MB
    state = tmp_path / "state"
    journal = Journal(state / "pixelfox" / "uploads.json")
    upload_id, _ = interrupt(cluster, start_put(cluster, state, "--limit-rate", "2M", str(path)), journal, 1)
    assert progress(cluster, upload_id).status == "open"
    listed = json.loads(cluster.pixelfox("uploads", "--json").stdout)["uploads"]
    assert upload_id in {u["id"] for u in listed}, listed
    written = upload_bytes(cluster)
    done = start_put(cluster, state, "--no-resume", "--json", "--wait", str(path))
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert (res["status"], res["sha256"]) == ("ready", sha), err
    said = [ln for ln in err.splitlines() if upload_id in ln]
    assert said == [f"--no-resume: {path} replaces its upload {upload_id} of an earlier run: cancelled it, "
                    "sending the file afresh"], err
    assert "resuming" not in err and upload_bytes(cluster) - written == path.stat().st_size  # from byte 0
    assert progress(cluster, upload_id).status == "abandoned"
    listed = json.loads(cluster.pixelfox("uploads", "--json").stdout)["uploads"]
    assert upload_id not in {u["id"] for u in listed}, listed
    assert journal.entries() == {}


def test_parallel_puts_of_one_file_each_make_their_own_upload(cluster: ClusterHandle, tmp_path: Path) -> None:
    """Three ``pixelfox put --json`` of one new file at once, two started while the first sends: they used to
    find its journal entry and "resume" it (``resuming ... already sent``: another process's upload, two
    streams on it), and two lines said ``deduplicated: false`` for one image. An entry names the process
    sending it; the others start uploads of their own, and all but the one that made the image are
    deduplicated."""
    path = tmp_path / "shared.png"
    sha = big_png(path, 1800)  # ~9.3 MB: ~2.3 s at 4M
    state = tmp_path / "state"
    journal = Journal(state / "pixelfox" / "uploads.json")
    first = start_put(cluster, state, "--json", "--wait", "--limit-rate", RATE, str(path))
    deadline = time.monotonic() + 60
    while not journal.entries() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.02)
    assert journal.entries(), first.communicate()
    others = [start_put(cluster, state, "--json", "--wait", "--limit-rate", RATE, str(path)) for _ in range(2)]
    results, errs = [], []
    for proc in (first, *others):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
        errs.append(err)
    assert not any("resuming" in err for err in errs), errs
    assert {(r["status"], r["sha256"]) for r in results} == {("ready", sha)}
    assert len({r["id"] for r in results}) == 1
    assert sorted(r["deduplicated"] for r in results) == [False, True, True]
    assert journal.entries() == {}


def test_too_many_open_uploads_names_the_cli_commands(cluster: ClusterHandle, tmp_path: Path) -> None:
    """The server's message speaks HTTP (``GET /api/v1/uploads``, tus DELETE); ``put`` adds a line naming
    ``pixelfox uploads`` and ``pixelfox uploads cancel ID``, with the flags it was given."""
    key = asyncio.run(new_user_key(cluster.local, "opener"))
    manager = cluster.manager_address.split(",")[0]
    opened = [asyncio.run(create(manager, key, 1000)) for _ in range(32)]  # user_open_uploads: 32
    path = tmp_path / "one.png"
    big_png(path, 100)
    try:
        done = subprocess.run([sys.executable, "-m", "pixelfox", "put", "--manager", manager, "--api-key", key,
                               str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
                              env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")})
    finally:
        for t in opened:
            asyncio.run(abandon(manager, key, t.upload_id))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith(f"✗ {path}: 32 unfinished uploads already"), lines
    flags = f" --manager {shlex.quote(manager)} --api-key {key[:10]}…"
    assert lines[1:] == [f"hint: list your unfinished uploads with `pixelfox uploads{flags}`, cancel one with "
                         f"`pixelfox uploads cancel ID{flags}`"]


async def abandon(manager: str, key: str, upload_id: str) -> None:
    async with grpc.aio.insecure_channel(manager) as ch:
        await manager_pb2_grpc.ManagerServiceStub(ch).AbandonUpload(
            manager_pb2.AbandonUploadRequest(upload_id=upload_id), metadata=api_key_metadata(key), timeout=10)


def test_put_moves_off_an_upload_node_frozen_mid_stream(cluster: ClusterHandle, tmp_path: Path) -> None:
    """``put --json --wait --limit-rate`` of a big file; once the server committed a part of it, its upload node
    is SIGSTOPped (frozen: its connections stay open and nothing answers; `pixelfox status` marks it inactive
    within seconds). The same run gives up on the stream after a stall without progress, asks the manager for
    the upload again (RelocateUpload) and finishes it on the other node: ready, the file's bytes, well within
    the 60 s after which it used to end "rejected" with gRPC's transport message and "0 of N bytes"."""
    path = tmp_path / "frozen.png"
    sha = big_png(path, 2000)  # ~12 MB: ~12 s at 1 MB/s
    size = path.stat().st_size
    state = tmp_path / "state"
    journal = Journal(state / "pixelfox" / "uploads.json")
    proc = start_put(cluster, state, "--json", "--wait", "--limit-rate", "1M", str(path))
    entry = committed_entry(cluster, proc, journal, size // 4)
    upload_id = entry.upload_id
    gone = cluster.local.child(node_named(cluster, entry.upload_address))
    out, err, took = outlast(cluster, proc, act=lambda: gone.proc.send_signal(signal.SIGSTOP),
                             restore=lambda: gone.proc.send_signal(signal.SIGCONT), timeout_s=120)
    res = json.loads(out.strip().splitlines()[-1])
    assert (proc.returncode, res["status"], res.get("sha256")) == (0, "ready", sha), (took, out, err)
    assert progress(cluster, upload_id).image.slug == res["id"]  # the same upload, finished elsewhere
    assert journal.entries() == {}
    # ~15 s of stall before the move, the rest of the file at 1 MB/s (~9 s) and its processing
    assert took < 45, took


def assert_paused(cluster: ClusterHandle, proc: subprocess.Popen[str], out: str, err: str, path: Path,
                  upload_id: str, size: int, *, retry_s: int) -> int:
    """``put --json``, which has ended, stopped ``path``'s upload as ``paused`` after ``retry_s`` seconds of
    no upload node, in one sentence naming the bytes the server holds, and said so on stderr; those bytes
    (at least a quarter of ``size``, not all of it)."""
    committed = progress(cluster, upload_id).offset  # put has ended: nothing sends to it any more
    res = json.loads(out.strip().splitlines()[-1])
    assert (proc.returncode, res["status"], res["error"]["code"]) == (1, "paused", "unavailable"), (out, err)
    assert res["error"]["message"] == (
        f"no upload node answered for {retry_s} s, with {committed} of {size} bytes on the server; "
        "run the same command again to resume once an upload node runs"), res
    assert f"{path}: no upload node answers; retrying for up to {retry_s} s (Ctrl-C to stop; the same command " \
           "resumes later)" in err.splitlines(), err
    assert size // 4 <= committed < size
    return committed


def test_put_with_every_upload_node_frozen_ends_paused(cluster: ClusterHandle, tmp_path: Path) -> None:
    """Both upload nodes SIGSTOPped mid-stream: nowhere to go on. The stream is given up after its stall
    (SEND_STALL_S), the manager says no upload node is healthy, a line says so at once, and ``put --json
    --retry-for 5`` stops the upload 5 s later as an upload stopped on the way (``paused``, the journal entry
    kept), not as a file refused (``rejected``), in one sentence naming the bytes the server has (as
    GetUpload says; no gRPC transport text); the same command then finishes it. It used to say nothing and
    wait for the 60 s stall (78 s for this test, the slowest of CI)."""
    put = slow_put(cluster, tmp_path, "stuck.png", 2000, "--retry-for", "5")  # ~12 MB
    path, sha, size, state, journal, proc, upload_id = (put.path, put.sha, put.size, put.state, put.journal,
                                                         put.proc, put.upload_id)
    frozen = [cluster.local.child(name) for name in upload_nodes(cluster)]
    assert len(frozen) == 2

    def signal_all(sig: signal.Signals) -> None:
        for child in frozen:
            child.proc.send_signal(sig)

    out, err, took = outlast(cluster, proc, act=lambda: signal_all(signal.SIGSTOP),
                             restore=lambda: signal_all(signal.SIGCONT))
    assert_paused(cluster, proc, out, err, path, upload_id, size, retry_s=5)
    assert took < 40, took  # the 15 s stall, 5 s of retries; 60 s and more before
    assert [e.upload_id for e in journal.entries().values()] == [upload_id]
    again, _, _ = run_again(cluster, state, path)
    assert (again["status"], again["sha256"]) == ("ready", sha)



def test_put_with_every_upload_node_killed_ends_paused_soon(cluster: ClusterHandle, tmp_path: Path) -> None:
    """Every upload node SIGKILLed mid-upload (their ports refuse connections; the manager calls them down
    5 s later). ``put --json`` says at once on stderr that no upload node answers and for how long it retries
    (20 s by default), then ends the file ``paused`` with the bytes the server holds, well before the 60 s
    stall it used to wait out in silence. Once the nodes run again, the same command sends only the rest, to
    the same upload: the file's SHA-256 and size."""
    put = slow_put(cluster, tmp_path, "orphan.png")
    path, sha, size, state, journal, proc, upload_id = (put.path, put.sha, put.size, put.state, put.journal,
                                                         put.proc, put.upload_id)
    names = upload_nodes(cluster)
    assert len(names) == 2

    def restart_all() -> None:
        for name in names:
            cluster.local.restart(name)

    out, err, took = outlast(cluster, proc, act=lambda: kill_all(cluster, names), restore=restart_all)
    committed = assert_paused(cluster, proc, out, err, path, upload_id, size, retry_s=20)
    said = [ln for ln in err.splitlines() if "no upload node answers" in ln]
    assert len(said) == 1, err  # said once
    assert "Traceback" not in err
    assert took < 40, took  # 20 s of retries from the first refusal; 60 s before
    assert [e.upload_id for e in journal.entries().values()] == [upload_id]

    again, err, sent = run_again(cluster, state, path)
    assert (again["status"], again["sha256"], again["bytes"]) == ("ready", sha, size), again
    assert f"resuming {path} (upload {upload_id}): " in err
    assert 0 < sent <= size - committed  # only the rest went
    assert progress(cluster, upload_id).image.slug == again["id"]  # the same upload, finished
    assert journal.entries() == {}


def test_put_rides_out_upload_nodes_restarting(cluster: ClusterHandle, tmp_path: Path) -> None:
    """Every upload node SIGKILLed mid-upload and started again at once (a restart, a deploy): ``put`` says
    that no upload node answers, waits, and finishes the same upload when they are back, a few seconds
    later: ready, not ``paused``."""
    put = slow_put(cluster, tmp_path, "blip.png")
    path, sha, journal, proc, upload_id = put.path, put.sha, put.journal, put.proc, put.upload_id
    names = upload_nodes(cluster)

    def kill_and_restart() -> None:
        kill_all(cluster, names)
        for name in names:
            cluster.local.restart(name)

    out, err, _ = outlast(cluster, proc, act=kill_and_restart)
    res = json.loads(out.strip().splitlines()[-1])
    assert (proc.returncode, res["status"], res["sha256"]) == (0, "ready", sha), (out, err)
    assert f"{path}: no upload node answers; retrying for up to 20 s (Ctrl-C to stop; the same command resumes " \
           "later)" in err.splitlines(), err
    assert progress(cluster, upload_id).image.slug == res["id"]  # the same upload, finished
    assert journal.entries() == {}
