"""The manager's per-user upload rate (:class:`nodes.manager.upload_limits.UploadLimits`) against a real
redis-server: a GCRA budget of ``user_uploads_per_minute`` (:mod:`pixelfox.ratelimit`), not a counter per
clock minute. No quota is set, so no database is read."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from nodes.manager.upload_limits import RATE_WINDOW_S, UploadLimits
from pixelfox import errors
from pixelfox.config import LimitsSettings
from pixelfox.ratelimit import held, state_key, wait_s


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def limits(per_minute: int, open_uploads: int = 0) -> LimitsSettings:
    return LimitsSettings(user_uploads_per_minute=per_minute, user_open_uploads=open_uploads, user_quota_bytes=0)


async def admit(lim: UploadLimits, user: str) -> int:
    """0 when an upload of ``user`` was admitted, else the RateLimited's retry_after_s (TooManyOpenUploads,
    a RateLimited too, is raised)."""
    try:
        await lim.admit(user, uuid.uuid4().hex, 1000, time.time() + 3600)
    except errors.TooManyOpenUploads:
        raise
    except errors.RateLimited as exc:
        return exc.retry_after_s
    return 0


async def test_a_burst_of_the_limit_then_one_per_emission_interval(redis: aioredis.Redis) -> None:
    """6 a minute: 6 at once go through, the 7th waits one emission interval (10 s), and a check counts
    nothing. The clock minute no longer matters: 6 more just after a minute boundary were let through."""
    lim, user = UploadLimits(redis, None, limits(6)), f"u{uuid.uuid4().hex}"  # type: ignore[arg-type]
    assert [await admit(lim, user) for _ in range(6)] == [0] * 6
    refused = await admit(lim, user)
    assert 9 <= refused <= 10, refused
    with pytest.raises(errors.RateLimited) as checked:
        await lim.check(user, 1000)
    assert checked.value.message == f"more than 6 uploads in a minute; wait {checked.value.retry_after_s} s"
    assert 9 <= checked.value.retry_after_s <= 10
    (now_held,) = await held(redis, [lim._rate_key(user)])
    assert 5.9 < now_held <= 6.0  # the refusals and the check counted nothing
    assert await redis.type(state_key(lim._rate_key(user))) == b"hash"
    assert 50 <= await redis.ttl(state_key(lim._rate_key(user))) <= RATE_WINDOW_S


async def test_an_open_upload_refusal_uses_no_rate_token(redis: aioredis.Redis) -> None:
    """2 open uploads at most: the 3rd is TooManyOpenUploads and is not counted on the rate."""
    lim, user = UploadLimits(redis, None, limits(6, open_uploads=2)), f"u{uuid.uuid4().hex}"  # type: ignore[arg-type]
    assert [await admit(lim, user) for _ in range(2)] == [0, 0]
    with pytest.raises(errors.TooManyOpenUploads):
        await lim.admit(user, uuid.uuid4().hex, 1000, time.time() + 3600)
    (now_held,) = await held(redis, [lim._rate_key(user)])
    assert 1.9 < now_held <= 2.0


async def test_wait_s_reads_without_counting(redis: aioredis.Redis) -> None:
    key = f"pixelfox:{{limits}}:test:{uuid.uuid4().hex}"
    assert await wait_s(redis, key, 3, 60) == 0
    assert await wait_s(redis, key, 0, 60) == 60
    lim = UploadLimits(redis, None, limits(3))  # type: ignore[arg-type]
    user = f"u{uuid.uuid4().hex}"
    assert [await admit(lim, user) for _ in range(3)] == [0, 0, 0]
    assert 19 <= await wait_s(redis, lim._rate_key(user), 3, 60) <= 20
    assert await wait_s(redis, lim._rate_key(user), 4, 60) == 0  # room for a 4th under a larger limit
