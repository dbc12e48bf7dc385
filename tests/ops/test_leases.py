"""Redis leases (pixelfox.leases) against a real redis-server."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

from pixelfox.config import DatabaseSettings
from pixelfox.db.engine import create_schema, make_engine
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


#: a manager's outbox drainer alone, in its own process: PIXELFOX_LEASE_S=2, a pass every 0.5 s
OUTBOX_MANAGER = """
import asyncio, sys
import redis.asyncio as aioredis
from nodes.manager.outbox import OutboxDrainer
from pixelfox.config import DatabaseSettings
from pixelfox.db.engine import make_engine, session_factory
from pixelfox.queue import JobQueue

async def main() -> None:
    r = aioredis.from_url(sys.argv[1])
    sessions = session_factory(make_engine(DatabaseSettings(url=sys.argv[2])))
    await OutboxDrainer(sessions, JobQueue(r, consumer=sys.argv[3], lease_s=2.0), interval_s=0.5).run(asyncio.Event())

asyncio.run(main())
"""


async def _holder(r: aioredis.Redis, name: str, timeout_s: float) -> float:
    """Wait until an owner called ``name`` holds the ``outbox`` lease; the monotonic time it was seen."""
    for _ in range(int(timeout_s / 0.05)):
        if ((await r.get(lease_key("outbox"))) or b"").decode().startswith(f"{name}:"):
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} did not take the outbox lease within {timeout_s} s")


async def test_outbox_duty_of_a_killed_manager_moves_within_the_queue_lease(redis_url: str, tmp_path: Path) -> None:
    """PIXELFOX_LEASE_S=2, an outbox pass every 0.5 s, two managers' drainers in their own processes:
    the holder of the ``outbox`` lease is SIGKILLed, and the other holds it (and drains) within the
    2 s queue lease - as fast as the dead manager's jobs move. The outbox lease was 15 s whatever
    PIXELFOX_LEASE_S said."""
    r = aioredis.from_url(redis_url)
    db = f"sqlite+aiosqlite:///{tmp_path / 'manager.db'}"
    engine = make_engine(DatabaseSettings(url=db))
    await create_schema(engine)
    await engine.dispose()
    await r.delete(lease_key("outbox"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs: dict[str, asyncio.subprocess.Process] = {}

    async def manager(name: str) -> None:
        procs[name] = await asyncio.create_subprocess_exec(sys.executable, "-c", OUTBOX_MANAGER, redis_url, db, name,
                                                           env=env)

    try:
        await manager("manager1")
        await _holder(r, "manager1", 30)
        await manager("manager2")
        await asyncio.sleep(2.0)  # manager2 is up and tries for the lease every 0.5 s
        procs["manager1"].kill()
        killed = time.monotonic()
        took = await _holder(r, "manager2", 30) - killed
        print(f"outbox lease of a SIGKILLed manager taken over after {took:.2f} s (PIXELFOX_LEASE_S=2)")
        assert took < 2.0 + 0.5 + 0.5  # the lease's TTL, one interval, slack
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        await r.aclose()
