"""The budgets of :mod:`pixelfox.ratelimit` (GCRA) against a real redis-server.

Windows of 1-4 s keep the waits short; the arithmetic is the same as for the 60 s upload budgets.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from pixelfox import errors
from pixelfox.ratelimit import Budget, anonymous_budget, forget, give_back, held, spend, state_key, take


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def new_key() -> str:
    return f"pixelfox:{{limits}}:test:{uuid.uuid4().hex}"


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(t - time.monotonic(), 0))


async def attempt(redis: aioredis.Redis, key: str, limit: int, window_s: float) -> int:
    """One attempt on one budget: 0 when counted, else the wait in seconds."""
    return await take(redis, [(key, limit)], window_s)


async def takes(redis: aioredis.Redis, key: str, limit: int, window_s: float, n: int) -> list[int]:
    """The answers of ``n`` attempts in a row on one budget."""
    return [await attempt(redis, key, limit, window_s) for _ in range(n)]


async def burst(redis: aioredis.Redis, key: str, limit: int, window_s: float, n: int) -> list[int]:
    """The answers of ``n`` attempts sent at once (as many clients would), sorted: the counted first."""
    return sorted(await asyncio.gather(*(attempt(redis, key, limit, window_s) for _ in range(n))))


async def test_a_burst_across_a_window_boundary_is_refused(redis: aioredis.Redis) -> None:
    """One attempt starts a (fixed) window; 9 more just before it ends and 10 just after: the fixed
    window let all 20 through in 0.4 s. Now the second burst gets only what refilled since the first:
    one attempt plus one per 0.2 s (the emission interval, 2 s / 10)."""
    key, limit, window = new_key(), 10, 2.0
    step = window / limit
    start = time.monotonic()
    assert await takes(redis, key, limit, window, 1) == [0]
    await sleep_until(start + window - 0.2)
    first = time.monotonic()
    assert await takes(redis, key, limit, window, limit - 1) == [0] * (limit - 1)
    await sleep_until(start + window + 0.2)
    second = await burst(redis, key, limit, window, limit)
    gap = time.monotonic() - first
    allowed = second.count(0)
    assert 1 <= allowed <= 1 + gap / step, (second, gap)  # 3 when on time
    assert allowed < limit // 2 and set(second[allowed:]) == {1}, second


async def test_a_steady_rate_at_the_limit_always_passes(redis: aioredis.Redis) -> None:
    """One attempt every emission interval for two windows: all pass. Right after, the budget holds
    about one attempt (the last, draining; more by what the loop ran late and caught up), and a burst
    gets the rest of the limit."""
    key, limit, window = new_key(), 10, 1.5
    step = window / limit
    start = time.monotonic()
    answers, sent, answered = [], [], []
    for i in range(2 * limit):
        await sleep_until(start + i * step)
        sent.append(time.monotonic() - start - i * step)  # how late, sent and answered
        answers.append(await attempt(redis, key, limit, window))
        answered.append(time.monotonic() - start - i * step)
    assert answers == [0] * (2 * limit)
    (now_held,) = await held(redis, [key])
    assert 0.8 < now_held <= 1 + (max(answered) - sent[-1]) / step, (now_held, sent, answered)
    started = time.monotonic()
    after = await burst(redis, key, limit, window, limit)
    refilled = (time.monotonic() - started) / step  # while the burst went on (a loaded box is slow)
    assert int(limit - now_held) <= after.count(0) <= limit - now_held + 1 + refilled, (after, now_held, refilled)
    assert after.count(0) >= limit // 2, after


async def test_retry_after_is_the_time_until_one_more_attempt_fits(redis: aioredis.Redis) -> None:
    """2 attempts per 4 s, both spent at once: one refills after 2 s. Asked 0.6 s later, the wait is
    1.4 s (said as 2); the attempt is refused until then and fits right after."""
    key, limit, window = new_key(), 2, 4.0
    assert await takes(redis, key, limit, window, 2) == [0, 0]
    await asyncio.sleep(0.6)
    refused_at = time.monotonic()
    wait = await attempt(redis, key, limit, window)
    assert wait == 2
    for _ in range(200):  # polled: a refused attempt counts nothing
        if not await attempt(redis, key, limit, window):
            break
        await asyncio.sleep(0.02)
    actual = time.monotonic() - refused_at
    assert 1.3 < actual < 1.9, actual  # 2 s of the emission interval, less the 0.6 s waited
    assert actual <= wait <= actual + 1


async def test_an_attempt_counts_on_every_budget_or_on_none(redis: aioredis.Redis) -> None:
    """Several budgets in one take: a spent one refuses the attempt on all, and the wait is that of
    the budget that refills last, not of the first spent one."""
    a, b, window = new_key(), new_key(), 4.0
    assert await takes(redis, b, 2, window, 2) == [0, 0]  # b (1 per 2 s) spent
    assert await take(redis, [(a, 4), (b, 2)], window) == 2
    assert await redis.exists(state_key(a)) == 0  # a was not counted
    assert await takes(redis, a, 4, window, 4) == [0] * 4  # a (1 per 1 s) spent too
    assert await take(redis, [(a, 4), (b, 2)], window) == 2  # a fits in 1 s, b in 2 s: 2
    assert await take(redis, [(b, 2), (a, 4)], window) == 2  # in either order
    assert [math.ceil(h) for h in await held(redis, [a, b])] == [4, 2]

    c, d = new_key(), new_key()  # parallel attempts: none passes the check before the others count
    answers = await asyncio.gather(*(take(redis, [(c, 3), (d, 10)], 60) for _ in range(20)))
    assert sorted(answers) == [0] * 3 + [20] * 17  # 60 s / 3
    assert [math.ceil(h) for h in await held(redis, [c, d])] == [3, 3]


async def test_give_back_returns_one_attempt_never_more_than_empty(redis: aioredis.Redis) -> None:
    key, limit, window = new_key(), 2, 2.0
    assert await takes(redis, key, limit, window, 3) == [0, 0, 1]
    await give_back(redis, [key])
    assert await takes(redis, key, limit, window, 2) == [0, 1]  # one back, not two

    partly = new_key()  # 2 taken, 1.2 s of 2 drained: 0.8 held; a give-back empties it
    assert await takes(redis, partly, limit, window, 2) == [0, 0]
    await asyncio.sleep(1.2)
    await give_back(redis, [partly])
    assert await redis.exists(state_key(partly)) == 0
    assert await takes(redis, partly, limit, window, 3) == [0, 0, 1]

    never = new_key()
    await give_back(redis, [never])
    assert await redis.exists(state_key(never)) == 0  # no key made for a budget never spent

    await forget(redis, [key, partly])
    assert await held(redis, [key, partly]) == [0.0, 0.0]


async def test_spend_gives_back_to_the_budgets_before_the_spent_one(redis: aioredis.Redis) -> None:
    wide, narrow = Budget(new_key(), 5), Budget(new_key(), 1, " without an account", "; log in for more")
    assert await spend(redis, [wide, narrow]) == [wide.key, narrow.key]
    with pytest.raises(errors.RateLimited) as refused:
        await spend(redis, [wide, narrow])
    assert refused.value.retry_after_s == 60  # 1 a minute: the next one fits a minute after the first
    assert refused.value.message == ("more than 1 uploads a minute from this address without an account; "
                                          "wait 60 s; log in for more")
    # the refused upload was given back to wide: it holds one upload (draining one per 12 s), not two
    assert [math.ceil(h) for h in await held(redis, [wide.key, narrow.key])] == [1, 1]


async def test_every_key_expires_and_old_counters_are_ignored(redis: aioredis.Redis) -> None:
    """A counter the fixed-window code left at the budget's key (a spent string) is not read, and an
    unexpected value at the state key is overwritten, not a WRONGTYPE error; each key written
    expires when its budget is empty again."""
    old, odd, window = new_key(), new_key(), 2.0
    await redis.set(old, 99, ex=60)  # the old code's count, over any limit
    await redis.rpush(state_key(odd), "x")  # no expiry
    assert await take(redis, [(old, 3), (odd, 4)], window) == 0
    assert await redis.get(old) == b"99"  # left to expire by itself
    assert await redis.type(state_key(odd)) == b"hash"
    assert 0 < await redis.pttl(state_key(old)) <= 667  # one attempt of 3 per 2 s
    assert 0 < await redis.pttl(state_key(odd)) <= 500
    await asyncio.gather(*(take(redis, [(old, 3)], window) for _ in range(5)))
    assert 1300 < await redis.pttl(state_key(old)) <= 2000  # full: empty again in 2 s
    await give_back(redis, [old])
    assert 600 < await redis.pttl(state_key(old)) <= 1334
    async for name in redis.scan_iter(match="pixelfox:{limits}:test:*"):
        assert await redis.pttl(name) > 0, name


@pytest.mark.parametrize("key", [
    anonymous_budget("203.0.113.7", 20).key,
    "pixelfox:{login}:fail:acct-ip:0123abcd:127.0.0.1",
    "pixelfox:{reports}:ip:::1",
])
def test_a_budget_lives_in_the_slot_of_its_key(key: str) -> None:
    assert state_key(key) != key and key_slot(state_key(key).encode()) == key_slot(key.encode())
