"""Copy every object of one pool to another (local disk <-> S3), online, resumable, verified.

``migrate(src, dst)`` walks ``src.list_keys()``; for each key it compares ``dst.stat`` with
``src.stat``: the same SHA-256 and size means *already there* (so a second run, or a run
after a crash, only copies what is missing); otherwise the bytes stream from
``src.open_range`` into ``dst.put``, which checks size and SHA-256 before the object becomes
visible, and a final ``dst.stat`` must show the source's SHA-256. Only then, and only with
``delete_source``, is the source object deleted. A key that exists in ``dst`` with *other*
bytes is a failure (keys are never reused), never overwritten.

The storage node keeps serving from ``src`` meanwhile (reads are not blocked, new writes
land in ``src``); run again to pick up objects written during the first pass, then switch the
node's ``PIXELFOX_BACKEND``/``PIXELFOX_DATA_DIR`` and restart it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pixelfox import errors
from pixelfox.storage.base import Store
from pixelfox.storage.fs import FsStore
from pixelfox.storage.s3 import S3Settings, S3Store

logger = logging.getLogger(__name__)


@dataclass
class MigrateReport:
    copied: int = 0
    present: int = 0  # already in the target with the same SHA-256
    failed: int = 0
    deleted: int = 0
    bytes_copied: int = 0


async def open_pool(spec: str, s3: S3Settings | None = None) -> FsStore | S3Store:
    """``fs:<dir>`` -> FsStore; ``s3`` or ``s3:<prefix>`` -> S3Store (settings from ``s3`` or ``PIXELFOX_S3__*``).

    Raises ``BadRequest`` for any other form.
    """
    kind, _, rest = spec.partition(":")
    if kind == "fs" and rest:
        return FsStore(Path(rest))
    if kind == "s3":
        if s3 is None:
            from pydantic_settings import BaseSettings, SettingsConfigDict

            class _Env(BaseSettings):
                model_config = SettingsConfigDict(env_prefix="PIXELFOX_", env_nested_delimiter="__", extra="ignore")
                s3: S3Settings = S3Settings()

            s3 = _Env().s3
        if rest:
            s3 = s3.model_copy(update={"prefix": rest})
        return await S3Store(s3).start()
    raise errors.BadRequest(f"pool spec {spec!r}: use fs:<dir>, s3 or s3:<prefix>")


async def migrate_key(src: Store, dst: Store, key: str, *, delete_source: bool = False) -> tuple[str, int]:
    """Copy one key; returns ``(action, bytes copied)`` with action ``copied`` | ``present``.

    Raises ``NotFound`` (gone from the source meanwhile), ``AlreadyExists`` (the target holds
    other bytes), ``ChecksumMismatch`` (the copy does not verify) or a backend error.
    """
    info = await src.stat(key)
    if info is None:
        raise errors.NotFound(f"{key} left the source")
    have = await dst.stat(key)
    action, copied = "present", 0
    if have is None:
        await dst.put(key, src.open_range(key), content_type=info.content_type, sha256=info.sha256, size=info.size)
        have = await dst.stat(key)
        action, copied = "copied", info.size
    elif have.sha256 != info.sha256 or have.size != info.size:
        raise errors.AlreadyExists(f"{key} holds other bytes in the target")
    if have is None or have.sha256 != info.sha256 or have.size != info.size:
        raise errors.ChecksumMismatch(f"{key} does not verify in the target")
    if delete_source:
        await src.delete(key)
    return action, copied


async def migrate(
    src: Store,
    dst: Store,
    *,
    delete_source: bool = False,
    concurrency: int = 4,
    progress: Callable[[str, str], None] | None = None,
) -> MigrateReport:
    """Copy every key of ``src`` into ``dst`` (see module doc); ``progress(key, action)`` per key."""
    report = MigrateReport()
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(key: str) -> None:
        async with sem:
            try:
                action, n = await migrate_key(src, dst, key, delete_source=delete_source)
            except errors.PixelfoxError as exc:
                report.failed += 1
                logger.warning("migrating %s failed: %s", key, exc)
                if progress:
                    progress(key, "failed")
                return
            if action == "copied":
                report.copied += 1
                report.bytes_copied += n
            else:
                report.present += 1
            report.deleted += int(delete_source)
            if progress:
                progress(key, action)

    tasks: set[asyncio.Task[None]] = set()
    async for key in src.list_keys():
        t = asyncio.create_task(one(key))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        if len(tasks) >= concurrency * 4:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    if tasks:
        await asyncio.gather(*tasks)
    return report
