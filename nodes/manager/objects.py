"""Object housekeeping for image changes: copy under new keys, delete replicas, CDN purges.

* :meth:`Objects.copy` re-keys an object (a private image's ``p/<salt>/...`` copy, or back to its
  public content-addressed key) on the storage nodes that hold it (others when one is down).
* :meth:`Objects.delete_unreferenced` removes every replica of keys no image row names any more.
  A replica on a node that is down or fails goes to the Redis set ``pixelfox:{gc}:pending``
  (``"<node id> <key>"``); :meth:`Objects.run` retries those every ``gc_interval_s`` and first
  re-checks that no row took the key again (a new upload of the same bytes).
* :meth:`Objects.purge` POSTs ``{"event", "urls"}`` to ``purge_hook_url`` (a CDN purge hook);
  failed calls are kept in the Redis list ``pixelfox:{gc}:purge`` and retried by the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.registry import NodeRecord, Registry
from pixelfox import errors
from pixelfox.db.models import Image, ObjectLocation, Variant
from pixelfox.storage.client import StorageClient
from pixelfox.v1 import common_pb2

logger = logging.getLogger(__name__)

PENDING = "pixelfox:{gc}:pending"
PURGES = "pixelfox:{gc}:purge"
PURGE_TIMEOUT_S = 5.0
#: seconds one replica delete may take before its node is skipped (its keys stay pending)
DELETE_TIMEOUT_S = 3.0
MAX_PURGE_RETRIES = 100  # items kept in the purge list, oldest dropped first


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

    def _client(self, rec: NodeRecord) -> StorageClient:
        return StorageClient(rec.grpc_address, self.secret, timeout_s=120)

    async def locations(self, s: AsyncSession, key: str) -> list[str]:
        rows = (await s.execute(select(ObjectLocation.node_id).where(ObjectLocation.key == key))).scalars()
        return list(rows)

    async def copy(self, s: AsyncSession, old: str, new: str) -> list[str]:
        """Copy ``old`` to ``new`` on the healthy nodes holding ``old`` (topped up to ``replicas``
        with other healthy storage nodes); records the new locations in ``s``; returns node ids.

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

        Each replica is first written to the durable pending set (so a manager that dies midway
        leaves nothing behind), its location row is removed, and then every storage node is
        worked on at once: one slow or hung node does not hold back the deletes on the others.
        A node that fails or takes over :data:`DELETE_TIMEOUT_S` on a key keeps its remaining keys
        pending for :meth:`retry_pending`.
        """
        nodes = {r.node_id: r for r in await self.registry.all(common_pb2.NODE_ROLE_STORAGE)}
        work: dict[str, list[str]] = {}
        async with self.sessions() as s:
            for key in dict.fromkeys(keys):
                if not key or await self.referenced(s, key):
                    continue
                rows = (await s.execute(select(ObjectLocation).where(ObjectLocation.key == key))).scalars().all()
                for row in rows:
                    work.setdefault(row.node_id, []).append(key)
                    await s.delete(row)
            if work:
                await self.redis.sadd(PENDING, *(f"{n} {k}" for n, ks in work.items() for k in ks))
            await s.commit()
        done = await asyncio.gather(*(self._delete_on(nodes.get(n), n, ks) for n, ks in work.items()))
        deleted = sum(done)
        return deleted, sum(len(ks) for ks in work.values()) - deleted

    async def _delete_on(self, rec: NodeRecord | None, node_id: str, keys: list[str]) -> int:
        """Delete ``keys`` on one node in order, until one fails; returns how many went."""
        if rec is None or not self.registry.healthy(rec):
            return 0
        done = 0
        for key in keys:
            try:
                ok = await asyncio.wait_for(self._delete_one(rec, key), DELETE_TIMEOUT_S)
            except TimeoutError:
                logger.warning("delete %s on %s took over %g s; the rest stays pending", key, node_id,
                               DELETE_TIMEOUT_S)
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

    async def retry_pending(self) -> int:
        """One pass over the pending deletes; returns how many are left."""
        members = [m.decode() if isinstance(m, bytes) else str(m) for m in await self.redis.smembers(PENDING)]
        async with self.sessions() as s:
            for member in members:
                node_id, _, key = member.partition(" ")
                if await self.referenced(s, key) or (await self.locations(s, key)).count(node_id):
                    await self.redis.srem(PENDING, member)  # in use again: keep the bytes
                    continue
                rec = await self.registry.get(node_id)
                if rec is None or not self.registry.healthy(rec):
                    continue
                if await self._delete_one(rec, key):
                    await self.redis.srem(PENDING, member)
        return int(await self.redis.scard(PENDING))

    async def pending_count(self) -> int:
        return int(await self.redis.scard(PENDING))

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

