"""Rate limits at the HTTP edge (only the web node sees client addresses).

Every budget goes through :func:`take`. Uploads: ``pixelfox:{limits}:ip:<address>`` counts the
uploads a client starts (``POST /api/v1/images``, ``/api/v1/uploads``, ``/api/1/upload``); more
than ``limits.ip_uploads_per_minute`` in one minute gets 429 ``rate-limited``. Logins,
registrations and reports have their own keys. :func:`take` checks and counts one attempt against one or more
budgets in a single Lua script, so parallel requests cannot all pass the check before any of them
is counted. A budget refills when its window (set by its first attempt) ends.

The address is ``request.remote``: behind a reverse proxy listed in ``PIXELFOX_TRUSTED_PROXIES``,
the client address that proxy forwarded (:func:`web.app.forwarded_for`). Per-user limits (rate,
open uploads, quota) are the manager's (:mod:`nodes.manager.upload_limits`).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.cluster import RedisCluster

from pixelfox import errors
from web.keys import REDIS, SETTINGS

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

# KEYS: counters to give one attempt back to (never below zero, never creating a key).
_GIVE_BACK = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end
return 0
"""

Redis = aioredis.Redis | RedisCluster


async def take(redis: Redis, budgets: Sequence[tuple[str, int]], window_s: int) -> int:
    """Count one attempt against every ``(key, limit)`` budget, atomically; 0 when allowed.

    When any budget is spent, nothing is counted and the answer is the seconds until it
    refills (>= 1). Keys must share a hash tag (one slot on Redis Cluster).
    """
    if not budgets:
        return 0
    keys = [key for key, _ in budgets]
    args = [limit for _, limit in budgets] + [window_s]
    return int(await redis.register_script(_TAKE)(keys=keys, args=args))


async def give_back(redis: Redis, keys: Sequence[str]) -> None:
    """Undo one counted attempt on each key (an attempt that turned out not to be a failure)."""
    if keys:
        await redis.register_script(_GIVE_BACK)(keys=list(keys))


def retry_after(response: web.StreamResponse, seconds: int) -> web.StreamResponse:
    response.headers["Retry-After"] = str(max(int(seconds), 1))
    return response


async def check_ip(request: web.Request) -> None:
    """Count one upload for the caller's IP; raises RateLimited past the per-minute limit."""
    limit = request.app[SETTINGS].limits.ip_uploads_per_minute
    if not limit:
        return
    key = f"pixelfox:{{limits}}:ip:{request.remote or 'unknown'}"
    if wait := await take(request.app[REDIS], [(key, limit)], 60):
        raise errors.RateLimited(f"more than {limit} uploads a minute from this address; wait {wait} s", wait)
