"""Redis URL modes (pixelfox.redisx): single and a real Sentinel (redis-server --sentinel).

The Sentinel case runs the parts that must survive a fail-over through a master found via
the sentinel: a lease, the registry with its maintenance set, and a one-slot stream transaction.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from nodes.manager.registry import NodeRecord, Registry
from pixelfox import redisx
from pixelfox.cli.launcher import free_port
from pixelfox.config import RedisSettings
from pixelfox.leases import Lease
from pixelfox.v1 import common_pb2


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
        assert await r.ping()
        lease = Lease(r, "sentinel-test", ttl_s=5, owner="m1")
        assert await lease.acquire() and lease.epoch >= 1
        await lease.release()
        reg = Registry(r, node_timeout_s=5)
        await reg.upsert(NodeRecord(node_id="upload9", role=common_pb2.NODE_ROLE_UPLOAD, grpc_address="x:1"))
        await reg.set_maintenance("upload9", True)
        (rec,) = [n for n in await reg.all() if n.node_id == "upload9"]
        assert rec.maintenance and not reg.healthy(rec)
        # a MULTI over two keys of one tag (what the job queue does)
        async with r.pipeline(transaction=True) as pipe:
            pipe.xadd("pixelfox:{t}:stream", {"a": "1"})
            pipe.xlen("pixelfox:{t}:stream")
            _, n = await pipe.execute()
        assert n == 1
    finally:
        await r.aclose()
