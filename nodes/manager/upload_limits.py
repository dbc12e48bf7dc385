"""Per-user upload limits held in Redis (shared by every manager): rate, open uploads, quota.

* rate — a GCRA budget of ``user_uploads_per_minute`` uploads per 60 s (:mod:`pixelfox.ratelimit`: it
  holds that many at once and refills one every 60 / N s; its hash is ``pixelfox:{limits}:rate:<user>:gcra``)
  → ``RateLimited`` with the seconds until one more fits. It replaced a counter per clock minute, which let
  N uploads at 12:00:59 and N more at 12:01:00 through. Only uploads let through count: the quota and open
  uploads are checked first, and a refused upload is counted nowhere, so one token per admitted upload.
  (The per-minute counters of older managers, ``...:rate:<user>:<minute>``, expire within 120 s.)
* open uploads — sorted set ``pixelfox:{limits}:open:<user>`` (member upload id, score the
  unix time after which nothing can use the upload any more: the earlier of its ticket's end,
  :func:`pixelfox.tickets.usable_until`, and its state's expiry, ``upload_ttl_s`` after the last
  committed chunk, which the upload node pushes out with :meth:`~pixelfox.uploadstate.UploadStates.hold_slot`);
  entries past their score are dropped first, so an abandoned upload stops counting as soon as it
  is dead. More than ``user_open_uploads`` → ``TooManyOpenUploads``, whose ``retry_after_s`` is
  when the earliest one frees. An upload that completes or fails leaves it in
  :meth:`pixelfox.uploadstate.UploadStates.finish`; :meth:`UploadLimits.closed` removes one a
  client terminated (tus DELETE: its state is gone).
* quota — the bytes of the user's images in the database, plus the declared sizes of the user's
  uploads that are still open and usable (status ``open``, ticket still accepted), plus the
  declared size must stay within ``user_quota_bytes`` → else ``QuotaExceeded`` (open uploads
  count, or several created at once would each pass and together store more than the quota).
  Counting them is not enough when they are created at the same moment: each reads the use before
  the others' rows exist. :meth:`UploadLimits.quota_guard` (a Redis lock per user,
  ``pixelfox:{limits}:quota-lock:<user>``, on every manager) is held from the quota check until the
  new upload's row is committed, so the next one reads it.

:meth:`UploadLimits.check` asks the same questions without counting (``CheckUpload``: the web node
refuses a one-shot upload before reading its body); :meth:`UploadLimits.admit` alone counts.

Admins (the operator's own keys) and anonymous uploads skip the per-user checks (the web
node limits anonymous uploads per IP: ``anonymous_ip_uploads_per_minute``, on by default).
Per-IP limits live at the HTTP edge (:mod:`web.ratelimit`) because only it sees client addresses.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pixelfox import errors, ratelimit, tickets
from pixelfox.config import LimitsSettings
from pixelfox.db.models import Image, Upload
from pixelfox.text import human_bytes
from pixelfox.uploadstate import open_uploads_key

logger = logging.getLogger(__name__)

#: seconds a quota lock lives if its manager dies holding it, and the longest a CreateUpload waits for
#: it (the holder only reads the use and writes one row: milliseconds)
QUOTA_LOCK_S = 10.0

#: seconds of the per-user upload rate (the setting says "per minute")
RATE_WINDOW_S = 60

# KEYS: the user's open-upload set, the user's rate budget hash (ratelimit.state_key). ARGV: now, open-upload
# limit, rate limit (0 = none), upload id, its score (when it stops counting), the set's expiry (s), the
# rate's window (s). Dead entries go first; a full set is {1, score of the first to free}; a spent rate
# budget is {2, seconds until one more fits}; else the upload takes its slot and its rate token: {0, ""}.
# One script: an upload refused for either reason counts against neither.
_ADMIT = ratelimit.GCRA_LUA + """
local open_limit, rate_limit = tonumber(ARGV[2]), tonumber(ARGV[3])
if open_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
  if redis.call('ZCARD', KEYS[1]) >= open_limit then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, first[2] or ''}
  end
end
local wait, tat, step, stale
if rate_limit > 0 then
  wait, tat, step, stale = gcra_next(KEYS[2], rate_limit, tonumber(ARGV[7]) * 1000000)
  if wait > 0 then
    return {2, tostring(math.max(math.ceil(wait / 1000000), 1))}
  end
end
if open_limit > 0 then
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
end
if rate_limit > 0 then
  gcra_store(KEYS[2], tat, step, stale)
end
return {0, ''}
"""


class UploadLimits:
    def __init__(self, redis: aioredis.Redis, sessions: async_sessionmaker[AsyncSession],
                 limits: LimitsSettings) -> None:
        self.redis = redis
        self.sessions = sessions
        self.limits = limits
        self._admit = redis.register_script(_ADMIT)

    @contextlib.asynccontextmanager
    async def quota_guard(self, user_id: str) -> AsyncIterator[None]:
        """Hold ``user_id``'s quota lock (a redis-py :class:`~redis.asyncio.lock.Lock`, shared by every
        manager) around :meth:`admit` and the commit of the new upload's row, so uploads created at
        the same moment are checked one after the other: each one's quota check sees the rows of those
        before it. Nothing is held for anonymous callers and admins (``""``) or without a quota.
        Raises Unavailable when the lock is not free within :data:`QUOTA_LOCK_S` seconds."""
        if not user_id or not self.limits.user_quota_bytes:
            yield
            return
        lock = self.redis.lock(f"pixelfox:{{limits}}:quota-lock:{user_id}", timeout=QUOTA_LOCK_S,
                               blocking_timeout=QUOTA_LOCK_S, raise_on_release_error=False)
        if not await lock.acquire():
            raise errors.Unavailable(f"other uploads of this user are being admitted; waited {QUOTA_LOCK_S:.0f} s, "
                                     "try again")
        try:
            yield
        finally:
            try:
                await lock.release()
            except aioredis.RedisError as exc:  # it expires by itself after QUOTA_LOCK_S
                logger.warning("quota lock of %s not released (%s)", user_id, exc)

    async def admit(self, user_id: str, upload_id: str, size: int, usable_until: float, *, rate: bool = True
                    ) -> None:
        """Check every limit for a new upload of ``size`` bytes whose ticket is accepted until
        ``usable_until`` (unix time) and count it; raises on a breach, and then counts nothing.
        ``rate=False``: no per-minute token (an upload whose ticket had ended, renewed: it counts again
        as open and against the quota, but it is not a new upload).

        The quota is checked first, then one Lua script (:data:`_ADMIT`) takes an open-upload slot and
        a rate token together or neither: a refused upload (quota, open uploads, rate) uses up no
        per-minute token (it used to: the rate was counted before the other checks, so a script
        retrying a 429 quota-exceeded locked its user out of uploads that fit), and parallel admits
        cannot all pass the open-upload check before one of them is recorded. Run it, and commit the
        upload's row, inside :meth:`quota_guard`, or uploads made at once can pass the quota together."""
        if not user_id:
            return
        lim = self.limits
        await self._check_quota(user_id, size)
        per_minute = lim.user_uploads_per_minute if rate else 0
        if not per_minute and not lim.user_open_uploads:
            return
        now = time.time()
        refused, earliest = await self._admit(
            keys=[open_uploads_key(user_id), ratelimit.state_key(self._rate_key(user_id))],
            args=[now, lim.user_open_uploads, per_minute, upload_id,
                  min(usable_until, now + lim.upload_ttl_s), max(1, math.ceil(usable_until - now)) + 60,
                  RATE_WINDOW_S])
        if int(refused) == 1:
            raise self._too_many_open(float(earliest) if earliest else None, now)
        if int(refused) == 2:
            raise self._rate_limited(int(earliest))

    async def check(self, user_id: str, size: int, body_bytes: int = 0) -> None:
        """Raise what :meth:`admit` would for a new upload of ``size`` bytes now (RateLimited,
        QuotaExceeded, TooManyOpenUploads, same messages and ``retry_after_s``) but count nothing:
        the upload is counted once, by :meth:`admit`. A check that passes is no promise (parallel
        uploads may take the last slot meanwhile; :meth:`admit` still decides). ``body_bytes`` > 0:
        ``size`` is only an estimate made from a request body of that many bytes (the web node asks
        before it reads a one-shot upload), and QuotaExceeded names the body, not a file size.
        ``""`` (anonymous or admin): nothing to check."""
        if not user_id:
            return
        now = time.time()
        if self.limits.user_uploads_per_minute and (wait := await ratelimit.wait_s(
                self.redis, self._rate_key(user_id), self.limits.user_uploads_per_minute, RATE_WINDOW_S)):
            raise self._rate_limited(wait)
        await self._check_quota(user_id, size, body_bytes)
        if self.limits.user_open_uploads:
            await self._check_open(open_uploads_key(user_id), now)

    @staticmethod
    def _rate_key(user_id: str) -> str:
        """The key of ``user_id``'s upload rate budget (:mod:`pixelfox.ratelimit`; its hash is
        :func:`~pixelfox.ratelimit.state_key` of it)."""
        return f"pixelfox:{{limits}}:rate:{user_id}"

    def _rate_limited(self, wait: int) -> errors.RateLimited:
        """The refusal of an upload over the per-user rate, ``wait`` seconds before one more fits."""
        return errors.RateLimited(f"more than {self.limits.user_uploads_per_minute} uploads in a minute; wait {wait} s",
                                  retry_after_s=wait)

    async def _check_quota(self, user_id: str, size: int, body_bytes: int = 0) -> None:
        """QuotaExceeded when the user's images, plus the declared sizes of the user's uploads that are
        still open and usable (:meth:`open_bytes`), plus ``size`` bytes would pass the quota (a quota
        already full is said so, whatever ``size``);
        ``body_bytes`` > 0: ``size`` was estimated from a request body of that size, which the
        message names. Open uploads count so that several created at once cannot each pass on the
        images alone and then together store more than the quota."""
        lim = self.limits
        if not lim.user_quota_bytes:
            return
        async with self.sessions(info={"primary": True}) as s:  # a lagging replica misses uploads just made
            stored = int(await s.scalar(
                select(func.coalesce(func.sum(Image.bytes), 0)).where(Image.user_id == user_id)) or 0)
            n_open, declared = await self.open_bytes(s, user_id, lim.ticket_leeway_s)
        used = stored + declared
        if used + size <= lim.user_quota_bytes:
            return
        held = (f" ({declared} of them declared by {n_open} open upload{'s' if n_open != 1 else ''}: an upload "
                "counts from its creation until it completes, is cancelled or its ticket ends)") if n_open else ""
        cancel = " or cancel open uploads (pixelfox uploads cancel ID)" if n_open else ""
        if used >= lim.user_quota_bytes:  # no upload fits, whatever its size: say that first
            raise errors.QuotaExceeded(
                f"quota full: {human_bytes(used)} of {human_bytes(lim.user_quota_bytes)} used{held}; no upload fits "
                f"until you delete images{cancel} or an admin gives you a larger quota")
        room = (f"; to make room, delete images{cancel}, or ask an admin for a larger quota "
                f"({human_bytes(used)} of {human_bytes(lim.user_quota_bytes)} used)")
        if body_bytes:  # before the body is read: the file's own size is not known yet
            raise errors.QuotaExceeded(
                f"quota: {used} of {lim.user_quota_bytes} bytes used{held}; this upload's body of {body_bytes} "
                f"bytes would pass it (answered before the body is read: its file is taken to be {size} bytes "
                f"of it, the rest its form){room}")
        raise errors.QuotaExceeded(
            f"quota: {used} of {lim.user_quota_bytes} bytes used{held}; this file needs {size} more{room}")

    @staticmethod
    async def open_bytes(s: AsyncSession, user_id: str, leeway_s: int = tickets.LEEWAY_S) -> tuple[int, int]:
        """``(count, declared bytes)`` of ``user_id``'s uploads that are still open and usable: rows with
        status ``open`` whose ticket is still accepted (:func:`~pixelfox.tickets.usable_until` of its
        expiry, with ``leeway_s``, is ahead, as :meth:`nodes.manager.uploads.Uploads.list_open` judges it). A row whose
        upload was abandoned without a word (no bytes for ``upload_ttl_s``) still counts until then."""
        since = datetime.now(UTC) - timedelta(seconds=leeway_s)  # usable_until(exp) > now
        row = (await s.execute(select(func.count(), func.coalesce(func.sum(Upload.size), 0)).where(
            Upload.user_id == user_id, Upload.status == "open", Upload.expires_at > since))).one()
        return int(row[0] or 0), int(row[1] or 0)

    async def _check_open(self, key: str, now: float) -> None:
        """TooManyOpenUploads when the open-upload set ``key`` is full; drops dead entries first."""
        await self.redis.zremrangebyscore(key, "-inf", now)
        if await self.redis.zcard(key) >= self.limits.user_open_uploads:
            earliest = await self.redis.zrange(key, 0, 0, withscores=True)  # the first to die frees a slot
            raise self._too_many_open(float(earliest[0][1]) if earliest else None, now)

    def _too_many_open(self, earliest: float | None, now: float) -> errors.TooManyOpenUploads:
        """The refusal of a full open-upload set whose first entry stops counting at ``earliest``
        (unix time; None: unknown, 1 s)."""
        lim = self.limits
        wait = max(1, math.ceil(earliest - now)) if earliest is not None else 1
        return errors.TooManyOpenUploads(
            f"{lim.user_open_uploads} unfinished uploads already; the next frees in {wait} s. An upload "
            "counts until it completes, is cancelled (list them with GET /api/v1/uploads, cancel one "
            "with DELETE /api/v1/uploads/<id>, or tus DELETE with its ticket), or nothing can resume it "
            f"any more: its ticket ends ({lim.ticket_ttl_s} s after it was created, plus "
            f"{lim.ticket_leeway_s} s for clock skew) or it gets no bytes for {lim.upload_ttl_s} s",
            retry_after_s=wait)

    async def closed(self, user_id: str, upload_id: str) -> None:
        """An upload finished: it no longer counts as open."""
        if user_id:
            await self.redis.zrem(open_uploads_key(user_id), upload_id)
