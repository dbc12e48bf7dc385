"""Resumable upload state in Redis, shared by the manager and every upload node.

Keys (one hash slot per upload, ``{upload:<id>}``, so the Lua scripts below are Cluster-safe):

* ``pixelfox:{upload:<id>}:state`` — hash: ``offset`` (committed bytes), ``size`` (declared
  bytes), ``user`` (user id or ""), ``status`` (``open`` | ``complete`` | ``failed`` | ``abandoned``),
  ``probed`` ("1" once the header passed :func:`pixelfox.imaging.probe`), ``slug`` (image slug
  once complete), ``error_code``/``error`` (why it failed), ``node`` (upload node that last
  wrote), ``expire`` (seconds the image lives after completion, 0 = for ever; see
  :mod:`nodes.manager.expiry`), ``title``, ``sha256`` (the file's SHA-256 as its client declared it at
  ``CreateUpload``, "" when it did not: the upload node refuses other bytes), ``visibility`` (``public`` or
  ``private``: the new image's, asked at ``CreateUpload``; missing in states written before it: public).
  Written by the manager at ``CreateUpload`` with a TTL of ``ttl_s`` (the abandoned-upload TTL); each
  committed chunk pushes the TTL out again. A missing key means "unknown or expired" (``NOT_FOUND``).
* ``pixelfox:{upload:<id>}:lock`` — the writer lock: ``<node>:<random token>`` with a PX
  expiry of ``lock_ttl_ms``, extended by every commit. One stream (gRPC or tus) per upload
  holds it; a second one gets :class:`~pixelfox.errors.UploadBusy`. A writer that dies leaves
  the lock to expire, after which another node takes over - or takes it over at once when the
  holding node is known dead (:mod:`nodes.upload.liveness`, :meth:`UploadStates.take_over`).
* ``pixelfox:{uploadnode:<node>}:alive`` (PX a second or two, refreshed while the node's process
  lives) and ``:address`` (its gRPC ``host:port``): how other upload nodes tell a dead writer.

The staged bytes live in ``<staging>/<id>.part`` on a directory every upload node of the
cluster mounts (the launcher gives all of them ``.pixelfox/data/staging``). The committed
offset in Redis is the truth: a writer first truncates the file to it, so bytes written by a
node that died before committing are discarded. SHA-256 state is not serialisable, so a
resumed stream re-hashes the committed prefix from the staged file (one sequential read).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from pixelfox import errors

#: the longest ``expire_after_s`` an upload may ask for, seconds (ten years of 365 days); longer
#: is refused by the manager, and by the web node in the client's own terms first
MAX_EXPIRE_AFTER_S = 10 * 365 * 86400
#: statuses of an upload that ended without an image (cancelled by its owner, or failed): its ticket is
#: refused with the reason (:meth:`State.failure`) and its staged bytes can never be used
CLOSED_STATUSES = frozenset({"abandoned", "failed"})


def state_key(upload_id: str) -> str:
    return f"pixelfox:{{upload:{upload_id}}}:state"


def open_uploads_key(user_id: str) -> str:
    """The sorted set of ``user_id``'s unfinished uploads (member upload id, score the unix time after
    which nothing can use it: its ticket's end or its state's expiry, whichever comes first): the
    manager's per-user open-upload limit (:mod:`nodes.manager.upload_limits`)."""
    return f"pixelfox:{{limits}}:open:{user_id}"


def lock_key(upload_id: str) -> str:
    return f"pixelfox:{{upload:{upload_id}}}:lock"


def node_alive_key(node_id: str) -> str:
    """Set (with a short PX) while upload node ``node_id``'s process lives."""
    return f"pixelfox:{{uploadnode:{node_id}}}:alive"


def node_address_key(node_id: str) -> str:
    """Upload node ``node_id``'s gRPC ``host:port``, kept a day after its last refresh."""
    return f"pixelfox:{{uploadnode:{node_id}}}:address"


def lock_holder(token: str) -> str:
    """The node id in a writer lock's token (``<node>:<random>``)."""
    return token.rpartition(":")[0]


# KEYS: state, lock; ARGV: token, new offset, lock ttl ms, state ttl s, probed flag. Returns 1 (recorded),
# 0 (lock not held), -1 (no state) or, for an upload no longer open, {-2, status, error_code, error}
_COMMIT = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local st = redis.call('HMGET', KEYS[1], 'status', 'error_code', 'error')
if st[1] ~= 'open' then return {-2, st[1] or '', st[2] or '', st[3] or ''} end
redis.call('HSET', KEYS[1], 'offset', ARGV[2], 'probed', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: lock; ARGV: the token seen, the new token, lock ttl ms
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class State:
    """One upload's state as read from Redis."""

    upload_id: str
    offset: int  # committed bytes
    size: int  # declared bytes
    user_id: str
    status: str  # open | complete | failed | abandoned (cancelled by its owner or its tus client)
    probed: bool
    slug: str  # image slug once complete
    expire_after_s: int = 0  # > 0: delete the image this long after completion
    error_code: str = ""  # failed: the PixelfoxError code of the reason ("" if unknown)
    error: str = ""  # failed: the reason as the uploader was told
    title: str = ""  # the new image's title, given at CreateUpload
    sha256: str = ""  # the file's SHA-256 as declared at CreateUpload ("" none): other bytes are refused
    visibility: str = "public"  # the new image's, asked at CreateUpload: public | private

    @property
    def closed(self) -> bool:
        """Whether the upload ended without an image (:data:`CLOSED_STATUSES`)."""
        return self.status in CLOSED_STATUSES

    def failure(self) -> errors.PixelfoxError:
        """The error a failed or cancelled upload's ticket now gets: the original reason when it is known."""
        return failure(self.status, self.error_code, self.error)


def failure(status: str, error_code: str, error: str) -> errors.PixelfoxError:
    """The error of an upload that ended with ``status`` ``failed`` or ``abandoned`` for the reason
    ``error_code``/``error`` (as :meth:`UploadStates.finish` records it; "" when unknown): that reason,
    said to be final for a failed upload, or a plain "already used" when it is not known."""
    if error_code:
        said = error if status == "abandoned" else f"{error} (this upload failed; start a new one)"
        return errors.from_wire(error_code, None, said)
    return errors.InvalidTicket("upload ticket already used: the upload failed; start a new upload")


#: what cancelling an upload that already ended in each status would say (:func:`nothing_to_cancel`)
_ENDED = {"abandoned": "was already cancelled", "complete": "is complete (delete its image instead)",
          "failed": "already failed", "expired": "has expired"}


def nothing_to_cancel(status: str) -> str:
    """Why an upload in ``status`` (``UploadProgress.status``: abandoned, complete, failed, expired)
    cannot be cancelled, in the same words on every front door: ``DELETE /api/v1/uploads/<id>`` and
    ``pixelfox uploads cancel`` (409) and tus ``DELETE`` (404). A second cancel said "the upload is
    abandoned, not open", a word users never chose."""
    return f"nothing to cancel: the upload {_ENDED.get(status, f'is {status}')}"


class UploadStates:
    """Reads and writes upload state; ``ttl_s`` is the abandoned-upload TTL, ``lock_ttl_ms`` the writer lock's."""

    def __init__(self, redis: aioredis.Redis, ttl_s: int = 3600, lock_ttl_ms: int = 10_000) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.lock_ttl_ms = lock_ttl_ms
        self._commit = redis.register_script(_COMMIT)
        self._release = redis.register_script(_RELEASE)
        self._take_over = redis.register_script(_TAKE_OVER)

    async def create(self, upload_id: str, size: int, user_id: str, expire_after_s: int = 0, title: str = "",
                     sha256: str = "", visibility: str = "public") -> None:
        """Record a new upload at offset 0 (manager, at ``CreateUpload``); ``expire_after_s`` > 0 makes
        the finished image expire that long after completion; ``title`` is the new image's title;
        ``sha256`` the file's hash as its client declared it ("" none), which its bytes must have;
        ``visibility`` the new image's (``public`` or ``private``, checked by the caller)."""
        key = state_key(upload_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(key, mapping={"offset": 0, "size": size, "user": user_id, "status": "open", "probed": 0,
                                 "slug": "", "node": "", "expire": max(0, expire_after_s), "title": title,
                                 "sha256": sha256, "visibility": visibility})
            p.expire(key, self.ttl_s)
            await p.execute()

    async def get(self, upload_id: str) -> State | None:
        raw = await self.redis.hgetall(state_key(upload_id))
        if not raw:
            return None
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return State(upload_id, int(d.get("offset", 0)), int(d.get("size", 0)), d.get("user", ""),
                     d.get("status", "open"), d.get("probed") == "1", d.get("slug", ""), int(d.get("expire", 0)),
                     d.get("error_code", ""), d.get("error", ""), d.get("title", ""), d.get("sha256", ""),
                     d.get("visibility") or "public")

    async def require_open(self, upload_id: str) -> State:
        """The state of an upload that may still take bytes.

        Raises NotFound (unknown or expired: the abandoned-upload TTL ran out) or
        InvalidTicket (the upload already completed or failed: a ticket is single-use).
        """
        st = await self.get(upload_id)
        if st is None:
            raise errors.NotFound("upload not found: it expired or never existed; start a new upload")
        if st.status == "complete":
            raise errors.InvalidTicket("upload ticket already used: the upload is complete")
        if st.status != "open":
            raise st.failure()
        return st

    async def lock(self, upload_id: str, node_id: str) -> str:
        """Take the writer lock; returns its token. Raises UploadBusy when another stream holds it."""
        token = f"{node_id}:{secrets.token_hex(8)}"
        if not await self.redis.set(lock_key(upload_id), token, nx=True, px=self.lock_ttl_ms):
            raise errors.UploadBusy("another stream is writing this upload; retry in a few seconds")
        await self.redis.hset(state_key(upload_id), "node", node_id)
        return token

    async def holder(self, upload_id: str) -> str:
        """The writer lock's token ("" when free)."""
        raw = await self.redis.get(lock_key(upload_id))
        return raw.decode() if isinstance(raw, bytes) else (raw or "")

    async def take_over(self, upload_id: str, seen: str, node_id: str) -> str:
        """Take the writer lock from the writer whose token is ``seen`` (the caller knows it dead); returns
        the new token, or "" when the lock changed meanwhile (released, expired, taken by another)."""
        token = f"{node_id}:{secrets.token_hex(8)}"
        if not await self._take_over(keys=[lock_key(upload_id)], args=[seen, token, self.lock_ttl_ms]):
            return ""
        await self.redis.hset(state_key(upload_id), "node", node_id)
        return token

    async def mark_alive(self, node_id: str, address: str, ttl_ms: int) -> None:
        """Say that upload node ``node_id`` (gRPC at ``address``) lives, for ``ttl_ms`` milliseconds."""
        async with self.redis.pipeline(transaction=False) as p:
            p.set(node_alive_key(node_id), "1", px=ttl_ms)
            p.set(node_address_key(node_id), address, ex=86400)
            await p.execute()

    async def node_alive(self, node_id: str) -> tuple[bool, str]:
        """Whether upload node ``node_id`` said it lives within its last mark's TTL, and its gRPC address
        ("" unknown)."""
        async with self.redis.pipeline(transaction=False) as p:
            p.exists(node_alive_key(node_id))
            p.get(node_address_key(node_id))
            alive, address = await p.execute()
        return bool(alive), address.decode() if isinstance(address, bytes) else (address or "")

    async def commit(self, upload_id: str, token: str, offset: int, probed: bool) -> None:
        """Record ``offset`` bytes as durable, if this writer still holds the lock (fencing) and the
        upload is still open. Raises UploadBusy (lock lost), NotFound (state expired), or the reason
        the upload closed under the writer (:meth:`State.failure`: cancelled by its owner, failed), so
        a stream or PATCH still sending stops at its next commit instead of storing the file."""
        r = await self._commit(keys=[state_key(upload_id), lock_key(upload_id)],
                               args=[token, offset, self.lock_ttl_ms, self.ttl_s, int(probed)])
        if r == 0:
            raise errors.UploadBusy("this stream no longer holds the upload's writer lock (it expired after "
                                    f"{self.lock_ttl_ms // 1000} s without progress, or another stream took it); "
                                    "ask for the committed offset and resume")
        if r == -1:
            raise errors.NotFound("upload expired while being written")
        if isinstance(r, list):  # closed under the writer: its owner cancelled it (or another stream ended it)
            status, code, error = (v.decode() for v in r[1:])
            raise failure(status, code, error) if status != "complete" else errors.InvalidTicket(
                "upload ticket already used: the upload is complete")

    async def unlock(self, upload_id: str, token: str) -> None:
        await self._release(keys=[lock_key(upload_id)], args=[token])

    async def reset(self, upload_id: str) -> None:
        """Back to offset 0 (staged bytes were dropped, e.g. the staging disk was full)."""
        await self.redis.hset(state_key(upload_id), mapping={"offset": 0, "probed": 0})

    async def finish(self, upload_id: str, status: str, slug: str = "",
                     error: errors.PixelfoxError | None = None) -> None:
        """Mark complete (with the image slug) or failed (with the ``error`` that failed it, which a
        later query or resume of the same ticket gets again); kept until the TTL so re-use is refused.
        Either way the upload leaves its user's open uploads (:func:`open_uploads_key`) at once: a
        refused upload counted as open until its TTL used to lock a script user out."""
        mapping: dict[Any, Any] = {"status": status, "slug": slug}
        if error is not None:
            mapping.update(error_code=error.code, error=str(error)[:500])
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(state_key(upload_id), mapping=mapping)
            p.hget(state_key(upload_id), "user")
            _, user = await p.execute()
        if user:
            await self.redis.zrem(open_uploads_key(user.decode()), upload_id)

    async def hold_slot(self, user_id: str, upload_id: str, until: float) -> None:
        """Keep the upload counted among ``user_id``'s open uploads until ``until`` (unix time; the
        upload node, after a commit pushed the state's expiry out). Only an upload still counted (not
        finished, not an admin's) is touched, and its end never moves back."""
        if user_id:
            await self.redis.zadd(open_uploads_key(user_id), {upload_id: until}, xx=True, gt=True)

    async def delete(self, upload_id: str) -> None:
        await self.redis.delete(state_key(upload_id), lock_key(upload_id))

    async def ttl(self, upload_id: str) -> float:
        """Unix time (seconds) the upload's state expires (abandoned-upload TTL), 0 if unknown. Read with
        ``EXPIRETIME`` (Redis 7), so every reader gets the same second until the next commit (the upload
        list and ``GetUpload`` agree); from ``TTL`` and this host's clock on an older Redis."""
        try:
            at = await self.redis.expiretime(state_key(upload_id))
        except ResponseError:  # Redis < 7: no EXPIRETIME
            left = await self.redis.ttl(state_key(upload_id))
            return time.time() + left if left and left > 0 else 0.0
        return float(at) if at and at > 0 else 0.0

    async def locked(self, upload_id: str) -> bool:
        """True while a writer holds the upload's lock."""
        return bool(await self.redis.exists(lock_key(upload_id)))

    async def exists(self, upload_id: str) -> bool:
        return bool(await self.redis.exists(state_key(upload_id)))
