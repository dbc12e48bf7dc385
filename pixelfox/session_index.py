"""A per-user index of the web's session ids in Redis, so a password change can end the user's other
sessions, and the manager can end every session of a user an admin disabled.

``pixelfox:{session}:user:<user id>`` is a set of session ids, refreshed with the session's
lifetime whenever a logged-in session is saved. Ids whose session already expired are dropped
when the set is next read; nothing else depends on it being exact. The set and the sessions
share the ``{session}`` tag (one hash slot), so this works on Redis Cluster too.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster


def session_key(identity: str) -> str:
    """The Redis key of the web session ``identity`` (see :mod:`web.sessions`)."""
    return f"pixelfox:{{session}}:{identity}"


def index_key(user_id: str) -> str:
    return f"pixelfox:{{session}}:user:{user_id}"


async def index_session(redis: aioredis.Redis | RedisCluster, user_id: str, session_id: str, ttl_s: int | None) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.sadd(index_key(user_id), session_id)
        if ttl_s:
            pipe.expire(index_key(user_id), ttl_s)
        await pipe.execute()


async def end_other_sessions(redis: aioredis.Redis | RedisCluster, user_id: str, keep: str | None) -> int:
    """Delete every indexed session of ``user_id`` but ``keep`` (None: all of them); returns how many
    existed."""
    members = [m.decode() if isinstance(m, bytes) else str(m) for m in await redis.smembers(index_key(user_id))]
    others = [m for m in members if m != keep]
    if not others:
        return 0
    ended = int(await redis.delete(*(session_key(m) for m in others)))
    await redis.srem(index_key(user_id), *others)
    return ended
