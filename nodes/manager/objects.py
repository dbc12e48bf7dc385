"""Object housekeeping for image changes: copy under new keys, delete replicas, CDN purges.

* :meth:`Objects.copy` re-keys an object (a private image's ``p/<salt>/...`` copy, or back to its
  public content-addressed key) on the storage nodes that hold it (others when one is down). Inside
  :meth:`Objects.copying` each copy is journalled as a pending delete until the caller's commit records
  it: a re-key that fails (its image deleted meanwhile) or a manager that dies leaves no file no row names.
* :meth:`Objects.delete_unreferenced` removes every replica of keys no image row names any more.
  A replica on a node that is down or fails goes to the Redis set ``pixelfox:{gc}:pending``
  (``"<node id> <key>"``); :meth:`Objects.run` retries those every ``gc_interval_s`` and first
  re-checks that no row took the key again (a new upload of the same bytes). Those of a storage node
  dropped for good (forgotten) are given up instead, and its location rows removed (:mod:`nodes.manager.gone`).
  Keys are shared by every image of the same bytes, and writers store bytes before their rows
  exist, so every delete is fenced per source SHA-256 (:mod:`pixelfox.storage.fence`): keys whose
  bytes an upload, a job or a re-key is writing wait in ``pixelfox:{gc}:deferred`` until it has
  recorded its rows (:meth:`Objects.written`, or the next pass), and are then decided again.
* :meth:`Objects.purge` POSTs ``{"event", "urls"}`` to ``purge_hook_url`` (a CDN purge hook);
  failed calls are kept in the Redis list ``pixelfox:{gc}:purge`` and retried by the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from prometheus_client import Gauge
from sqlalchemy import delete as sa_delete
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.gone import clear_gone
from nodes.manager.registry import NodeRecord, Registry
from pixelfox import errors
from pixelfox.db.models import Image, ObjectLocation, ReplicaDebt, Variant
from pixelfox.storage.client import StorageClient
from pixelfox.storage.fence import DELETE_BUDGET_S, WriteFence, fence_sha
from pixelfox.storage.keys import keyed_for
from pixelfox.v1 import common_pb2

logger = logging.getLogger(__name__)

PENDING = "pixelfox:{gc}:pending"
PURGES = "pixelfox:{gc}:purge"
#: keys whose delete waits for a writer of the same bytes (:mod:`pixelfox.storage.fence`)
DEFERRED = "pixelfox:{gc}:deferred"
#: hashes whose deletes share one round of fence flags
FENCE_BATCH = 50
#: seconds a delete waits for another deleter of the same bytes to drop its flag before it tries again
#: (past that, its keys wait in :data:`DEFERRED` for the next pass)
DELETER_WAIT_S = 5.0
PURGE_TIMEOUT_S = 5.0
#: seconds one replica delete may take before its node is skipped (its keys stay pending)
DELETE_TIMEOUT_S = 3.0
MAX_PURGE_RETRIES = 100  # items kept in the purge list, oldest dropped first
#: cluster-wide (the Redis sets), set by every manager's housekeeping pass
PENDING_DELETES = Gauge("pixelfox_objects_pending_deletes",
                        "object deletes still to do: pending = replica deletes to retry (a node was down or "
                        "failed), deferred = keys waiting for a writer of the same bytes", ["state"])


class Objects:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: Registry,
        redis: aioredis.Redis,
        secret: str,
        *,
        replicas: int,
        purge_hook_url: str = "",
        gc_interval_s: float = 10.0,
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.redis = redis
        self.secret = secret
        self.replicas = replicas
        self.purge_hook_url = purge_hook_url
        self.gc_interval_s = gc_interval_s
        self.fence = WriteFence(redis)

    def _client(self, rec: NodeRecord) -> StorageClient:
        return StorageClient(rec.grpc_address, self.secret, timeout_s=120)

    async def locations(self, s: AsyncSession, key: str) -> list[str]:
        rows = (await s.execute(select(ObjectLocation.node_id).where(ObjectLocation.key == key))).scalars()
        return list(rows)

    @contextlib.asynccontextmanager
    async def copying(self) -> AsyncIterator[list[str]]:
        """``async with objects.copying() as made:`` around :meth:`copy` calls given ``made`` and the commit of
        the session that records their locations; enter it *outside* the write fence of the bytes
        (:mod:`pixelfox.storage.fence`), whose writer must be live from the first copy to that commit.

        Each copy is journalled first, as a pending delete of that replica (``"<node id> <key>"`` in
        :data:`PENDING`, listed in ``made``), so no copy can stay behind unnamed: when the block raises
        (the image was deleted meanwhile and the commit found no row: ``StaleDataError``; a copy failed;
        the call was cancelled) the copies are deleted at once, once the fence is left (:meth:`_retry_fenced`:
        a replica a row names is kept); a manager that dies before either leaves them to :meth:`retry_pending`
        (which skips them while the writer's fence lease lasts). When the block ends normally the commit
        named them: their journal entries go."""
        made: list[str] = []
        try:
            yield made
        except BaseException:
            if made:
                try:
                    await asyncio.shield(self._undo(made))
                except Exception:
                    logger.exception("the copies of a failed re-key stay pending deletes (%d): the next pass "
                                     "deletes them", len(made))
            raise
        if made:
            await self.redis.srem(PENDING, *made)

    @contextlib.asynccontextmanager
    async def rekeying(self, sha: str, lease_s: float) -> AsyncIterator[list[str]]:
        """``async with objects.rekeying(sha, lease_s) as made:`` around a re-key of bytes ``sha`` (its
        :meth:`copy` calls given ``made`` and the commit naming the copies): :meth:`copying` outside the write
        fence of ``sha`` (a writer for ``lease_s`` seconds), and once both are left, the deletes of these bytes
        that waited for it (:meth:`written`) go now rather than at the next pass."""
        try:
            async with self.copying() as made, self.fence.writing(sha, lease_s):
                yield made
        finally:
            await self.written(sha)

    async def journal_copy(self, made: list[str], node_id: str, key: str) -> None:
        """Journal a copy of ``key`` about to be written on ``node_id`` (:meth:`copying`'s ``made``): a pending
        delete of that replica until the caller's commit names it."""
        made.append(f"{node_id} {key}")
        await self.redis.sadd(PENDING, made[-1])

    async def _undo(self, members: list[str]) -> None:
        """Delete the replicas ``members`` (``"<node id> <key>"``, journalled by :meth:`copying`) that no
        location row names, now, under their hashes' fence flags (a hash with a live writer waits for the
        next :meth:`retry_pending` pass)."""
        await self._retry_fenced(await self._members_by_sha(members))
        logger.info("a re-key that did not commit: its %d copies were deleted (or stay pending)", len(members))

    async def copy(self, s: AsyncSession, old: str, new: str, made: list[str] | None = None) -> list[str]:
        """Copy ``old`` to ``new`` on the healthy nodes holding ``old`` (topped up to ``replicas``
        with other healthy storage nodes); records the new locations in ``s``; returns node ids.
        ``made`` (from :meth:`copying`): each replica is journalled there and in :data:`PENDING` before
        it is written.

        Raises :class:`~pixelfox.errors.NoNodeAvailable` when no healthy node holds ``old``.
        """
        nodes = {r.node_id: r for r in await self.registry.healthy_nodes(common_pb2.NODE_ROLE_STORAGE)}
        holders = [nodes[n] for n in await self.locations(s, old) if n in nodes]
        if not holders:
            raise errors.NoNodeAvailable(f"no healthy storage node holds {old}")
        targets = list(holders)
        for rec in nodes.values():
            if len(targets) >= self.replicas:
                break
            if rec not in targets:
                targets.append(rec)
        with tempfile.TemporaryDirectory(prefix="pixelfox-rekey-") as tmp:
            path = Path(tmp) / "obj"
            async with self._client(holders[0]) as src:
                info = await src.stat(old)
                await src.get_to(old, path)
            done: list[str] = []
            for rec in targets:
                if made is not None:  # journalled before the bytes exist: see copying()
                    await self.journal_copy(made, rec.node_id, new)
                try:
                    async with self._client(rec) as dst:
                        await dst.put(new, path, content_type=info.content_type, sha256=info.sha256)
                except errors.PixelfoxError as exc:
                    logger.warning("copy %s -> %s on %s failed: %s", old, new, rec.node_id, exc)
                    continue
                await s.merge(ObjectLocation(key=new, node_id=rec.node_id, size=info.size))
                done.append(rec.node_id)
        if not done:
            raise errors.NoNodeAvailable(f"could not write {new} to any storage node")
        return done

    async def referenced(self, s: AsyncSession, key: str) -> bool:
        n = await s.scalar(select(func.count()).select_from(Image).where(Image.original_key == key))
        if n:
            return True
        return bool(await s.scalar(select(func.count()).select_from(Variant).where(Variant.key == key)))

    async def delete_unreferenced(self, keys: list[str]) -> tuple[int, int]:
        """Delete every replica of each key in ``keys`` that no image row names; ``(deleted, pending)``.

        Keys are fenced per source SHA-256 (:mod:`pixelfox.storage.fence`): while an upload or a job
        that writes the same bytes is between "stored" and "recorded", its keys are not touched but
        kept in :data:`DEFERRED` (counted as pending, one per key) for :meth:`retry_pending` or
        :meth:`written`. Otherwise, under the fence's flag, each key is re-checked (a writer that
        recorded its rows just before is seen), each replica is first written to the durable
        pending set (so a manager that dies midway leaves nothing behind), its location row is
        removed, and then every storage node is worked on at once: one slow or hung node does not
        hold back the deletes on the others. A node that fails or takes over
        :data:`DELETE_TIMEOUT_S` on a key, and whatever is left after the fence's
        :data:`~pixelfox.storage.fence.DELETE_BUDGET_S`, stays pending for :meth:`retry_pending`.
        Keys of up to :data:`FENCE_BATCH` hashes are done under one set of flags.
        Hashes whose flag another deleter held (two deletes of the same bytes at once: an image's, and
        the variants its job wrote) are tried once more as soon as that flag is dropped (waiting at
        most :data:`DELETER_WAIT_S`), not left to the next pass.
        """
        groups = _by_sha(keys)
        deleted = pending = 0
        for last in (False, True):
            shas, busy = list(groups), dict[str, list[str]]()
            for start in range(0, len(shas), FENCE_BATCH):
                d, p, b = await self._delete_fenced({sha: groups[sha] for sha in shas[start:start + FENCE_BATCH]})
                deleted, pending = deleted + d, pending + p
                if not last:  # counted once they are tried again below
                    pending -= sum(len(groups[sha]) for sha in b)
                    busy.update((sha, groups[sha]) for sha in b)
            if not busy:
                break
            await self.fence.wait_deleters(list(busy), DELETER_WAIT_S)
            groups = busy
        return deleted, pending

    async def _delete_fenced(self, groups: dict[str, list[str]]) -> tuple[int, int, list[str]]:
        """:meth:`delete_unreferenced` for the keys of a few hashes (``{sha: keys}``): ``(deleted,
        pending, hashes another deleter held)``."""
        flags: dict[str, str] = {}
        try:
            for sha in groups:
                if token := await self.fence.begin_delete(sha):
                    flags[sha] = token
            blocked = [k for sha, ks in groups.items() if sha not in flags for k in ks]
            busy = [sha for sha in groups if sha not in flags and await self.fence.deleter_at_work(sha)]
            if blocked:  # a writer of these bytes is live: decided again once it has recorded its rows
                await self.redis.sadd(DEFERRED, *blocked)
            granted = [k for sha in flags for k in groups[sha]]
            if not granted:
                return 0, len(blocked), busy
            nodes = {r.node_id: r for r in await self.registry.all(common_pb2.NODE_ROLE_STORAGE)}
            work: dict[str, list[str]] = {}
            # opened under the flags, on the primary (a lagging read replica may not have the rows a
            # writer committed before them yet): sees every row recorded before the flags
            async with self.sessions(info={"primary": True}) as s:
                gone: list[str] = []
                for key in granted:
                    if await self.referenced(s, key):
                        continue
                    gone.append(key)
                    rows = (await s.execute(select(ObjectLocation).where(ObjectLocation.key == key))).scalars().all()
                    for row in rows:
                        work.setdefault(row.node_id, []).append(key)
                        await s.delete(row)
                if gone:  # their replica debts go with their rows: left to the repair's next pass, they counted
                    # the keys as lost (a debt with no copy) in `pixelfox status` meanwhile
                    await s.execute(sa_delete(ReplicaDebt).where(ReplicaDebt.key.in_(gone)))
                if work:
                    await self.redis.sadd(PENDING, *(f"{n} {k}" for n, ks in work.items() for k in ks))
                await s.commit()
            await self.redis.srem(DEFERRED, *granted)
            deadline = time.monotonic() + DELETE_BUDGET_S
            done = await asyncio.gather(*(self._delete_on(nodes.get(n), n, ks, deadline) for n, ks in work.items()))
            deleted = sum(done)
            return deleted, sum(len(ks) for ks in work.values()) - deleted + len(blocked), busy
        finally:
            for sha, token in flags.items():
                await self.fence.end_delete(sha, token)

    async def _delete_on(self, rec: NodeRecord | None, node_id: str, keys: list[str], deadline: float) -> int:
        """Delete ``keys`` on one node in order, until one fails or ``deadline`` (monotonic) passes;
        returns how many went."""
        if rec is None or not self.registry.healthy(rec):
            return 0
        done = 0
        for key in keys:
            budget = min(DELETE_TIMEOUT_S, deadline - time.monotonic())
            if budget <= 0:
                break
            try:
                ok = await asyncio.wait_for(self._delete_one(rec, key), budget)
            except TimeoutError:
                logger.warning("delete %s on %s took over %g s; the rest stays pending", key, node_id, budget)
                ok = False
            if not ok:
                break
            await self.redis.srem(PENDING, f"{node_id} {key}")
            done += 1
        return done

    async def _delete_one(self, rec: NodeRecord, key: str) -> bool:
        try:
            async with self._client(rec) as c:
                await c.delete(key)
            return True
        except errors.NotFound:
            return True
        except errors.PixelfoxError as exc:
            logger.warning("delete %s on %s failed: %s", key, rec.node_id, exc)
            return False

    async def written(self, sha: str) -> None:
        """A writer of ``sha`` recorded its rows and left the fence: decide the deletes that waited for
        it (:data:`DEFERRED` keys of that hash) now rather than at the next :meth:`run` pass. Errors
        are logged (the pass retries)."""
        try:
            # only the members naming this hash, matched by Redis (its keys' names are not known here:
            # variants and private copies too, so no SISMEMBER); keys are [a-z0-9/._-], no glob characters
            found = [m async for m in self.redis.sscan_iter(DEFERRED, match=f"*{sha}*", count=1000)]
            keys = [k for k in dict.fromkeys(_decoded(found)) if _sha_or_none(k) == sha]
            if keys:
                await self.delete_unreferenced(keys)
        except Exception:
            logger.exception("deferred deletes of %s failed; the next pass retries them", sha[:12])

    async def retry_pending(self) -> int:
        """One pass over the deferred and the pending deletes; returns how many are left (and exports
        them as ``pixelfox_objects_pending_deletes{state="pending"|"deferred"}``).

        Deferred keys go through :meth:`delete_unreferenced` again. A pending replica is deleted
        under its hash's fence flag unless a location row names that node for the key again (a new
        upload of the same bytes stored it there and recorded it): a copy no row names is deleted
        even when an image took the key again, since under the flag no writer is live and every
        copy the new image uses is recorded (kept, it would stay behind for ever once that image
        is deleted too). A hash with a live writer is skipped this pass. First, the pending deletes
        and location rows of storage nodes dropped for good are cleared (:meth:`settle_gone`)."""
        await self.settle_gone()
        if deferred := _decoded(await self.redis.smembers(DEFERRED)):
            await self.delete_unreferenced(deferred)
        by_sha = await self._members_by_sha(_decoded(await self.redis.smembers(PENDING)))
        shas = list(by_sha)
        for start in range(0, len(shas), FENCE_BATCH):
            await self._retry_fenced({sha: by_sha[sha] for sha in shas[start:start + FENCE_BATCH]})
        pending, deferred = int(await self.redis.scard(PENDING)), int(await self.redis.scard(DEFERRED))
        PENDING_DELETES.labels("pending").set(pending)
        PENDING_DELETES.labels("deferred").set(deferred)
        return pending + deferred

    async def _members_by_sha(self, members: list[str]) -> dict[str, list[str]]:
        """Pending-delete members (``"<node id> <key>"``) grouped by the hash that fences their key; a member
        naming no object key is logged and dropped from :data:`PENDING`."""
        by_sha: dict[str, list[str]] = {}
        for member in dict.fromkeys(members):
            sha = _sha_or_none(member.partition(" ")[2])
            if sha is None:
                logger.warning("pending delete %r names no object key; dropped", member)
                await self.redis.srem(PENDING, member)
                continue
            by_sha.setdefault(sha, []).append(member)
        return by_sha

    async def _retry_fenced(self, groups: dict[str, list[str]]) -> None:
        """:meth:`retry_pending` for the pending members (``"<node id> <key>"``) of a few hashes.

        The replicas to delete are worked on per node, all nodes at once, each delete bounded by
        :data:`DELETE_TIMEOUT_S` and all of them by the fence's ``DELETE_BUDGET_S`` (as in
        :meth:`delete_unreferenced`): a hung node that still heartbeats keeps its own keys
        pending, but holds neither the other nodes' deletes nor the flags (and uploads of those
        bytes waiting on them) for longer than the budget."""
        flags: dict[str, str] = {}
        try:
            for sha in groups:
                if token := await self.fence.begin_delete(sha):
                    flags[sha] = token
            deadline = time.monotonic() + DELETE_BUDGET_S
            work: dict[str, list[str]] = {}
            async with self.sessions(info={"primary": True}) as s:  # under the flags, on the primary
                for member in (m for sha in flags for m in groups[sha]):
                    node_id, _, key = member.partition(" ")
                    if node_id in await self.locations(s, key):
                        await self.redis.srem(PENDING, member)  # recorded on that node again: keep the bytes
                        continue
                    # no row names this copy: whether or not another image took the key again (its
                    # copies elsewhere are recorded), no writer is live under the flag, so it goes
                    work.setdefault(node_id, []).append(key)
            recs = {n: await self.registry.get(n) for n in work}
            await asyncio.gather(*(self._delete_on(recs[n], n, ks, deadline) for n, ks in work.items()))
        finally:
            for sha, token in flags.items():
                await self.fence.end_delete(sha, token)

    async def settle_gone(self) -> int:
        """Give up the pending deletes of storage nodes dropped for good and remove their location rows
        (:func:`~nodes.manager.gone.clear_gone`); returns the deletes given up and refreshes the pending gauge."""
        given_up = await clear_gone(self.sessions, self.registry, self.redis, PENDING, self.replicas)
        PENDING_DELETES.labels("pending").set(int(await self.redis.scard(PENDING)))
        return given_up

    async def pending_count(self) -> int:
        """Replica deletes still to do plus keys whose delete waits for a writer of the same bytes."""
        return int(await self.redis.scard(PENDING)) + int(await self.redis.scard(DEFERRED))

    async def purge(self, event: str, urls: list[str]) -> bool:
        """Tell the CDN purge hook about ``urls``; False (and queued for retry) if it failed."""
        if not self.purge_hook_url or not urls:
            return True
        body = json.dumps({"event": event, "urls": urls})
        if await self._post(body):
            return True
        await self.redis.rpush(PURGES, body)
        await self.redis.ltrim(PURGES, -MAX_PURGE_RETRIES, -1)
        return False

    async def _post(self, body: str) -> bool:
        try:
            timeout = aiohttp.ClientTimeout(total=PURGE_TIMEOUT_S)
            async with aiohttp.ClientSession(timeout=timeout) as http, http.post(
                self.purge_hook_url, data=body, headers={"Content-Type": "application/json"}
            ) as r:
                return r.status < 300
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("purge hook %s failed: %s", self.purge_hook_url, exc)
            return False

    async def retry_purges(self) -> None:
        for _ in range(await self.redis.llen(PURGES)):
            raw = await self.redis.lpop(PURGES)
            if raw is None:
                return
            body = raw.decode() if isinstance(raw, bytes) else str(raw)
            if not await self._post(body):
                await self.redis.rpush(PURGES, body)
                return

    async def run(self, stop: asyncio.Event) -> None:
        """Background loop: retry pending deletes and purges every ``gc_interval_s`` until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.gc_interval_s)
            if stop.is_set():
                return
            try:
                await self.retry_pending()
                await self.retry_purges()
            except Exception:
                logger.exception("object housekeeping pass failed")


def image_keys(img: Image) -> list[str]:
    """The original's key and every variant key of ``img`` (all recipe versions)."""
    return [img.original_key, *(v.key for v in img.variants)]


def image_salt(img: Image) -> str:
    """The salt ``img``'s objects are keyed by now: its private salt for a private image, ``""`` (the public
    keys) for a public one."""
    return img.private_salt if img.visibility == "private" else ""


def wanted_key(img: Image, key: str) -> str:
    """The key of ``key``'s bytes (public, or under any salt) that fits ``img``'s visibility now
    (:func:`~pixelfox.storage.keys.keyed_for` with :func:`image_salt`)."""
    return keyed_for(key, image_salt(img))



def _decoded(members: object) -> list[str]:
    return [m.decode() if isinstance(m, bytes) else str(m) for m in members]  # type: ignore[attr-defined]


def _sha_or_none(key: str) -> str | None:
    try:
        return fence_sha(key)
    except errors.BadRequest:
        return None


def _by_sha(keys: list[str]) -> dict[str, list[str]]:
    """``keys`` (empty ones and repeats dropped) grouped by the hash that fences them; a malformed key
    (never written by PixelFox) is logged and left alone."""
    groups: dict[str, list[str]] = {}
    for key in dict.fromkeys(k for k in keys if k):
        sha = _sha_or_none(key)
        if sha is None:
            logger.warning("not deleting %r: not an object key", key)
            continue
        groups.setdefault(sha, []).append(key)
    return groups
