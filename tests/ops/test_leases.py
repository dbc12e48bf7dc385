"""Redis leases (pixelfox.leases) against a real redis-server."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from pixelfox.leases import Lease, lease_key, run_with_lease


async def test_one_holder_at_a_time_and_takeover(redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    try:
        await r.delete(lease_key("t1"))
        a, b = Lease(r, "t1", ttl_s=0.5, owner="a"), Lease(r, "t1", ttl_s=0.5, owner="b")
        assert await a.acquire()
        assert a.held and a.epoch >= 1
        assert not await b.acquire()
        assert not b.held
        assert (await a.holder()).startswith("a:")
        assert await a.renew()
        first = a.epoch
        await asyncio.sleep(0.7)  # a stops renewing: TTL runs out
        assert not a.held  # local view also expired (monotonic clock)
        assert await b.acquire()
        assert b.epoch == first + 1  # fencing token grows
        assert not await a.renew()  # the old holder cannot extend someone else's lease
        await b.release()
        assert await r.get(lease_key("t1")) is None
    finally:
        await r.aclose()


async def test_run_with_lease_runs_work_on_one_holder(redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    try:
        runs: dict[str, int] = {"a": 0, "b": 0}
        stop_a, stop_b = asyncio.Event(), asyncio.Event()

        def work(name: str):
            async def go() -> None:
                runs[name] += 1
            return go

        ta = asyncio.create_task(run_with_lease(Lease(r, "t2", 1.0, "a"), stop_a, work("a"), every_s=0.05))
        await asyncio.sleep(0.05)
        tb = asyncio.create_task(run_with_lease(Lease(r, "t2", 1.0, "b"), stop_b, work("b"), every_s=0.05))
        await asyncio.sleep(0.5)
        assert runs["a"] > 3 and runs["b"] == 0
        stop_a.set()  # a leaves and releases: b takes over without waiting for the TTL
        await ta
        await asyncio.sleep(0.3)
        assert runs["b"] > 0
        stop_b.set()
        await tb
    finally:
        await r.aclose()
