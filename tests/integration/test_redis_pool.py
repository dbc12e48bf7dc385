"""The Redis client's connection pool under a burst (real ``redis-server`` of the shared cluster).

redis-py's default asyncio pool (100 connections) raises ``MaxConnectionsError`` at once when a
burst needs more; 500 concurrent uploads made the manager answer "internal error" that way.
:func:`pixelfox.redisx.connect` uses a blocking pool: callers beyond ``max_connections`` wait.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from pixelfox import redisx
from pixelfox.config import RedisSettings


async def _burst(url: str) -> tuple[list[Any], float, int]:
    client = redisx.connect(RedisSettings(url=url, max_connections=3, pool_timeout_s=30))
    key = f"pixelfox:{{test}}:empty:{uuid.uuid4().hex}"
    name = f"pool-test-{uuid.uuid4().hex[:8]}"
    try:
        await client.client_setname(name)
        started = time.monotonic()
        # 30 callers that each hold a connection for 0.2 s (BLPOP on an empty list)
        results = await asyncio.gather(*(client.blpop([key], timeout=0.2) for _ in range(30)),
                                       return_exceptions=True)
        elapsed = time.monotonic() - started
        return results, elapsed, client.connection_pool.max_connections
    finally:
        await client.aclose()


def test_a_burst_beyond_the_pool_waits_instead_of_failing(cluster: Any) -> None:
    results, elapsed, max_connections = asyncio.run(_burst(cluster.redis_url))
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert results == [None] * 30  # every BLPOP timed out normally (the list stays empty)
    assert max_connections == 3
    # at most 3 at a time: 10 rounds of 0.2 s (30 at once would take 0.2 s)
    assert elapsed >= 1.5, elapsed
