"""The write fence: a writer and a deleter of the same content-addressed bytes never both proceed.

Object keys are content-addressed (:mod:`pixelfox.storage.keys`): two users who upload the same
bytes share one original key and every variant key. The manager deletes an image's objects
unless another image row names them, but writes reach storage *before* their rows exist (an
upload node stores the original, then calls ``CompleteUpload``; a processing node writes the
variants, then reports them). Without a fence, a delete landing between the two removed bytes
that an image was about to name, and that image then pointed at nothing.

Two Redis keys per source SHA-256 ``S`` (the hash in the key: an original's own, a variant's
source's; ``{gc}`` hash tag, so both sit in one slot of a Redis Cluster):

* ``pixelfox:{gc}:writing:<S>``, a sorted set: member = a writer's token, score = the unix time
  (seconds) its lease ends. Members past their score count as gone (a writer that died).
* ``pixelfox:{gc}:deleting:<S>``, a string: the token of the deleter at work, with a TTL.

Writer (:meth:`WriteFence.enter`): add itself to ``writing``, *then* look at ``deleting``; while
it is set, wait. Then write, have the rows recorded, and :meth:`~WriteFence.leave`.
Deleter (:meth:`WriteFence.begin_delete`): set ``deleting`` (NX), *then* drop expired writers and
count the rest; any live writer (or another deleter) means "not now": the flag is dropped again
and the keys stay queued for a later pass. Granted, the deleter re-reads which keys are still
unreferenced (**after** the flag: a writer that recorded its rows and left before the flag was
set is seen in the database, one that comes later waits), deletes them and
:meth:`~WriteFence.end_delete`.

Each side is one Lua script, so Redis orders the two: either the writer's script ran first and
the deleter counts it, or the deleter's did and the writer sees the flag. Neither can miss the
other (the Dekker argument, here made trivial by atomic scripts).

Clocks: scores are the writer's clock and expiry is judged on the deleter's; leases are minutes
long, so ordinary skew between hosts does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from pixelfox import errors
from pixelfox.storage.keys import key_sha256, public_key, validate_key

logger = logging.getLogger(__name__)

WRITING = "pixelfox:{gc}:writing:"
DELETING = "pixelfox:{gc}:deleting:"
#: seconds a deleter's flag lives at most; a deletion under it must end well before (see
#: :data:`DELETE_BUDGET_S`), and a writer never waits much longer than this
DELETING_TTL_S = 120.0
#: seconds a deleter may spend deleting under one flag (the rest stays pending for the next pass)
DELETE_BUDGET_S = 40.0
#: seconds between a waiting writer's looks at the flag
POLL_S = 0.05

# KEYS: writing, deleting. ARGV: member, lease end (unix s), "NX"-or-"XX". Returns 1 if a delete is
# under way (the writer must wait), 0 if not. The set expires with its latest lease (+1 s).
_ENTER = """
if ARGV[3] == 'XX' then
  if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -1 end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(top[2])) + 1)
return redis.call('EXISTS', KEYS[2])
"""
# KEYS: deleting, writing. ARGV: token, flag TTL (ms), now (unix s). Returns -1 when another deleter
# holds the flag, the number of live writers (flag dropped again) when any, 0 when granted.
_BEGIN_DELETE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
local live = redis.call('ZCARD', KEYS[2])
if live > 0 then redis.call('DEL', KEYS[1]) end
return live
"""
_END_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def fence_sha(key: str) -> str:
    """The SHA-256 that fences ``key``: an original's own hash, a variant's source hash (the same for
    an image's every object; a private ``p/<salt>/`` copy is fenced by the hash behind it).
    Raises :class:`~pixelfox.errors.BadRequest` for a malformed key."""
    inner = public_key(validate_key(key))
    sha = key_sha256(inner)
    return sha if sha is not None else inner.split("/", 4)[3]


def upload_token(upload_id: str) -> str:
    """The writer token of upload ``upload_id``: its upload node enters with it, and the manager removes
    it as soon as ``CompleteUpload`` committed the rows (before answering)."""
    return f"upload:{upload_id}"


def job_token(lease_id: str) -> str:
    """The writer token of one dispatch of a job (its lease id): the manager holds it from dispatch to
    the recorded result (the processing node has no Redis)."""
    return f"job:{lease_id}"


def writing_key(sha: str) -> str:
    """``pixelfox:{gc}:writing:<sha>``: the sorted set of ``sha``'s writers (token -> lease end, unix s)."""
    return f"{WRITING}{sha}"


def deleting_key(sha: str) -> str:
    """``pixelfox:{gc}:deleting:<sha>``: the token of the deleter at work on ``sha`` (TTL ``deleting_ttl_s``)."""
    return f"{DELETING}{sha}"


class DeleteInProgress(errors.Unavailable):
    """A writer waited longer than its bound for a delete of the same bytes to end (retry later)."""

    code = "delete-in-progress"
    default_message = "a deletion of the same bytes is still running; try again shortly"


class WriteFence:
    """The fence on one Redis (see module doc). Stateless apart from the client: share one per process.

    ``max_wait_s`` (seconds) bounds how long :meth:`enter` waits for a deleter's flag to go; the
    flag's own TTL (:data:`DELETING_TTL_S`) is the natural bound, so the default is a little more.
    """

    def __init__(self, redis: aioredis.Redis, *, max_wait_s: float = DELETING_TTL_S + 5,
                 deleting_ttl_s: float = DELETING_TTL_S, poll_s: float = POLL_S) -> None:
        self.redis = redis
        self.max_wait_s = max_wait_s
        self.deleting_ttl_s = deleting_ttl_s
        self.poll_s = poll_s

    async def try_enter(self, sha: str, token: str, lease_s: float) -> bool:
        """Register writer ``token`` for ``sha`` until ``lease_s`` seconds from now; True when no
        delete is under way, so the caller may write. False means a delete is: the registration is
        withdrawn again and the caller should come back later (the dispatcher defers the job)."""
        busy = await self._enter(sha, token, lease_s, "NX")
        if busy:
            await self.leave(sha, token)
        return not busy

    async def enter(self, sha: str, token: str, lease_s: float) -> None:
        """Register writer ``token`` for ``sha`` until ``lease_s`` seconds from now, then wait while a
        delete of ``sha`` is under way (polling every ``poll_s``). Returns once the caller may write;
        it must :meth:`leave` once the rows naming what it wrote are committed (or it gave up).

        Raises :class:`DeleteInProgress` (``UNAVAILABLE``) after ``max_wait_s`` seconds of waiting,
        with the registration withdrawn; Redis errors propagate (registration state unknown: the
        lease ends it)."""
        if not await self._enter(sha, token, lease_s, "NX"):
            return
        deadline = time.monotonic() + self.max_wait_s
        logger.info("writer %s waits for a delete of %s to end", token, sha[:12])
        while await self.redis.exists(deleting_key(sha)):
            if time.monotonic() > deadline:
                await self.leave(sha, token)
                raise DeleteInProgress(f"a deletion of the same bytes did not end within {self.max_wait_s:g} s; "
                                       "try again")
            await asyncio.sleep(self.poll_s)

    async def renew(self, sha: str, token: str, lease_s: float) -> bool:
        """Move writer ``token``'s lease end to ``lease_s`` seconds from now; False when it is not
        registered any more (left, or expired and dropped by a deleter: it must not count on the fence)."""
        return await self._enter(sha, token, lease_s, "XX") >= 0

    async def leave(self, sha: str, token: str) -> None:
        """Withdraw writer ``token`` from ``sha`` (no error when it is not registered)."""
        await self.redis.zrem(writing_key(sha), token)

    @contextlib.asynccontextmanager
    async def writing(self, sha: str, lease_s: float, token: str = "") -> AsyncIterator[str]:
        """``async with fence.writing(sha, lease_s):`` :meth:`enter` then :meth:`leave`, also on error;
        yields the token (``token`` or a random one)."""
        token = token or f"w:{secrets.token_hex(8)}"
        await self.enter(sha, token, lease_s)
        try:
            yield token
        finally:
            await self.leave(sha, token)

    async def begin_delete(self, sha: str) -> str:
        """Try to become the deleter of ``sha``: the flag's token when granted (no live writer, no other
        deleter), ``""`` when not (the caller keeps its keys queued and tries again later). A granted
        caller must re-check what is unreferenced now, delete within :data:`DELETE_BUDGET_S` and call
        :meth:`end_delete` (the flag also expires by itself after ``deleting_ttl_s``)."""
        token = f"d:{secrets.token_hex(8)}"
        live = await self.redis.eval(_BEGIN_DELETE, 2, deleting_key(sha), writing_key(sha),  # type: ignore[misc]
                                     token, int(self.deleting_ttl_s * 1000), repr(time.time()))
        if int(live) != 0:
            logger.info("delete of %s deferred: %s", sha[:12],
                        "another deleter is at work" if int(live) < 0 else f"{int(live)} writer(s) live")
            return ""
        return token

    async def end_delete(self, sha: str, token: str) -> None:
        """Drop the flag taken by :meth:`begin_delete` (only if it is still ours)."""
        if token:
            await self.redis.eval(_END_DELETE, 1, deleting_key(sha), token)  # type: ignore[misc]

    async def wait_deleters(self, shas: list[str], timeout_s: float) -> list[str]:
        """Wait up to ``timeout_s`` seconds (polling every ``poll_s``) until no deleter holds the flag of
        any of ``shas``; returns the hashes whose flag is still held (``[]`` when all are free). A
        deleter that found another at work on the same bytes (two deletes of one hash: an image and
        the variants its job wrote) tries again after this, instead of leaving them to the next pass."""
        deadline = time.monotonic() + timeout_s
        while True:
            held = [sha for sha in shas if await self.redis.exists(deleting_key(sha))]
            if not held or time.monotonic() >= deadline:
                return held
            await asyncio.sleep(self.poll_s)

    async def deleter_at_work(self, sha: str) -> bool:
        """True while a deleter holds the flag of ``sha``."""
        return bool(await self.redis.exists(deleting_key(sha)))

    async def writers(self, sha: str) -> list[str]:
        """Tokens of the writers of ``sha`` whose lease has not ended (for tests and diagnostics)."""
        raw = await self.redis.zrangebyscore(writing_key(sha), time.time(), "+inf")
        return [m.decode() if isinstance(m, bytes) else str(m) for m in raw]

    async def _enter(self, sha: str, token: str, lease_s: float, mode: str) -> int:
        if lease_s <= 0:
            raise ValueError("lease_s must be > 0")
        return int(await self.redis.eval(_ENTER, 2, writing_key(sha), deleting_key(sha),  # type: ignore[misc]
                                         token, repr(time.time() + lease_s), mode))
