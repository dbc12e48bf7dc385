"""Rate budgets in Redis: per address (uploads, logins, registrations, reports), shared by the web node and
the manager, and per user (the manager's uploads a minute, :mod:`nodes.manager.upload_limits`, whose admit
script counts it with :data:`GCRA_LUA`).

A budget of ``limit`` attempts per ``window_s`` is a GCRA (generic cell rate algorithm, the virtual
scheduling form of ATM Forum Traffic Management Specification 4.1 (af-tm-0121.000, 1999), as
described in Brandur Leach, "Rate limiting, Cells, and GCRA", brandur.org/rate-limiting, 2015, and
used by redis-cell): it holds ``limit`` attempts at once and refills one every
``window_s / limit`` seconds (the emission interval). Redis keeps one number per budget, its
theoretical arrival time (TAT: when the budget will be empty again); an attempt fits when, counted,
the TAT lies at most ``window_s`` ahead. So any ``t`` seconds hold at most ``limit + t * limit /
window_s`` attempts: unlike the fixed 60 s counter this replaces, ``limit`` attempts at the end of
one minute and ``limit`` more at the start of the next are refused (the second burst gets about
``2 s * limit / window_s`` of them); a client at a steady ``limit`` a window is never refused.

:func:`take` checks and counts one attempt against one or more ``(key, limit)`` budgets in a single
Lua script, so parallel requests cannot all pass the check before any of them is counted, and an
attempt refused by one budget is counted on none. :func:`give_back` undoes one, :func:`forget`
empties budgets, :func:`held` reads them. :func:`spend` counts one upload against a list of
:class:`Budget`\\ s and raises ``RateLimited`` naming the spent one. The anonymous budget
(:func:`anonymous_budget`, key ``pixelfox:{limits}:anon-ip:<address>``) is spent by the web node for
its visitors (``web.ratelimit.check_ip``) and by the manager for ``CreateUpload`` calls that come
straight to its gRPC port without an API key or a node credential (``pixelfox put`` with no key).

A budget named ``key`` lives in the hash :func:`state_key` (``<key>:gcra``, fields ``tat`` and
``step`` in microseconds of the Redis server's clock), same hash tag, so the keys of one :func:`take`
share a slot on Redis Cluster. The fixed-window counters of older nodes stay at ``key`` (a string)
and expire within their window: during a rolling upgrade old and new nodes each keep their own
budget rather than misreading the other's (an old node would read a TAT as a spent count, or fail
with WRONGTYPE on a hash). A state key of another type is overwritten, not an error. Every write
sets an expiry at the TAT (no budget key outlives the moment it is empty again).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from pixelfox import errors, redisx

#: suffix of the hash a budget lives in (:func:`state_key`)
STATE_SUFFIX = ":gcra"

# now (µs, the server's clock: every node of PixelFox agrees on it), as the first lines of each script.
# Writing after TIME needs effects replication: the default from Redis 5, asked for on 3.2 and 4.
_NOW = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

#: Lua over one budget's hash, after :data:`_NOW` (they read its ``now``): ``gcra_next(key, limit,
#: window)`` gives the wait (µs; <= 0: one more attempt fits now), the TAT and step it would store, and
#: whether the key holds another type (to delete first); ``gcra_store(key, tat, step, stale)`` counts it.
#: Shared by :data:`_TAKE` and the manager's per-user admit script (:mod:`nodes.manager.upload_limits`).
_GCRA = """
local function gcra_next(key, limit, window)
  local step, tat, kind = window / limit, now, redis.call('TYPE', key)['ok']
  if kind == 'hash' then
    tat = math.max(tonumber(redis.call('HGET', key, 'tat')) or now, now)
  end
  return tat + step - now - window, tat + step, step, kind ~= 'hash' and kind ~= 'none'
end
local function gcra_store(key, tat, step, stale)
  if stale then
    redis.call('DEL', key)
  end
  redis.call('HSET', key, 'tat', string.format('%.0f', tat), 'step', string.format('%.0f', step))
  redis.call('PEXPIRE', key, math.max(math.ceil((tat - now) / 1000), 1))
end
"""

#: the head of a Lua script that counts GCRA budgets: the server's ``now`` and the two functions of
#: :data:`_GCRA` (``gcra_next``, ``gcra_store``; a budget's hash is :func:`state_key` of its key)
GCRA_LUA = _NOW + _GCRA

# KEYS: the budgets' hashes; ARGV: one limit per key, then the window in seconds. Returns 0 when the
# attempt was counted on every key, else the seconds (rounded up, >= 1) until it fits on all of them
# (nothing counted). A limit of 0 or less never fits (the wait is the window). A key of another type
# than hash (none written by PixelFox) is taken as an empty budget and overwritten.
_TAKE = GCRA_LUA + """
local window = tonumber(ARGV[#KEYS + 1]) * 1000000
local wait, pending = 0, {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i])
  if limit <= 0 then
    wait = math.max(wait, window)
  else
    local w, tat, step, stale = gcra_next(key, limit, window)
    wait = math.max(wait, w)
    pending[i] = {tat, step, stale}
  end
end
if wait > 0 then
  return math.max(math.ceil(wait / 1000000), 1)
end
for i, key in ipairs(KEYS) do
  gcra_store(key, pending[i][1], pending[i][2], pending[i][3])
end
return 0
"""
_TAKE_SCRIPT = redisx.script(_TAKE)

# KEYS: budgets to give one attempt back to (never below empty, never creating a key; a key that is
# not a budget's hash is left alone).
_GIVE_BACK = _NOW + """
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key)['ok'] == 'hash' then
    local v = redis.call('HMGET', key, 'tat', 'step')
    local tat = (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0)
    if tat <= now then
      redis.call('DEL', key)
    else
      redis.call('HSET', key, 'tat', string.format('%.0f', tat))
      redis.call('PEXPIRE', key, math.max(math.ceil((tat - now) / 1000), 1))
    end
  end
end
return 0
"""
_GIVE_BACK_SCRIPT = redisx.script(_GIVE_BACK)

# KEYS: budgets; the attempts each holds now, as decimal strings (Lua numbers reply as integers)
_HELD = _NOW + """
local out = {}
for i, key in ipairs(KEYS) do
  local held = 0
  if redis.call('TYPE', key)['ok'] == 'hash' then
    local v = redis.call('HMGET', key, 'tat', 'step')
    local tat, step = tonumber(v[1]), tonumber(v[2])
    if tat and step and step > 0 then
      held = math.max(tat - now, 0) / step
    end
  end
  out[i] = string.format('%.6f', held)
end
return out
"""
_HELD_SCRIPT = redisx.script(_HELD)

Redis = aioredis.Redis | RedisCluster

#: seconds of an address' upload budgets (the settings say "per minute")
UPLOAD_WINDOW_S = 60


def state_key(key: str) -> str:
    """The Redis key budget ``key`` lives in: ``key`` + :data:`STATE_SUFFIX` (same hash tag, so the
    same Cluster slot as ``key``)."""
    return key + STATE_SUFFIX


async def take(redis: Redis, budgets: Sequence[tuple[str, int]], window_s: float) -> int:
    """Count one attempt against every ``(key, limit)`` budget (``limit`` attempts per ``window_s``
    seconds), atomically; 0 when allowed.

    When any budget has no room, nothing is counted and the answer is the seconds until the attempt
    fits on every budget (rounded up, >= 1; at most ``window_s / limit`` of the tightest budget, or
    ``window_s`` for a limit of 0 or less). Keys must share a hash tag (one slot on Redis Cluster).
    """
    if not budgets:
        return 0
    keys = [state_key(key) for key, _ in budgets]
    args = [limit for _, limit in budgets] + [window_s]
    return int(await _TAKE_SCRIPT(keys=keys, args=args, client=redis))


async def give_back(redis: Redis, keys: Sequence[str]) -> None:
    """Undo one counted attempt on each budget key (an attempt that turned out not to be a failure):
    the budget gets one emission interval of room back, never more than empty; a budget that is
    already empty (no key) stays so. Keys must share a hash tag."""
    if keys:
        await _GIVE_BACK_SCRIPT(keys=[state_key(k) for k in keys], client=redis)


async def wait_s(redis: Redis, key: str, limit: int, window_s: float) -> int:
    """Seconds until one more attempt fits on budget ``key`` of ``limit`` attempts per ``window_s`` (0: it
    fits now), read without counting it (:func:`held`): a check before the attempt, which :func:`take`
    (or a script built on :data:`GCRA_LUA`) still decides. A limit of 0 or less: ``window_s``."""
    if limit <= 0:
        return math.ceil(window_s)
    (now_held,) = await held(redis, [key])
    over = now_held - (limit - 1)  # the attempt fits while the budget holds at most limit - 1
    return max(1, math.ceil(over * window_s / limit - 1e-6)) if over > 1e-6 else 0


async def forget(redis: Redis, keys: Sequence[str]) -> None:
    """Empty each budget key (every attempt it holds is forgotten)."""
    if keys:
        await redis.delete(*[state_key(k) for k in keys])


async def held(redis: Redis, keys: Sequence[str]) -> list[float]:
    """The attempts each budget key holds now, in order: (TAT - now) / emission interval, 0.0 for an
    empty one. A budget of ``limit`` refuses an attempt while it holds more than ``limit - 1``; what
    it holds drains by one every ``window_s / limit`` seconds. Keys must share a hash tag."""
    if not keys:
        return []
    reply = await _HELD_SCRIPT(keys=[state_key(k) for k in keys], client=redis)
    return [float(v) for v in reply]


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
    S s[; log in ...]", ``retry_after_s``: seconds until one more upload fits, 1 to 60 / N rounded
    up) at the first spent budget, after giving back the upload to those already counted, so a
    refused upload counts against none.
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


def client_address(peer: str, forwarded_for: str, trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
                   ) -> str:
    """The address a gRPC call is counted on: the peer's (:func:`peer_address`), or, when the peer is in
    ``trusted`` (a gRPC proxy's networks), the last address of ``forwarded_for`` (the
    ``x-forwarded-for`` metadata, comma-separated: the one that proxy added, whether it sets the
    header or appends to what the client sent). A trusted peer that sends no address, or one that is
    not an IP, is counted as itself."""
    address = peer_address(peer)
    if not trusted or not forwarded_for.strip():
        return address
    try:
        if not any(ipaddress.ip_address(address) in net for net in trusted):
            return address
        return str(ipaddress.ip_address(forwarded_for.split(",")[-1].strip()))
    except ValueError:
        return address
