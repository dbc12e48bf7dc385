"""Redis Cluster mode (``redis+cluster://``, pixelfox.redisx) against a real three-node Redis Cluster.

The fixture starts three ``redis-server --cluster-enabled yes`` masters on loopback, joins them
with ``redis-cli --cluster create`` and waits for ``cluster_state:ok``. The tests check that the
keys PixelFox uses keep one hash slot per tag, and run the web node's sessions, the leases, the
registry, the job queue and the upload state through a ``RedisCluster`` client.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from nodes.manager import objects, registry
from pixelfox import ratelimit, readmodel, redisx, uploadstate
from pixelfox.cli.launcher import free_port
from pixelfox.config import RedisSettings
from pixelfox.leases import lease_key
from pixelfox.queue import streams
from pixelfox.session_index import index_key
from tests.ops.redis_checks import (
    check_leases_registry_and_queue,
    check_read_model,
    check_web_app_factory,
    check_web_sessions,
)
from web.sessions import session_key

pytestmark = [
    # aiohttp-session 2.12 stores its state under str request keys
    pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning"),
]


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, and below the kernel's
    ephemeral range (32768-): there an outgoing connection could take it before redis binds it."""
    for _ in range(200):
        port = free_port()
        if port + 10000 < 32768 and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis+cluster://`` URL of a fresh three-master Redis Cluster (no replicas, no persistence)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed (Debian: apt-get install redis-server)")
    d: Path = tmp_path_factory.mktemp("rcluster")
    ports = [_cluster_port() for _ in range(3)]
    procs = [
        subprocess.Popen(
            ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--dir", str(d),
             "--cluster-enabled", "yes", "--cluster-config-file", str(d / f"nodes-{p}.conf"),
             "--appendonly", "no", "--save", "", "--logfile", str(d / f"redis-{p}.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for p in ports
    ]
    clients = [redis.Redis(port=p, socket_timeout=2) for p in ports]
    try:
        _wait(lambda: all(c.ping() for c in clients), "the cluster nodes did not start", d)
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False)
        assert create.returncode == 0, f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}"
        _wait(lambda: all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients),
              "the cluster did not reach cluster_state:ok", d)
        yield f"redis+cluster://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
    finally:
        for c in clients:
            c.close()
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(10)


def _wait(ok: Any, what: str, logs: Path, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ok():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            tails = "\n".join(f"{f.name}: {f.read_text()[-600:]}" for f in sorted(logs.glob("redis-*.log")))
            pytest.fail(f"{what} within {timeout_s:.0f} s\n{tails}")
        time.sleep(0.1)


@pytest.fixture
async def cluster(cluster_url: str) -> Any:
    r = redisx.connect(RedisSettings(url=cluster_url))
    yield r
    await r.aclose()


# Keys PixelFox uses, by hash tag: each group must map to one slot, since every multi-key command,
# MULTI or script works on keys of one group.
KEY_GROUPS = {
    "jobs": [streams.STREAM, streams.BATCH, streams.DELAYED, streams.DEAD, streams.KNOWN],
    "registry": [registry.KEY, registry.MAINTENANCE_KEY],
    "lease": [lease_key("repair"), f"{lease_key('repair')}:epoch"],
    "upload": [uploadstate.state_key("01JUPLOAD"), uploadstate.lock_key("01JUPLOAD")],
    "session": [session_key("A" * 43), session_key("B" * 43), index_key("user-1")],
    "login": ["pixelfox:{login}:fail:acct:0123abcd", "pixelfox:{login}:fail:ip:127.0.0.1",
              "pixelfox:{login}:fail:acct-ip:0123abcd:127.0.0.1"],
    "gc": [objects.PENDING, objects.PURGES],
    "img": [readmodel.key("abc"), readmodel.key("xyz"), readmodel.PLACEMENT_KEY],
}


async def test_connect_gives_cluster_client_and_one_slot_per_tag(cluster: Any) -> None:
    assert redisx.mode("redis+cluster://127.0.0.1:1,127.0.0.1:2") == "cluster"
    assert isinstance(cluster, RedisCluster)
    assert await cluster.set("pixelfox:{probe}:x", b"1") and await cluster.get("pixelfox:{probe}:x") == b"1"
    assert len(cluster.get_primaries()) == 3  # found all three masters from the two start-up nodes
    slots: dict[str, set[int]] = {}
    for tag, keys in KEY_GROUPS.items():
        slots[tag] = {int(await cluster.execute_command("CLUSTER KEYSLOT", k)) for k in keys}
        assert len(slots[tag]) == 1, f"{tag} keys span slots {slots[tag]}: {keys}"
        (slot,) = slots[tag]
        assert slot == cluster.keyslot(keys[0])  # the client routes by the same slot the server computes
    # the tags do spread over more than one node (so the tests below really cross nodes)
    owners = {cluster.get_node_from_key(keys[0]).name for keys in KEY_GROUPS.values()}
    assert len(owners) > 1, owners


async def test_read_model_on_cluster(cluster: Any) -> None:
    await check_read_model(cluster)


async def test_web_sessions_on_cluster(cluster: Any) -> None:
    await check_web_sessions(cluster)


async def test_web_app_factory_uses_cluster(cluster_url: str, cluster: Any) -> None:
    await check_web_app_factory(cluster_url, cluster)


async def test_leases_registry_queue_and_uploads_on_cluster(cluster: Any) -> None:
    await check_leases_registry_and_queue(cluster)


async def test_rate_budgets_on_cluster(cluster: Any) -> None:
    """The login's three budgets in one script (one slot: {login}), refused on all, given back and
    forgotten, on the master of that slot; each key expires."""
    keys = ["pixelfox:{login}:fail:acct-ip:0123abcd:127.0.0.1", "pixelfox:{login}:fail:ip:127.0.0.1",
            "pixelfox:{login}:fail:acct:0123abcd"]
    await ratelimit.forget(cluster, keys)
    budgets = list(zip(keys, (2, 10, 20), strict=True))
    assert [await ratelimit.take(cluster, budgets, 60) for _ in range(3)] == [0, 0, 30]
    assert [round(h) for h in await ratelimit.held(cluster, keys)] == [2, 2, 2]
    await ratelimit.give_back(cluster, keys[1:])
    assert [round(h) for h in await ratelimit.held(cluster, keys)] == [2, 1, 1]
    ttls = [await cluster.pttl(ratelimit.state_key(k)) for k in keys]
    assert all(0 < ms <= 60_000 for ms in ttls), ttls
    await ratelimit.forget(cluster, keys)
    assert await ratelimit.held(cluster, keys) == [0.0, 0.0, 0.0]


async def test_read_model_follows_the_database_generation_on_cluster(cluster: Any) -> None:
    """A manager on a new database generation empties the image cache on every master (SCAN + DEL)."""
    await cluster.set(readmodel.key("abc"), b"D")
    await cluster.set(readmodel.key("xyz"), b"P")
    await cluster.set("pixelfox:{probe}:keep", b"1")
    assert await readmodel.follow_database(cluster, "gen-a") >= 2
    assert await cluster.get(readmodel.key("abc")) is None and await cluster.get(readmodel.key("xyz")) is None
    assert await cluster.get("pixelfox:{probe}:keep") == b"1"  # only the image cache goes
    await cluster.set(readmodel.key("abc"), b"D")
    assert await readmodel.follow_database(cluster, "gen-a") is None  # the same database: the cache stays
    assert await cluster.get(readmodel.key("abc")) == b"D"
