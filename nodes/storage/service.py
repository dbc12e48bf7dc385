"""Storage node logic over a :class:`~pixelfox.storage.base.Store` (no gRPC here).

Owns the public URL of each object, the cached usage figures that heartbeats and metrics
read, and the readiness probe (the data directory takes a write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, Gauge

from pixelfox import errors
from pixelfox.node import Load
from pixelfox.storage.base import ObjectInfo, Store
from pixelfox.storage.keys import validate_key

logger = logging.getLogger(__name__)

#: ``fs``: :meth:`Store.filesystem <pixelfox.storage.base.Store.filesystem>`, the space the free bytes are of:
#: nodes whose pools share a disk export one figure each, so sum ``max by (fs)``
USED_BYTES = Gauge("pixelfox_storage_used_bytes", "Bytes held by objects in the pool", ["pool", "fs"])
FREE_BYTES = Gauge("pixelfox_storage_free_bytes", "Bytes free on the pool's filesystem", ["pool", "fs"])
PUTS = Counter("pixelfox_storage_puts_total", "Object puts by result", ["pool", "result"])
DELETES = Counter("pixelfox_storage_deletes_total", "Object deletes", ["pool"])


#: objects whose info and path the HTTP origin keeps in memory (about 300 bytes each)
INFO_CACHE_SIZE = 100_000
#: seconds the pool's readiness check may take before the node counts as not ready: a frozen S3 server
#: (SIGSTOP) takes connections and answers nothing, so HeadBucket waited its 30 s read timeout three
#: times, holding /readyz and the readiness heartbeat up for a minute and a half
READY_CHECK_S = 3.0


@dataclass(frozen=True)
class Stored:
    info: ObjectInfo
    url: str


class StorageService:
    def __init__(self, store: Store, *, root: Path | None, pool: str, public_url: str = "") -> None:
        self.store = store
        self.root = root
        self.pool = pool
        #: the filesystem (or S3 bucket and prefix) the pool is on: the ``fs`` label, the ``fs:`` capability
        self.fs = store.filesystem()
        self.public_url = public_url.rstrip("/")
        self.used = 0
        self.free = 0
        self.draining = False
        self._info: OrderedDict[str, tuple[ObjectInfo, Path | None]] = OrderedDict()
        #: X-Accel-Redirect prefix (an nginx ``internal`` location over the data dir); "" = send bytes
        self.accel_redirect = ""

    def url_for(self, key: str) -> str:
        return f"{self.public_url}/o/{key}"

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str, sha256: str, size: int
    ) -> Stored:
        try:
            info = await self.store.put(key, chunks, content_type=content_type, sha256=sha256, size=size)
        except errors.PixelfoxError as exc:
            PUTS.labels(self.pool, exc.code).inc()
            raise
        PUTS.labels(self.pool, "ok").inc()
        await self.refresh_usage()
        return Stored(info, self.url_for(key))

    async def get(
        self, key: str, offset: int = 0, length: int = 0
    ) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """Info plus the bytes ``[offset, offset+length)``; ``length`` 0 means to the end."""
        info = await self.stat(key)
        if info is None:
            raise errors.NotFound(f"no object {key}")
        if offset < 0 or length < 0 or offset > info.size:
            raise errors.BadRequest(f"range {offset}+{length} outside the object ({info.size} bytes)")
        return info, self.store.open_range(key, offset, length or None)

    async def stat(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        return await self.store.stat(key)

    async def lookup(self, key: str) -> tuple[ObjectInfo, Path | None] | None:
        """Info and local file of ``key`` for the HTTP origin, from a bounded in-memory cache.

        Keys never change their bytes, so a hit stays right until the object is deleted
        (:meth:`delete` and :meth:`forget` evict it). Misses are not cached (an object may
        arrive at any time). At most ``INFO_CACHE_SIZE`` entries, least recently used dropped.
        """
        hit = self.cached(key)
        if hit is not None:
            return hit
        info = await self.stat(key)
        if info is None:
            return None
        entry = (info, self.store.local_path(key))
        self._info[key] = entry
        if len(self._info) > INFO_CACHE_SIZE:
            self._info.popitem(last=False)
        return entry

    def cached(self, key: str) -> tuple[ObjectInfo, Path | None] | None:
        """:meth:`lookup` answered from the cache only (no I/O); ``None`` on a miss."""
        hit = self._info.get(key)
        if hit is not None:
            self._info.move_to_end(key)
        return hit

    def forget(self, key: str) -> None:
        """Drop ``key`` from the lookup cache (its file was found missing)."""
        self._info.pop(key, None)

    async def delete(self, key: str) -> bool:
        self.forget(key)
        deleted = await self.store.delete(key)
        if deleted:
            DELETES.labels(self.pool).inc()
            await self.refresh_usage()
        return deleted

    # -- health, load ------------------------------------------------------------------------

    async def refresh_usage(self) -> None:
        self.used, self.free = await self.store.usage()
        USED_BYTES.labels(self.pool, self.fs).set(self.used)
        FREE_BYTES.labels(self.pool, self.fs).set(self.free)

    def load(self) -> Load:
        """Heartbeat load: bytes used of used+free, and free bytes (cached, refreshed in the background)."""
        return Load(in_use=self.used, capacity=max(1, self.used + self.free), free_bytes=self.free)

    async def usage_loop(self, stop: asyncio.Event, interval_s: float, counted: bool = True) -> None:
        """Refresh the usage every ``interval_s`` seconds until ``stop``. ``counted`` False: the pool
        could not be read at start (:meth:`~pixelfox.storage.s3.S3Store.scan` raised Unavailable), so
        it is counted again first, each round until it answers."""
        while not stop.is_set():
            try:
                if not counted:
                    used = await self.store.scan()
                    counted = True
                    logger.info("pool %s answers again: it holds %d bytes", self.pool, used)
                await self.refresh_usage()
            except errors.Unavailable as exc:
                logger.warning("pool %s still cannot be read: %s", self.pool, exc)
            except OSError:
                logger.exception("cannot read disk usage")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def ready(self) -> bool:
        """True while the pool takes writes (data dir writable, or bucket reachable within
        :data:`READY_CHECK_S`) and not draining."""
        if self.draining:
            return False
        try:
            return await asyncio.wait_for(self.store.writable(), READY_CHECK_S)
        except TimeoutError:
            logger.warning("pool %s did not answer within %g s: not ready", self.pool, READY_CHECK_S)
            return False
