"""Redis URL modes (pixelfox.redisx): single and a real Sentinel (redis-server --sentinel).

The Sentinel case runs the parts that must survive a fail-over through a master found via
the sentinel: leases, the registry with its maintenance set, a one-slot stream transaction, the
job queue, the upload state and the web sessions (the checks in tests/ops/redis_checks.py, which
tests/ops/test_redis_cluster.py runs on a real Redis Cluster).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pixelfox import redisx
from pixelfox.cli.launcher import free_port
from pixelfox.config import RedisSettings
from tests.ops.redis_checks import check_leases_registry_and_queue, check_web_app_factory, check_web_sessions


def test_modes_from_url() -> None:
    assert redisx.mode("redis://127.0.0.1:6379/0") == "single"
    assert redisx.mode("unix:///run/redis.sock") == "single"
    assert redisx.mode("redis+sentinel://a:26379,b:26379/mymaster") == "sentinel"
    assert redisx.mode("redis+cluster://a:6379,b:6379") == "cluster"
    with pytest.raises(ValueError, match="master name"):
        redisx.connect(RedisSettings(url="redis+sentinel://127.0.0.1:26379"))


@pytest.fixture(scope="module")
def sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    d: Path = tmp_path_factory.mktemp("sentinel")
    mport, sport = free_port(), free_port()
    master = subprocess.Popen(["redis-server", "--port", str(mport), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    conf = d / "sentinel.conf"
    conf.write_text(f"port {sport}\nbind 127.0.0.1\nsentinel monitor pfmaster 127.0.0.1 {mport} 1\n"
                    "sentinel down-after-milliseconds pfmaster 2000\n")
    sentinel = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                s = redis.Redis(port=sport)
                if s.sentinel_master("pfmaster"):
                    s.close()
                    break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("sentinel did not come up")
            time.sleep(0.1)
        yield f"redis+sentinel://127.0.0.1:{sport}/pfmaster/0"
    finally:
        for p in (sentinel, master):
            p.terminate()
            p.wait(10)


async def test_sentinel_mode_runs_leases_registry_and_queue(sentinel_url: str) -> None:
    r = redisx.connect(RedisSettings(url=sentinel_url))
    try:
        await check_leases_registry_and_queue(r)
    finally:
        await r.aclose()


@pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")  # aiohttp-session's str request keys
async def test_sentinel_mode_runs_web_sessions(sentinel_url: str) -> None:
    r = redisx.connect(RedisSettings(url=sentinel_url))
    try:
        await check_web_sessions(r)
        await check_web_app_factory(sentinel_url, r)
    finally:
        await r.aclose()


async def test_sentinel_pool_makes_a_burst_wait_instead_of_failing(sentinel_url: str) -> None:
    """As in single mode (tests/integration/test_redis_pool.py): 30 callers on a 3-connection
    pool all succeed, 3 at a time, instead of MaxConnectionsError for the 4th."""
    r = redisx.connect(RedisSettings(url=sentinel_url, max_connections=3, pool_timeout_s=30))
    key = f"pixelfox:{{test}}:empty:{uuid.uuid4().hex}"
    try:
        assert isinstance(r.connection_pool, redisx.SentinelBlockingConnectionPool)
        started = time.monotonic()
        results = await asyncio.gather(*(r.blpop([key], timeout=0.2) for _ in range(30)), return_exceptions=True)
        elapsed = time.monotonic() - started
    finally:
        await r.aclose()
    assert results == [None] * 30, [x for x in results if x is not None][:3]
    assert elapsed >= 1.5, elapsed  # 10 rounds of 0.2 s: never more than 3 connections at once
