"""Leases in Redis: work that must run on one manager at a time (sweepers, repair, tier moves).

A lease is one key ``pixelfox:{lease:<name>}`` holding the owner's id with a TTL; taking it
is ``SET NX PX``, renewing and releasing are compare-and-set Lua scripts, so only the holder
can extend or drop it. Every successful take also bumps ``pixelfox:{lease:<name>}:epoch``
(same hash slot, so it works on Redis Cluster), a *fencing token*: work that writes
somewhere else can carry it and the target can refuse a smaller one than it has seen.

Typical use (a loop run by every manager; only the lease holder does the work)::

    lease = Lease(redis, "repair", ttl_s=15, owner=node_id)
    await run_with_lease(lease, stop, repair_once, every_s=5)

If the holder dies, its key expires after ``ttl_s`` and another manager takes over within
``ttl_s + every_s`` seconds. A holder that cannot renew (Redis unreachable, or the key was
taken by someone else after a long pause) stops treating itself as holder at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def lease_key(name: str) -> str:
    """The Redis key of lease ``name`` (hash-tagged: the lease and its epoch share a slot)."""
    return f"pixelfox:{{lease:{name}}}"


class Lease:
    """One named lease, held by ``owner`` (default: a random id) for ``ttl_s`` seconds at a time.

    ``held`` is True between a successful :meth:`acquire`/:meth:`renew` and the moment the
    lease is known lost or its TTL has passed locally (measured with the monotonic clock, so
    a paused process never believes it still holds an expired lease). ``epoch`` is the
    fencing token of the current hold (0 when not held). Redis errors are logged and count
    as "not held"; no method raises for them.
    """

    def __init__(self, redis: aioredis.Redis, name: str, ttl_s: float = 15.0, owner: str = "") -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.redis = redis
        self.name = name
        self.ttl_s = ttl_s
        self.owner = f"{owner or 'holder'}:{secrets.token_hex(6)}"
        self.key = lease_key(name)
        self.epoch = 0
        self._valid_until = 0.0

    @property
    def held(self) -> bool:
        return self.epoch > 0 and time.monotonic() < self._valid_until

    async def acquire(self) -> bool:
        """Take the lease if it is free (or renew it if we hold it); True when we hold it after."""
        if self.held:
            return await self.renew()
        started = time.monotonic()
        try:
            ok = await self.redis.set(self.key, self.owner, nx=True, px=int(self.ttl_s * 1000))
            if not ok:
                self.epoch = 0
                return False
            self.epoch = int(await self.redis.incr(f"{self.key}:epoch"))
        except RedisError as exc:
            logger.warning("lease %s: acquire failed: %s", self.name, exc)
            self.epoch = 0
            return False
        self._valid_until = started + self.ttl_s
        logger.info("lease %s taken by %s (epoch %d)", self.name, self.owner, self.epoch)
        return True

    async def renew(self) -> bool:
        """Extend our hold by ``ttl_s``; False (and no longer held) if someone else holds it now."""
        started = time.monotonic()
        try:
            ok = await self.redis.eval(_RENEW, 1, self.key, self.owner, int(self.ttl_s * 1000))  # type: ignore[misc]
        except RedisError as exc:
            logger.warning("lease %s: renew failed: %s", self.name, exc)
            ok = 0
        if not ok:
            if self.epoch:
                logger.warning("lease %s lost by %s", self.name, self.owner)
            self.epoch = 0
            return False
        self._valid_until = started + self.ttl_s
        return True

    async def release(self) -> None:
        """Drop the lease if we hold it, so another holder need not wait for the TTL."""
        was = self.epoch
        self.epoch = 0
        if not was:
            return
        with contextlib.suppress(RedisError):
            await self.redis.eval(_RELEASE, 1, self.key, self.owner)  # type: ignore[misc]

    async def holder(self) -> str:
        """The current holder's owner id ("" when free)."""
        raw = await self.redis.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else (raw or "")

    async def left_s(self) -> float:
        """Seconds the current hold lasts unless renewed (0 when free)."""
        return max(0, await self.redis.pttl(self.key)) / 1000


async def run_with_lease(
    lease: Lease,
    stop: asyncio.Event,
    work: Callable[[], Awaitable[None]],
    every_s: float = 5.0,
) -> None:
    """Every ``every_s`` seconds until ``stop``: take or renew ``lease``, and run ``work`` if held.

    ``work`` should finish well within ``lease.ttl_s`` (or renew the lease itself); its
    exceptions are logged and the loop goes on. The lease is released when ``stop`` is set.
    """
    try:
        while not stop.is_set():
            if await lease.acquire():
                try:
                    await work()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("lease %s: work failed", lease.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
    finally:
        await lease.release()
