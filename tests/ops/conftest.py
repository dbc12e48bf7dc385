"""Fixtures and helpers for the ops tests: a private redis-server per module, own local clusters."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pixelfox.cli.launcher import Counts, LocalCluster, free_port
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.grpcx.client import channel
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.conftest import start_local
from tests.ops.pg import Postgres, start_postgres


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throw-away ``redis-server`` on a free loopback port (no persistence)."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        r = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        r.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


#: a cluster whose repair reacts within about a second: a node is out after 2 s without a heartbeat
#: (sent every 0.5 s) and a repair pass runs every 0.5 s; a silent storage node still counts as
#: holding its objects for the default 600 s (PIXELFOX_REPAIR__LOST_AFTER_S)
FAST_REPAIR_ENV: dict[str, str] = {
    "PIXELFOX_NODE_TIMEOUT_S": "2", "PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5",
    "PIXELFOX_REPAIR__INTERVAL_S": "0.5", "PIXELFOX_REPAIR__LOST_AFTER_S": "600"}


def metadata_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest, name: str) -> str:
    """A new, empty metadata database URL: a SQLite file in ``tmp_path`` for ``backend`` "sqlite",
    else database ``name`` on the session's real PostgreSQL (the ``postgres`` fixture)."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.create_db(name)


def start_cluster(root: Path, counts: Counts, extra_env: dict[str, str] | None = None,
                  timeout_s: float = 90.0) -> LocalCluster:
    """Start an own :class:`LocalCluster` in ``root`` (for tests that kill or reconfigure nodes)."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
    local = LocalCluster(root, counts, extra_env=dict(extra_env or {}))
    start_local(local, timeout_s)
    return local


def cli(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``pixelfox`` command in ``root`` (it finds the local cluster there)."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "pixelfox", *args], cwd=root, capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


def status(root: Path) -> dict[str, dict[str, Any]]:
    """``pixelfox status --json`` as a dict node id -> row."""
    res = cli(root, "status", "--json")
    assert res.stdout, res.stderr
    return {r["id"]: r for r in json.loads(res.stdout)["nodes"]}


def admin_key(local: LocalCluster) -> str:
    return str(json.loads((local.state / "cluster.json").read_text())["admin_api_key"])


async def _healthy(local: LocalCluster, node_id: str) -> bool:
    async with channel(local.manager_address) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        reply = await stub.ListNodes(manager_pb2.ListNodesRequest(), metadata=api_key_metadata(admin_key(local)),
                                     timeout=10)
    return next((n.healthy for n in reply.nodes if n.node_id == node_id), False)


def healthy(local: LocalCluster, node_id: str) -> bool:
    """The manager's view of ``node_id`` now (False if unknown), asked in-process (a ``pixelfox status`` run
    costs ~1 s when loaded)."""
    return asyncio.run(_healthy(local, node_id))


def wait_for(pred, timeout_s: float = 15.0, every_s: float = 0.25) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every_s)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server for the session (tests create their own databases in it)."""
    try:
        pg = start_postgres()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield pg
    finally:
        pg.stop()
