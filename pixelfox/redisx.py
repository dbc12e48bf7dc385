"""One factory for Redis clients, so every part of PixelFox connects the same way.

The URL in ``PIXELFOX_REDIS__URL`` picks the mode (ECOSYSTEM.md §3):

* single — ``redis://[:password@]host:6379/0``, ``rediss://...`` (TLS) or ``unix:///path.sock``;
* Sentinel — ``redis+sentinel://[:password@]s1:26379,s2:26379/<master name>[/db]``: the
  client asks the sentinels for the current master and follows a fail-over;
* Cluster — ``redis+cluster://[:password@]n1:6379,n2:6379``: ``RedisCluster`` with those
  start-up nodes.

Every PixelFox key is ``pixelfox:{<tag>}:...`` and every multi-key command, transaction or
script touches keys of one tag only (the queue's ``{jobs}``, ``{registry}``, one upload's id,
one lease), so all of them work on Redis Cluster: one tag, one hash slot.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from pixelfox import errors
from pixelfox.config import RedisSettings, hide_password

# no socket_timeout: blocking reads (XREADGROUP BLOCK) must be able to wait
_COMMON: dict[str, Any] = {"decode_responses": False}


class SentinelBlockingConnectionPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The Sentinel-managed master pool, blocking like the single-Redis pool: a caller beyond
    ``max_connections`` waits up to ``timeout`` seconds for a free connection, then
    ``ConnectionError`` (redis-py's Sentinel pool raises ``MaxConnectionsError`` at once).
    ``SentinelConnectionPool`` picks the connection class and master address;
    ``BlockingConnectionPool`` hands connections out (neither overrides the other's part)."""


def script(lua: str) -> AsyncScript:
    """Lua source ``lua`` as a script any client runs (``await s(keys=..., args=..., client=redis)``): its
    SHA-1 is computed once, here, and each call is an EVALSHA that loads the script on NOSCRIPT (as
    ``redis.register_script`` does for one client). Made once per module, not per call. The source is
    sent as UTF-8, as every client of :func:`connect` encodes it."""
    return AsyncScript(None, lua.encode())  # type: ignore[arg-type]  # bytes: no client needed to encode


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hosts = netloc.rsplit("@", 1)[-1]
    out = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":")
        out.append((host.strip("[]"), int(port))) if host else out.append((part.strip(), default_port))
    return out


def mode(url: str) -> str:
    """``single``, ``sentinel`` or ``cluster`` for a Redis URL (see module doc)."""
    scheme = urlsplit(url).scheme
    return {"redis+sentinel": "sentinel", "redis+cluster": "cluster"}.get(scheme, "single")


def connect(settings: RedisSettings) -> aioredis.Redis:
    """A Redis client for ``settings.url`` in the mode its scheme names (see module doc).

    Single Redis and the Sentinel master get a blocking pool of ``settings.max_connections``
    (callers beyond it wait up to ``settings.pool_timeout_s`` seconds, then
    ``ConnectionError``); Cluster gets ``max_connections`` per node (redis-py's cluster client
    has no blocking pool: beyond it a call fails at once).
    The return type is ``redis.asyncio.Redis`` for single and Sentinel; for Cluster it is a
    ``RedisCluster``, which offers the same single-key, pipeline and script calls. Raises
    ``ValueError`` for a Sentinel URL without a master name.
    """
    url = settings.url
    kind = mode(url)
    if kind == "single":
        # a blocking pool: a burst beyond max_connections waits for a free connection (up to
        # pool_timeout_s) instead of failing at once with MaxConnectionsError (redis-py's default
        # pool, 100 connections, raises; 500 concurrent uploads hit it)
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=settings.max_connections, timeout=settings.pool_timeout_s,
            health_check_interval=10, **_COMMON)
        client = aioredis.Redis(connection_pool=pool)
        client.auto_close_connection_pool = True  # aclose() closes the pool too, as with from_url
        return client
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    if kind == "cluster":
        nodes = [ClusterNode(h, p) for h, p in _hosts(parts.netloc, 6379)]
        return RedisCluster(startup_nodes=nodes, password=password, socket_connect_timeout=5,  # type: ignore[return-value]
                            max_connections=settings.max_connections, **_COMMON)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a Sentinel URL needs the master name: redis+sentinel://host:26379/<master>[/db]")
    db = int(path[1]) if len(path) > 1 else 0
    sentinel = Sentinel(_hosts(parts.netloc, 26379), sentinel_kwargs={"socket_connect_timeout": 5},
                        password=password, db=db, socket_connect_timeout=5, **_COMMON)
    return sentinel.master_for(path[0], connection_pool_class=SentinelBlockingConnectionPool,
                               max_connections=settings.max_connections, timeout=settings.pool_timeout_s)


async def ping(settings: RedisSettings, timeout_s: float = 5.0) -> None:
    """Connect to ``settings.url`` and send PING, waiting at most ``timeout_s`` seconds (``pixelfox up``
    before it starts a node on an external Redis). Raises Unavailable with one line naming the URL,
    its password hidden, and the reason (refused, unknown host, no answer, wrong password)."""
    client = connect(settings)
    try:
        async with asyncio.timeout(timeout_s):
            await client.ping()
    except TimeoutError:
        raise errors.Unavailable(f"cannot reach Redis at {hide_password(settings.url)}: no answer within "
                                 f"{timeout_s:g} s") from None
    except (RedisError, OSError, ValueError) as exc:
        reason = str(exc).split(" : <", 1)[0]  # Sentinel's "No master found for 'x' : <the client's repr>"
        raise errors.Unavailable(f"cannot reach Redis at {hide_password(settings.url)}: "
                                 f"{hide_password(reason)}") from None
    finally:
        await client.aclose()
