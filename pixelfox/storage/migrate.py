"""Copy every object of one pool to another (local disk <-> S3), online, resumable, verified.

``migrate(src, dst)`` walks ``src.list_keys()``; for each key it compares ``dst.stat`` with
``src.stat``: the same SHA-256 and size means *already there* (so a second run, or a run
after a crash, only copies what is missing); otherwise the bytes stream from
``src.open_range`` into ``dst.put``, which checks size and SHA-256 before the object becomes
visible, and a final ``dst.stat`` must show the source's SHA-256. Only then, and only with
``delete_source``, is the source object deleted. A key that exists in ``dst`` with *other*
bytes is a failure (keys are never reused), never overwritten. :func:`check_pair` refuses a
source and target that are one place or nested (every object would be "already there", and
deleting the source would delete the only copy); :func:`open_pool` never creates a source
folder and lists an S3 pool once before any object moves.

The storage node keeps serving from ``src`` meanwhile (reads are not blocked, new writes
land in ``src``); run again to pick up objects written during the first pass, then switch the
node's ``PIXELFOX_BACKEND``/``PIXELFOX_DATA_DIR`` and restart it.
Never delete the source while a node serves it (``pixelfox migrate-store`` refuses that for
the running local cluster's pools): the node would answer 404 for every moved object.
"""

from __future__ import annotations

import asyncio
import logging
import os
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


@dataclass(frozen=True)
class PoolSpec:
    """Where a pool is: ``fs`` with an absolute, symlink-free ``path``, or ``s3`` with its settings."""

    kind: str
    path: Path | None = None
    s3: S3Settings | None = None

    def _place(self) -> tuple[str, ...]:
        """The pool's place as parts, each one a level below the one before (folder or prefix parts)."""
        if self.path is not None:
            return ("fs", *self.path.parts)
        assert self.s3 is not None
        s = self.s3
        where = s.endpoint_url.strip().rstrip("/").lower() or f"aws:{s.region}"
        return ("s3", where, s.bucket, *(p for p in s.prefix.split("/") if p))

    def __str__(self) -> str:
        if self.path is not None:
            return f"fs:{self.path}"
        assert self.s3 is not None
        return f"s3:{self.s3.bucket}/{self.s3.prefix.strip('/')}"

    def overlap(self, other: PoolSpec) -> str:
        """"same", "inside" (self lies within other), "contains" or "" for pools apart."""
        a, b = self._place(), other._place()
        if a == b:
            return "same"
        if a[:len(b)] == b:
            return "inside"
        if b[:len(a)] == a:
            return "contains"
        return ""


def _s3_from_env() -> S3Settings:
    from pydantic_settings import BaseSettings, SettingsConfigDict

    from pixelfox.config import read_settings

    class _Env(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="PIXELFOX_", env_nested_delimiter="__", extra="ignore")
        s3: S3Settings = S3Settings()

    return read_settings(_Env).s3


def parse_pool(spec: str, s3: S3Settings | None = None) -> PoolSpec:
    """``fs:<dir>`` or ``s3`` / ``s3:<prefix>`` (settings from ``s3`` or ``PIXELFOX_S3__*``) as a :class:`PoolSpec`.

    Raises ``BadRequest`` for any other form.
    """
    kind, _, rest = spec.partition(":")
    if kind == "fs" and rest:
        return PoolSpec("fs", path=Path(os.path.realpath(rest)))
    if kind == "s3":
        s3 = s3 or _s3_from_env()
        if rest:
            s3 = s3.model_copy(update={"prefix": rest})
        return PoolSpec("s3", s3=s3)
    raise errors.BadRequest(f"pool spec {spec!r}: use fs:<dir>, s3 or s3:<prefix>")


def check_pair(src: PoolSpec, dst: PoolSpec) -> None:
    """Raise ``BadRequest`` when ``src`` and ``dst`` are one place, or one lies inside the other.

    Every object would then be "already there", and ``--delete-source`` would delete the only copy.
    """
    how = src.overlap(dst)
    if how == "same":
        raise errors.BadRequest(f"--from and --to are the same pool ({src}): nothing to copy")
    if how:
        inner, outer = (src, dst) if how == "inside" else (dst, src)
        raise errors.BadRequest(f"{inner} lies inside {outer}: the source and the target must not overlap")


async def _probe_s3(store: S3Store, what: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        await store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix, MaxKeys=1)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise errors.Unavailable(f"{what} (bucket {store.bucket!r} at {store.settings.endpoint_url or 'AWS'}): "
                                 f"{err.get('Code', '?')}: {err.get('Message', '')}".rstrip(": ")) from exc
    except BotoCoreError as exc:
        raise errors.Unavailable(f"{what}: S3 endpoint {store.settings.endpoint_url or 'AWS'} "
                                 f"not reachable: {exc}") from exc


async def open_pool(pool: PoolSpec | str, s3: S3Settings | None = None, *, source: bool = False) -> FsStore | S3Store:
    """Open a pool (a :class:`PoolSpec` or its text form, see :func:`parse_pool`) and check it answers.

    A source folder must exist (it is never created); an S3 pool must list with the given
    credentials. Raises ``BadRequest`` (bad spec, missing folder) or ``Unavailable`` (S3).
    """
    spec = pool if isinstance(pool, PoolSpec) else parse_pool(pool, s3)
    what = f"{'source' if source else 'target'} pool {spec}"
    if spec.path is not None:
        if source and not spec.path.is_dir():
            raise errors.BadRequest(f"{what}: no such folder")
        if spec.path.exists() and not spec.path.is_dir():
            raise errors.BadRequest(f"{what}: not a folder")
        return FsStore(spec.path)
    assert spec.s3 is not None
    store = await S3Store(spec.s3).start()
    try:
        await _probe_s3(store, what)
    except BaseException:
        await store.close()
        raise
    return store


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
