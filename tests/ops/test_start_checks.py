"""Operator mistakes refused at start with one line, through the real processes.

* A heartbeat interval over a third of the manager's ``node_timeout_s`` made nodes flap between
  healthy and dead; the manager now refuses such a node when it registers (the node exits with the
  reason), and ``pixelfox up``, which hands both settings to its nodes, refuses it before it starts any.
* A database URL the manager cannot use (bad syntax, a driver we do not ship) or whose server does not
  answer showed the tail of a traceback; the manager, and ``pixelfox up`` before it starts any node,
  now say which setting is wrong and why. So for a port out of range (99999 was an OverflowError
  traceback, 0 became 5432) and a malformed host or port (it was "invalid literal for int()").
* A SQLite file in a folder that does not exist (a typo in the path) was a new, empty site, folder
  and all; it is refused, and a new SQLite file is said to be new.
* An infinite node timeout or heartbeat interval was taken (no node was ever declared dead); every
  float setting refuses ``inf`` and ``nan``, and ``up`` names the variable of any setting it refuses.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pixelfox.cli.launcher import free_port
from pixelfox.grpcx.auth import node_metadata
from pixelfox.v1 import manager_pb2, manager_pb2_grpc

SECRET = "start-checks-secret"
PG_FORM = "postgresql+asyncpg://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
FORMS = f"{PG_FORM} or sqlite+aiosqlite:///PATH"
SLOW = ("PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S (1.5) must be well under the manager's PIXELFOX_NODE_TIMEOUT_S (3): "
        "a node would be declared dead between two heartbeats; use at most a third of it (1)")


def _env(**settings: str) -> dict[str, str]:
    """This environment without PIXELFOX_* settings, plus ``settings``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PIXELFOX_")}, **settings}


def _leftovers(root: Path) -> list[str]:
    """Command lines of live processes working in ``root`` (the nodes `up` starts there)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd") == str(root.resolve()):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def _up(root: Path, env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``pixelfox up`` in ``root`` until it exits; one that is still running after ``timeout_s`` (it
    started the cluster: the old behaviour) is stopped with Ctrl-C, so it stops its nodes, and fails."""
    return _up_with(root, [], env, timeout_s)


def _up_with(root: Path, flags: list[str], env: dict[str, str], timeout_s: float = 60
             ) -> subprocess.CompletedProcess[str]:
    """:func:`_up` with more ``flags``."""
    proc = subprocess.Popen([sys.executable, "-m", "pixelfox", "up", "--upload", "1", "--proc", "1", "--storage",
                             "1", *flags], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"pixelfox up did not refuse to start: {out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ---- heartbeat interval against node timeout ----------------------------------------------------

def _manager_process(tmp_path: Path, port: int, redis_url: str, log: IO[bytes], timeout_s: str
                     ) -> subprocess.Popen[bytes]:
    """A manager alone on ``port`` (SQLite in ``tmp_path``, output to ``log``) with ``node_timeout_s`` ``timeout_s``."""
    return subprocess.Popen([sys.executable, "-m", "nodes.manager"], cwd=tmp_path, stdout=log, stderr=log, env=_env(
        PIXELFOX_CLUSTER__SECRET=SECRET, PIXELFOX_GRPC__PORT=str(port), PIXELFOX_METRICS_PORT="-1",
        PIXELFOX_REDIS__URL=redis_url, PIXELFOX_DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path / 'm.db'}",
        PIXELFOX_NODE_TIMEOUT_S=timeout_s))


@pytest.fixture
def manager(tmp_path: Path, redis_url: str) -> Iterator[str]:
    """A manager alone with ``node_timeout_s`` 3 (and no heartbeat setting of its own); its address."""
    port = free_port()
    log = (tmp_path / "manager.log").open("wb")
    proc = _manager_process(tmp_path, port, redis_url, log, "3")
    try:
        asyncio.run(_serving(f"127.0.0.1:{port}", proc))
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


async def _serving(address: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as ch:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"the manager did not start (exit status {proc.poll()})")


async def _nodes(address: str) -> dict[str, bool]:
    """Node id -> healthy, as the manager's registry says."""
    async with grpc.aio.insecure_channel(address) as ch:
        reply = await manager_pb2_grpc.ManagerServiceStub(ch).ListNodes(
            manager_pb2.ListNodesRequest(), metadata=node_metadata(SECRET), timeout=10)
    return {n.node_id: n.healthy for n in reply.nodes}


def _proc_node(tmp_path: Path, manager: str, node_id: str, interval: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "nodes.proc"], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(
        PIXELFOX_CLUSTER__SECRET=SECRET, PIXELFOX_CLUSTER__MANAGER=manager, PIXELFOX_NODE_ID=node_id,
        PIXELFOX_METRICS_PORT="-1", PIXELFOX_WORKERS="1", PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S=interval))


def test_manager_refuses_a_node_heartbeating_too_slowly_for_its_node_timeout(tmp_path: Path, manager: str) -> None:
    slow = _proc_node(tmp_path, manager, "procslow", "1.5")  # 1.5 s against 3 s: dead between two heartbeats
    fine = _proc_node(tmp_path, manager, "procfine", "1")  # a third of it: the limit, taken
    try:
        try:
            _out, err = slow.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("a node heartbeating every 1.5 s was taken by a manager that times nodes out after 3 s")
        assert slow.returncode == 1, err
        assert err.strip().splitlines()[-1] == f"manager refused registration: {SLOW}", err
        assert "Traceback" not in err, err
        assert f"refused node procslow: {SLOW}" in (tmp_path / "manager.log").read_text()
        deadline = time.monotonic() + 30
        while (nodes := asyncio.run(_nodes(manager))).get("procfine") is not True and time.monotonic() < deadline:
            time.sleep(0.3)
        assert nodes.get("procfine") is True and "procslow" not in nodes, nodes
        for _ in range(8):  # over a timeout's length: a node at the limit stays healthy throughout
            time.sleep(0.5)
            assert asyncio.run(_nodes(manager)).get("procfine") is True
        assert fine.poll() is None
    finally:
        for node in (slow, fine):
            if node.poll() is None:
                node.terminate()
                node.communicate(timeout=30)


def test_up_refuses_heartbeats_too_slow_for_the_node_timeout_before_starting_a_node(tmp_path: Path) -> None:
    res = _up(tmp_path, _env(PIXELFOX_NODE_TIMEOUT_S="3", PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S="1.5"))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [f"pixelfox: {SLOW} (bad-request)"], res.stderr
    assert not (tmp_path / ".pixelfox" / "logs").exists()  # not one node (nor Redis) was started
    assert _leftovers(tmp_path) == []


# ---- database URL ---------------------------------------------------------------------------------

def _bad_urls() -> list[tuple[str, str, str]]:
    """(URL, what the manager says about it, error code): a server that is not there, an unknown
    driver, a driver we do not ship, no URL at all."""
    port = free_port()  # nothing listens there
    return [
        (f"postgresql+asyncpg://nobody:hunter2@127.0.0.1:{port}/x",
         f"cannot use the database postgresql+asyncpg://nobody:***@127.0.0.1:{port}/x: connection refused: "
         f"no database server listens on 127.0.0.1:{port}", "unavailable"),
        ("notadb://", "notadb://: only PostgreSQL (postgresql+asyncpg://USER[:PASSWORD]@HOST[:PORT]/DATABASE) and "
         "SQLite (sqlite+aiosqlite:///PATH) are supported", "bad-request"),
        ("postgresql://nobody:hunter2@db/x", "postgresql://nobody:***@db/x: PixelFox talks to PostgreSQL through "
         "asyncpg; use postgresql+asyncpg://USER[:PASSWORD]@HOST[:PORT]/DATABASE", "bad-request"),
        ("not a url", f"'not a url' is not a database URL: use {FORMS}", "bad-request"),
        ("postgresql+asyncpg://nobody:hunter2@127.0.0.1:99999/x", "postgresql+asyncpg://nobody:***@127.0.0.1:99999/x: "
         "port 99999 is out of range 1-65535", "bad-request"),
        ("postgresql+asyncpg://nobody:hunter2@127.0.0.1:0/x", "postgresql+asyncpg://nobody:***@127.0.0.1:0/x: "
         "port 0 is out of range 1-65535", "bad-request"),
        ("postgresql+asyncpg://nobody:hunter2@127.0.0.1:abc/x", "postgresql+asyncpg://nobody:***@127.0.0.1:abc/x: "
         f"the port 'abc' is malformed: it must be a number from 1 to 65535; use {PG_FORM}", "bad-request"),
        ("postgresql+asyncpg://nobody:hunter2@[::1/x", "postgresql+asyncpg://nobody:***@[::1/x: the host '[::1' is "
         f"malformed: an IPv6 address needs its closing ']', as in [::1]:5432; use {PG_FORM}", "bad-request"),
    ]


BAD_URLS = _bad_urls()
IDS = ["refused", "unknown-driver", "sync-driver", "not-a-url", "port-too-big", "port-0", "port-abc",
       "ipv6-unclosed"]


@pytest.mark.parametrize(("url", "why", "code"), BAD_URLS, ids=IDS)
def test_up_refuses_a_database_it_cannot_use_in_one_line_before_starting_a_node(
        tmp_path: Path, url: str, why: str, code: str) -> None:
    res = _up(tmp_path, _env(PIXELFOX_DATABASE__URL=url))
    assert res.returncode == (1 if code == "unavailable" else 2), res.stderr  # 1: a server that is not there
    assert res.stderr.strip().splitlines() == [f"pixelfox: PIXELFOX_DATABASE__URL: {why} ({code})"], res.stderr
    assert "hunter2" not in res.stderr
    assert not (tmp_path / ".pixelfox" / "logs").exists()  # not one node (nor Redis) was started
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(("url", "why", "code"), BAD_URLS, ids=IDS)
def test_manager_alone_refuses_a_database_it_cannot_use_in_one_line(
        tmp_path: Path, url: str, why: str, code: str) -> None:
    res = subprocess.run([sys.executable, "-m", "nodes.manager"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, check=False, env=_env(
        PIXELFOX_CLUSTER__SECRET=SECRET, PIXELFOX_METRICS_PORT="-1", PIXELFOX_DATABASE__URL=url))
    if code == "unavailable":  # the server: found at start, exit 1
        assert (res.returncode, res.stderr.strip().splitlines()) == (1, [f"PIXELFOX_DATABASE__URL: {why}"])
    else:  # the URL itself: a configuration error, exit 2 as for every setting
        assert (res.returncode, res.stderr.strip().splitlines()) == (
            2, ["configuration error:", f"  PIXELFOX_DATABASE__URL: {why}"])
    assert "hunter2" not in res.stderr


# ---- a SQLite file whose folder does not exist, a new SQLite file --------------------------------

def test_up_refuses_a_sqlite_file_whose_folder_does_not_exist_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "no" / "such"  # a typo in the path used to start a new, empty site there
    url = f"sqlite+aiosqlite:///{typo / 'x.db'}"
    res = _up(tmp_path, _env(PIXELFOX_DATABASE__URL=url))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"pixelfox: PIXELFOX_DATABASE__URL: {url}: folder {typo} does not exist; create it first, or fix the path "
        "(bad-request)"], res.stderr
    assert not (tmp_path / "no").exists()
    assert not (tmp_path / ".pixelfox" / "logs").exists()
    assert _leftovers(tmp_path) == []


def test_manager_alone_refuses_a_sqlite_file_whose_folder_does_not_exist(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'typo' / 'x.db'}"
    res = subprocess.run([sys.executable, "-m", "nodes.manager"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=30, check=False, env=_env(
        PIXELFOX_CLUSTER__SECRET=SECRET, PIXELFOX_METRICS_PORT="-1", PIXELFOX_DATABASE__URL=url))
    assert (res.returncode, res.stderr.strip().splitlines()) == (1, [
        f"PIXELFOX_DATABASE__URL: {url}: folder {tmp_path / 'typo'} does not exist; create it first, or fix the path"])
    assert not (tmp_path / "typo").exists()


def test_manager_says_when_its_sqlite_database_is_new(tmp_path: Path, manager: str) -> None:
    log = (tmp_path / "manager.log").read_text()
    assert [line.split(": ", 1)[1] for line in log.splitlines() if "new SQLite database" in line] == [
        f"new SQLite database at {tmp_path / 'm.db'}"], log
    assert (tmp_path / "m.db").is_file()


# ---- float settings that make no sense at infinity ------------------------------------------------

NOT_FINITE = [
    ("PIXELFOX_NODE_TIMEOUT_S", "inf", "Input should be a finite number (got 'inf')"),
    ("PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S", "inf", "Input should be a finite number (got 'inf')"),
    ("PIXELFOX_LEASE_S", "nan", "Input should be a finite number (got 'nan')"),
    ("PIXELFOX_NODE_TIMEOUT_S", "0", "Input should be greater than 0 (got '0')"),
    # a list setting that is not JSON: it said 'error parsing value for field "tiers" from source ...'
    ("PIXELFOX_TIERS__ORDER", "hot,warm", "not valid JSON (Expecting value: line 1 column 1 (char 0)); a list or "
     'object setting is written as JSON, e.g. ["a", "b"] or {"key": "value"}'),
]


@pytest.mark.parametrize(("var", "value", "why"), NOT_FINITE, ids=["timeout-inf", "heartbeat-inf", "lease-nan",
                                                                   "timeout-0", "tiers-not-json"])
def test_up_refuses_a_setting_naming_its_variable_before_starting_a_node(
        tmp_path: Path, var: str, value: str, why: str) -> None:
    res = _up(tmp_path, _env(**{var: value}))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [f"pixelfox: {var}: {why} (bad-request)"], res.stderr
    assert not (tmp_path / ".pixelfox" / "logs").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(("var", "value"), [("PIXELFOX_NODE_TIMEOUT_S", "inf"), ("PIXELFOX_REPAIR__INTERVAL_S", "inf")])
def test_manager_alone_refuses_an_infinite_duration(tmp_path: Path, var: str, value: str) -> None:
    res = subprocess.run([sys.executable, "-m", "nodes.manager"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=30, check=False, env=_env(
        PIXELFOX_CLUSTER__SECRET=SECRET, PIXELFOX_METRICS_PORT="-1", **{var: value}))
    assert (res.returncode, res.stderr.strip().splitlines()) == (
        2, ["configuration error:", f"  {var}: Input should be a finite number (got 'inf')"])


@pytest.mark.parametrize(("var", "value", "why"), [
    # a lease of 0 reclaimed every job in flight (each sent 2-3 times); below 0 no job was sent at all
    ("PIXELFOX_LEASE_S", "-5", "Input should be greater than or equal to 1 (got '-5')"),
    ("PIXELFOX_LEASE_S", "0", "Input should be greater than or equal to 1 (got '0')"),
    ("PIXELFOX_GRPC__GRACE_S", "-3", "Input should be greater than or equal to 0 (got '-3')"),
    ("PIXELFOX_METRICS_PORT", "70000", "Input should be less than or equal to 65535 (got '70000')"),
    ("PIXELFOX_METRICS_PORT", "-7", "Input should be greater than or equal to -1 (got '-7')"),
    ("PIXELFOX_LIMITS__MAX_PIXELS", "0", "Input should be greater than or equal to 1 (got '0')"),
    ("PIXELFOX_LIMITS__CHUNK_SIZE", "0", "Input should be greater than or equal to 4096 (got '0')"),
    # a traceback, exit 1 (pydantic-settings' SettingsError)
    ("PIXELFOX_DATABASE__READ_URLS", "notjson", "not valid JSON (Expecting value: line 1 column 1 (char 0)); a list "
     'or object setting is written as JSON, e.g. ["a", "b"] or {"key": "value"}'),
])
def test_manager_refuses_a_setting_out_of_its_range(tmp_path: Path, var: str, value: str, why: str) -> None:
    """Settings that took any number (``--print-config`` showed them, exit 0) and broke the cluster later."""
    res = subprocess.run([sys.executable, "-m", "nodes.manager", "--print-config"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=30, check=False, env=_env(PIXELFOX_CLUSTER__SECRET=SECRET, **{var: value}))
    assert (res.returncode, res.stderr.strip().splitlines()) == (2, ["configuration error:", f"  {var}: {why}"])


def test_only_the_setting_that_is_not_json_is_named(tmp_path: Path) -> None:
    """A bad ``DATABASE__READ_URLS`` beside a good ``DATABASE__URL`` named both as "not valid JSON" (every
    variable of the section was tried as JSON, a URL among them)."""
    res = subprocess.run([sys.executable, "-m", "nodes.manager", "--print-config"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=30, check=False, env=_env(
        PIXELFOX_CLUSTER__SECRET=SECRET, PIXELFOX_DATABASE__READ_URLS="sqlite:///replica.db",
        PIXELFOX_DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path}/main.db", PIXELFOX_DATABASE__ECHO="false"))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 2, res.stderr
    assert lines[1].startswith("  PIXELFOX_DATABASE__READ_URLS: not valid JSON ("), res.stderr


def test_proc_node_alone_refuses_an_infinite_heartbeat_interval(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "nodes.proc"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=30, check=False, env=_env(
        PIXELFOX_CLUSTER__SECRET=SECRET, PIXELFOX_METRICS_PORT="-1", PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S="inf"))
    assert (res.returncode, res.stderr.strip().splitlines()) == (2, [
        "configuration error:",
        "  PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S: Input should be a finite number (got 'inf')"])


# ---- SIGTERM while a dependency is down ----------------------------------------------------------

def test_a_node_waiting_for_redis_stops_on_sigterm(tmp_path: Path) -> None:
    """A manager whose Redis is not there waits for it (health NOT_SERVING); SIGTERM used to be slept
    through in that wait, so only SIGKILL stopped it. It now exits at once, cleanly."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nodes.manager"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(
        PIXELFOX_CLUSTER__SECRET=SECRET, PIXELFOX_GRPC__PORT=str(port), PIXELFOX_METRICS_PORT="-1",
        PIXELFOX_REDIS__URL=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        PIXELFOX_DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"))
    try:
        async def not_serving() -> None:
            deadline = time.monotonic() + 60
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                while time.monotonic() < deadline:
                    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                    try:
                        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
                        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
                        return
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.2)
            raise AssertionError("the manager's gRPC server never came up")

        asyncio.run(not_serving())  # up, and waiting for Redis
        time.sleep(1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0 and time.monotonic() - started < 5, out
        assert "stopped before its dependencies were ready" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ---- a node started before its manager -----------------------------------------------------------

def _http(url: str) -> tuple[int, str]:
    """(status, body) of a GET of ``url``, an error status included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _attempts(log: str) -> list[float]:
    """Unix times of the registration attempts a node's log shows ("manager not reachable yet")."""
    return [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC).timestamp()
            for line in log.splitlines() if "manager not reachable yet" in line]


def test_an_upload_node_started_before_its_manager_joins_it_and_is_healthy_at_once(
        tmp_path: Path, redis_url: str) -> None:
    """``pixelfox up`` starts every node at once and the manager, the slowest to load, serves last. A node
    whose manager is not up retries its registration every 0.5 s at most (it backed off to every 2 s, so
    the nodes joined up to 2 s after the manager served). An upload node is not ready while it reaches no
    manager, so its first heartbeat says not ready; ready a moment later it says so at once, and is healthy
    (takes uploads) within seconds of the manager serving, not at its next heartbeat (10 s here; with the
    default 1 s every cluster start waited up to a second for it)."""
    port, http_port = free_port(), free_port()
    manager = f"127.0.0.1:{port}"
    node_log = (tmp_path / "upload.log").open("w")
    node = subprocess.Popen([sys.executable, "-m", "nodes.upload"], cwd=tmp_path, stdout=node_log,
                            stderr=node_log, text=True, env=_env(
        PIXELFOX_CLUSTER__SECRET=SECRET, PIXELFOX_CLUSTER__MANAGER=manager, PIXELFOX_NODE_ID="uploadearly",
        PIXELFOX_METRICS_PORT="-1", PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S="10", PIXELFOX_REDIS__URL=redis_url,
        PIXELFOX_GRPC__PORT=str(free_port()), PIXELFOX_HTTP__PORT=str(http_port),
        PIXELFOX_STAGING_DIR=str(tmp_path / "staging")))
    log = (tmp_path / "manager.log").open("wb")
    started: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(4)  # no manager yet: NOT_SERVING, attempts 0.2, 0.4, then 0.5 s apart (they reached 2 s)
        # its HTTP says so too (/readyz was a 404 on upload nodes), and that the process is alive
        before = [_http(f"http://127.0.0.1:{http_port}{path}") for path in ("/readyz", "/healthz")]
        started = _manager_process(tmp_path, port, redis_url, log, "30")
        asyncio.run(_serving(manager, started, timeout_s=60))
        serving = time.monotonic()
        seen = []  # (seconds since the manager served, the node's health in its registry: None = not in it)
        while time.monotonic() - serving < 15 and not (seen and seen[-1][1]):
            seen.append((round(time.monotonic() - serving, 1), asyncio.run(_nodes(manager)).get("uploadearly")))
            time.sleep(0.1)
        # its /readyz reads the same flag as its heartbeat; a dependency check slower than 2 s on a loaded box
        # turns it NOT_SERVING for a second (by design), so it is asked for up to 5 s, not once
        deadline = time.monotonic() + 5
        while (after := _http(f"http://127.0.0.1:{http_port}/readyz"))[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        node.terminate()
        node.wait(30)
        node_log.close()
        if started is not None:
            started.terminate()
            started.wait(30)
        log.close()
    attempts = _attempts((tmp_path / "upload.log").read_text())
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(attempts)]
    assert len(attempts) >= 6 and max(gaps) < 1.2, gaps  # 0.5 s, and the time an attempt takes on a loaded box
    joined = next(t for t, healthy in seen if healthy is not None)
    assert joined < 2.0, seen  # in the registry (not ready at first)
    assert seen[-1][1] is True and seen[-1][0] < 4, seen  # then ready: it was about 10 s
    assert before == [(503, '{"status": "not-ready"}'), (200, "ok")]
    assert after == (200, '{"status": "ready"}')


# ---- PIXELFOX_TRUSTED_PROXIES ------------------------------------------------------------------------

BAD_PROXIES = [("notanip", "'notanip' is not an IP address or network"),
               ("10.0.0.0/8,10.0.0.0/33", "'10.0.0.0/33' is not an IP address or network"),
               ("10.0.0.1/8", "'10.0.0.1/8' is not an IP address or network (10.0.0.1/8 has host bits set)")]
PROXIES_HINT = "; use addresses or networks such as 10.0.0.5 or 10.0.0.0/8, comma-separated"


@pytest.mark.parametrize(("value", "why"), BAD_PROXIES, ids=["word", "prefix-33", "host-bits"])
def test_web_node_refuses_trusted_proxies_that_are_not_addresses(tmp_path: Path, value: str, why: str) -> None:
    """They were taken by --print-config, and a web node started on them died with a traceback."""
    for args in (["--print-config"], []):
        res = subprocess.run([sys.executable, "-m", "web", *args], cwd=tmp_path, capture_output=True, text=True,
                             timeout=30, check=False, env=_env(PIXELFOX_TRUSTED_PROXIES=value))
        assert (res.returncode, res.stderr.strip().splitlines()) == (
            2, ["configuration error:", f"  PIXELFOX_TRUSTED_PROXIES: {why}{PROXIES_HINT}"]), res.stderr


@pytest.mark.parametrize(("value", "why"), BAD_PROXIES, ids=["word", "prefix-33", "host-bits"])
def test_manager_refuses_grpc_trusted_proxies_that_are_not_addresses(tmp_path: Path, value: str, why: str) -> None:
    """The managers' PIXELFOX_GRPC_TRUSTED_PROXIES is read as the web nodes' PIXELFOX_TRUSTED_PROXIES is."""
    res = subprocess.run([sys.executable, "-m", "nodes.manager", "--print-config"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=30, check=False, env=_env(PIXELFOX_GRPC_TRUSTED_PROXIES=value))
    assert (res.returncode, res.stderr.strip().splitlines()) == (
        2, ["configuration error:", f"  PIXELFOX_GRPC_TRUSTED_PROXIES: {why}{PROXIES_HINT}"]), res.stderr


def test_up_refuses_trusted_proxies_that_are_not_addresses_before_starting_a_node(tmp_path: Path) -> None:
    res = _up(tmp_path, _env(PIXELFOX_TRUSTED_PROXIES="notanip"))
    assert (res.returncode, res.stderr.strip().splitlines()) == (2, [
        f"pixelfox: PIXELFOX_TRUSTED_PROXIES: 'notanip' is not an IP address or network{PROXIES_HINT} (bad-request)"])
    assert not (tmp_path / ".pixelfox" / "logs").exists()
    assert _leftovers(tmp_path) == []


# ---- an external Redis --------------------------------------------------------------------------------

REDIS_FORMS = ("use redis://[:PASSWORD@]HOST:6379/0 (rediss:// for TLS), unix:///PATH.sock, "
               "redis+sentinel://HOST:26379/MASTER or redis+cluster://HOST:6379")


def test_a_redis_url_of_another_form_is_a_configuration_error(tmp_path: Path) -> None:
    """``up --redis-url notaurl`` was a 34-line traceback; a node given it, another."""
    res = _up_with(tmp_path, ["--redis-url", "notaurl"], _env())
    assert (res.returncode, res.stderr.strip().splitlines()) == (
        2, [f"pixelfox: --redis-url: 'notaurl' is not a Redis URL: {REDIS_FORMS} (bad-request)"]), res.stderr
    res = subprocess.run([sys.executable, "-m", "nodes.manager"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=30, check=False, env=_env(PIXELFOX_CLUSTER__SECRET=SECRET, PIXELFOX_METRICS_PORT="-1",
                                                           PIXELFOX_REDIS__URL="http://:hunter2@host/0"))
    assert (res.returncode, res.stderr.strip().splitlines()) == (2, [
        "configuration error:",
        f"  PIXELFOX_REDIS__URL: 'http://:***@host/0' is not a Redis URL: {REDIS_FORMS}"]), res.stderr
    assert not (tmp_path / ".pixelfox" / "logs").exists() and _leftovers(tmp_path) == []


def test_up_refuses_an_external_redis_that_does_not_answer_before_starting_a_node(tmp_path: Path) -> None:
    """It started every node, waited ~98 s and said only `cluster not ready after 90 s`."""
    port = free_port()  # nothing listens there
    started = time.monotonic()
    res = _up(tmp_path, _env(PIXELFOX_REDIS__URL=f"redis://:hunter2@127.0.0.1:{port}/0"), timeout_s=30)
    assert time.monotonic() - started < 20
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    want = f"pixelfox: PIXELFOX_REDIS__URL: cannot reach Redis at redis://:***@127.0.0.1:{port}/0: Error 111 connecting"
    assert lines[0].startswith(want) and lines[0].endswith("(unavailable)"), lines
    assert "hunter2" not in res.stderr
    assert not (tmp_path / ".pixelfox" / "logs").exists() and _leftovers(tmp_path) == []


# ---- the cluster secret --------------------------------------------------------------------------------

MAKE = "make one with `openssl rand -base64 32`"
BAD_SECRETS = [
    ({}, f"PIXELFOX_CLUSTER__SECRET is required: {MAKE}"),
    ({"PIXELFOX_CLUSTER__SECRET": "x"}, f"PIXELFOX_CLUSTER__SECRET is 1 characters long; use at least 16: {MAKE}"),
    ({"PIXELFOX_CLUSTER__SECRET": "change-me-openssl-rand-base64-32"},  # what deploy/k8s/pixelfox.yaml ships
     f"PIXELFOX_CLUSTER__SECRET is the example's placeholder (change-me...): {MAKE}"),
]


@pytest.mark.parametrize("module", ["nodes.manager", "nodes.storage", "web"])
@pytest.mark.parametrize(("env", "why"), BAD_SECRETS, ids=["missing", "short", "placeholder"])
def test_a_node_refuses_a_missing_short_or_placeholder_secret(tmp_path: Path, module: str, env: dict[str, str],
                                                              why: str) -> None:
    """A manager started on `x` or the Kubernetes placeholder; a missing one was exit 1 without
    `configuration error:`; a web or storage node did not check it at all."""
    res = subprocess.run([sys.executable, "-m", module], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         check=False, env=_env(PIXELFOX_METRICS_PORT="-1", **env))
    assert (res.returncode, res.stderr.strip().splitlines()) == (2, ["configuration error:", f"  {why}"]), res.stderr
    assert not list(tmp_path.iterdir())  # stopped before it made anything (a database, a data folder)
