"""A per-user index of the web's session ids in Redis, so a password change can end the user's other
sessions, and the manager can end every session of a user an admin disabled.

``pixelfox:{session}:user:<user id>`` is a set of session ids, refreshed with the session's
lifetime whenever a logged-in session is saved. Ids whose session already expired are dropped
when the set is next read; nothing else depends on it being exact. The set and the sessions
share the ``{session}`` tag (one hash slot), so this works on Redis Cluster too.

A session ended because its user was disabled leaves ``pixelfox:{session}:ended:<session id>`` =
:data:`ACCOUNT_DISABLED` behind, for as long as the session could have lived: a browser that still
holds its cookie is told why it is logged out (:mod:`web.sessions`), not just "not logged in". The
ids of those markers are kept in ``pixelfox:{session}:ended-of:<user id>``, so enabling the user
removes them.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster


def session_key(identity: str) -> str:
    """The Redis key of the web session ``identity`` (see :mod:`web.sessions`)."""
    return f"pixelfox:{{session}}:{identity}"


def index_key(user_id: str) -> str:
    return f"pixelfox:{{session}}:user:{user_id}"


#: why a session ended, as its marker holds it: its user was disabled by an admin
ACCOUNT_DISABLED = "account-disabled"
#: seconds a marker lives when the user's index has no lifetime left to go by (the web's default
#: session lifetime, ``PIXELFOX_SESSION_MAX_AGE_S``)
ENDED_TTL_S = 14 * 24 * 3600


def ended_key(identity: str) -> str:
    """The Redis key of the marker saying why the session ``identity`` ended."""
    return f"pixelfox:{{session}}:ended:{identity}"


def _ended_index_key(user_id: str) -> str:
    return f"pixelfox:{{session}}:ended-of:{user_id}"


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


async def end_sessions_of_disabled(redis: aioredis.Redis | RedisCluster, user_id: str) -> int:
    """Delete every indexed session of ``user_id``, leaving an :data:`ACCOUNT_DISABLED` marker under
    each id (:func:`ended_key`) for as long as the user's index would have lived (else
    :data:`ENDED_TTL_S`); returns how many sessions existed."""
    members = [m.decode() if isinstance(m, bytes) else str(m) for m in await redis.smembers(index_key(user_id))]
    if members:
        ttl = int(await redis.ttl(index_key(user_id)))
        ttl = ttl if ttl > 0 else ENDED_TTL_S
        async with redis.pipeline(transaction=False) as pipe:
            for m in members:
                pipe.set(ended_key(m), ACCOUNT_DISABLED, ex=ttl)
            pipe.sadd(_ended_index_key(user_id), *members)
            pipe.expire(_ended_index_key(user_id), ttl)
            await pipe.execute()
    return await end_other_sessions(redis, user_id, keep=None)


async def forget_ended_sessions(redis: aioredis.Redis | RedisCluster, user_id: str) -> None:
    """Remove the markers :func:`end_sessions_of_disabled` left for ``user_id`` (the user was enabled
    again: an old cookie then means only "not logged in")."""
    members = [m.decode() if isinstance(m, bytes) else str(m)
               for m in await redis.smembers(_ended_index_key(user_id))]
    await redis.delete(*(ended_key(m) for m in members), _ended_index_key(user_id))
