"""Per-address upload budgets in Redis, shared by the web node and the manager.

:func:`take` checks and counts one attempt against one or more ``(key, limit)`` budgets in a single
Lua script, so parallel requests cannot all pass the check before any of them is counted; a budget
refills when its window (set by its first attempt) ends. :func:`spend` counts one upload against a
list of :class:`Budget`\\ s and raises ``RateLimited`` naming the spent one. The anonymous budget
(:func:`anonymous_budget`, key ``pixelfox:{limits}:anon-ip:<address>``) is spent by the web node for
its visitors (``web.ratelimit.check_ip``) and by the manager for ``CreateUpload`` calls that come
straight to its gRPC port without an API key or a node credential (``pixelfox put`` with no key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from pixelfox import errors, redisx

# KEYS: the counters; ARGV: one limit per key, then the window in seconds. Returns 0 when the
# attempt was counted on every key, else the seconds until the first spent key expires (nothing
# counted). A key left without an expiry gets the window, so no budget stays spent for ever.
_TAKE = """
local window = tonumber(ARGV[#KEYS + 1])
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i]) then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then
      redis.call('EXPIRE', key, window)
      ttl = window
    end
    return math.max(ttl, 1)
  end
end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 or redis.call('TTL', key) < 0 then
    redis.call('EXPIRE', key, window)
  end
end
return 0
"""
_TAKE_SCRIPT = redisx.script(_TAKE)

# KEYS: counters to give one attempt back to (never below zero, never creating a key).
_GIVE_BACK = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end
return 0
"""
_GIVE_BACK_SCRIPT = redisx.script(_GIVE_BACK)

Redis = aioredis.Redis | RedisCluster

#: seconds of an address' upload budgets (the settings say "per minute")
UPLOAD_WINDOW_S = 60


async def take(redis: Redis, budgets: Sequence[tuple[str, int]], window_s: int) -> int:
    """Count one attempt against every ``(key, limit)`` budget, atomically; 0 when allowed.

    When any budget is spent, nothing is counted and the answer is the seconds until it
    refills (>= 1). Keys must share a hash tag (one slot on Redis Cluster).
    """
    if not budgets:
        return 0
    keys = [key for key, _ in budgets]
    args = [limit for _, limit in budgets] + [window_s]
    return int(await _TAKE_SCRIPT(keys=keys, args=args, client=redis))


async def give_back(redis: Redis, keys: Sequence[str]) -> None:
    """Undo one counted attempt on each key (an attempt that turned out not to be a failure)."""
    if keys:
        await _GIVE_BACK_SCRIPT(keys=list(keys), client=redis)


@dataclass(frozen=True)
class Budget:
    """One address' upload budget: its Redis key, uploads a minute (0 = off), and the words its
    refusal adds after "from this address" (``who``) and after the wait (``advice``)."""

    key: str
    limit: int
    who: str = ""
    advice: str = ""


def anonymous_budget(address: str, limit: int) -> Budget:
    """The budget of uploads without an account or API key from ``address`` (an IP, no port)."""
    return Budget(f"pixelfox:{{limits}}:anon-ip:{address}", limit, " without an account",
                  "; log in or use an API key for more")


async def spend(redis: Redis, budgets: Sequence[Budget]) -> list[str]:
    """Count one upload against each budget, in order, over :data:`UPLOAD_WINDOW_S`; the keys counted.

    Raises RateLimited ("more than N uploads a minute from this address[ without an account]; wait
    S s[; log in ...]", ``retry_after_s`` 1-60) at the first spent budget, after giving back the
    upload to those already counted, so a refused upload counts against none.
    """
    counted: list[str] = []  # one take per budget, so the refusal names the spent one
    for budget in budgets:
        if not budget.limit:
            continue
        if wait := await take(redis, [(budget.key, budget.limit)], UPLOAD_WINDOW_S):
            await give_back(redis, counted)
            raise errors.RateLimited(f"more than {budget.limit} uploads a minute from this address{budget.who}; "
                                     f"wait {wait} s{budget.advice}", wait)
        counted.append(budget.key)
    return counted


def peer_address(peer: str) -> str:
    """The IP of a gRPC peer string without its port: ``ipv4:10.0.0.5:4242`` -> ``10.0.0.5``,
    ``ipv6:[::1]:4242`` -> ``::1``; anything else (``unix:...``) whole, "unknown" when empty."""
    kind, _, rest = (peer or "").partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] if rest.startswith("[") else rest
        return host.strip("[]") or rest
    return peer or "unknown"
