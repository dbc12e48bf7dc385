"""``FsStore``: objects as files under one root directory (one pool on local disk).

Layout: the object for key ``k`` is the file ``root/k``; its metadata (SHA-256, size,
content type) is the JSON sidecar ``root/k.meta``. Neither a sidecar nor a temp file is a
valid key, so neither can ever be served.

A put writes to ``.<name>.tmp-<random>`` in the object's own directory, ``fsync``s it, writes
the sidecar the same way (temp, fsync, rename), then renames the data file into place and
``fsync``s the directory. The object is visible only once that last rename is done, so a
crash or a full disk leaves at most an unreferenced temp file or sidecar, never a partial or
0-byte object. ``ENOSPC``/``EDQUOT`` become :class:`~pixelfox.errors.StorageFull` and the temp
is removed. Temp files left by a crash are swept by :meth:`FsStore.scan` at start-up (one
process per root is assumed).

Every path is resolved with ``realpath`` and must stay under the root (a symlink planted in
the pool cannot redirect a read or write), and the final open uses ``O_NOFOLLOW``. Blocking
file work runs in the default thread pool (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from pixelfox import errors
from pixelfox.storage.base import CHUNK_SIZE, ObjectInfo
from pixelfox.storage.keys import content_type_for, key_sha256, validate_key

logger = logging.getLogger(__name__)

META_SUFFIX = ".meta"
TMP_MARK = ".tmp-"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}{TMP_MARK}{secrets.token_hex(6)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while data := f.read(1024 * 1024):
            h.update(data)
    return h.hexdigest()


class _Upload:
    """One in-progress put: a temp file in the object's directory, hashed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}{TMP_MARK}{secrets.token_hex(6)}")
        for attempt in range(5):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                break
            except FileNotFoundError:  # a delete pruned the folder, empty between mkdir and open
                if attempt == 4:
                    raise
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.hash.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.size += len(data)

    def commit(self, meta: dict[str, object]) -> None:
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        _write_file_atomic(self.path.with_name(self.path.name + META_SUFFIX), json.dumps(meta).encode())
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


class FsStore:
    """A :class:`~pixelfox.storage.base.Store` on a local directory (see module doc)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = Path(os.path.realpath(root))
        self._used = 0
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # per-key put lock and its users

    # -- paths -------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        validate_key(key)
        path = os.path.realpath(self.root / key)
        if not path.startswith(str(self.root) + os.sep):
            raise errors.BadRequest("invalid object key")
        return Path(path)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    # -- reads -------------------------------------------------------------------------------

    def _stat_sync(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        meta_path = path.with_name(path.name + META_SUFFIX)
        try:
            meta = json.loads(meta_path.read_bytes())
            sha, size = str(meta["sha256"]), int(meta["size"])
        except (OSError, ValueError, KeyError, TypeError):
            sha, size = "", -1
        if size != st.st_size:  # sidecar lost or stale: recompute once and rewrite it
            sha = _sha256_file(path)
            meta = {"sha256": sha, "size": st.st_size, "content_type": content_type_for(key)}
            with contextlib.suppress(OSError):
                _write_file_atomic(meta_path, json.dumps(meta).encode())
            logger.warning("rebuilt metadata for %s", key)
        return ObjectInfo(key, st.st_size, content_type_for(key), sha, st.st_mtime)

    async def stat(self, key: str) -> ObjectInfo | None:
        return await asyncio.to_thread(self._stat_sync, key)

    async def open_range(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        if offset < 0 or (length is not None and length < 0):
            raise errors.BadRequest("offset and length must not be negative")
        try:
            f = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise errors.NotFound(f"no object {key}") from None
        try:
            remaining = length if length is not None else -1
            pos = offset
            while remaining != 0:
                want = CHUNK_SIZE if remaining < 0 else min(CHUNK_SIZE, remaining)
                data = await asyncio.to_thread(os.pread, f, want, pos)
                if not data:
                    break
                pos += len(data)
                if remaining > 0:
                    remaining -= len(data)
                yield data
        finally:
            os.close(f)

    # -- writes ------------------------------------------------------------------------------

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str, sha256: str, size: int
    ) -> ObjectInfo:
        path = self._path(key)
        sha256 = sha256.lower()
        expected_type = content_type_for(key)
        if content_type and content_type.split(";")[0].strip().lower() != expected_type:
            raise errors.BadRequest(
                f"content type {content_type[:64]!r} does not match the key ({expected_type})"
            )
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise errors.BadRequest("sha256 must be 64 hex digits")
        if size <= 0:
            raise errors.BadRequest("size must be positive")
        promised = key_sha256(key)
        if promised is not None and promised != sha256:
            raise errors.ChecksumMismatch("an original's key must carry the sha256 of its bytes")
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await self._put_locked(key, path, chunks, sha256, size)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _put_locked(
        self, key: str, path: Path, chunks: AsyncIterable[bytes], sha256: str, size: int
    ) -> ObjectInfo:
        existing = await self.stat(key)
        if existing is not None:
            if existing.sha256 == sha256 and existing.size == size:
                return existing  # idempotent re-put: the stream is not read
            raise errors.AlreadyExists(f"{key} already holds other bytes")
        _, free = await self.usage()
        if size > free:
            raise errors.StorageFull(f"{size} bytes do not fit ({free} free)")
        upload: _Upload | None = None
        try:
            upload = await asyncio.to_thread(_Upload, path)
            async for chunk in chunks:
                if upload.size + len(chunk) > size:
                    raise errors.BadRequest(f"more bytes than the declared size {size}")
                await asyncio.to_thread(upload.write, chunk)
            if upload.size != size:
                raise errors.BadRequest(f"got {upload.size} bytes, declared {size}")
            if upload.hash.hexdigest() != sha256:
                raise errors.ChecksumMismatch("sha256 of the received bytes does not match")
            meta = {"sha256": sha256, "size": size, "content_type": content_type_for(key)}
            await asyncio.to_thread(upload.commit, meta)
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                raise errors.StorageFull() from exc
            raise
        finally:
            if upload is not None:
                await asyncio.to_thread(upload.abort)  # no-op after a successful commit
        self._used += size
        info = await self.stat(key)
        assert info is not None
        return info

    def _delete_sync(self, key: str) -> int:
        path = self._path(key)
        try:
            size = os.stat(path, follow_symlinks=False).st_size
            os.unlink(path)
        except FileNotFoundError:
            return -1
        with contextlib.suppress(OSError):
            os.unlink(path.with_name(path.name + META_SUFFIX))
        with contextlib.suppress(OSError):
            _fsync_dir(path.parent)
        self._prune(path.parent)
        return size

    def _prune(self, folder: Path) -> None:
        """Remove ``folder`` and then its parents while they are empty, up to (not including) the
        pool root: a delete used to leave ``v/ab/cd/<sha>/r3/`` behind, one empty tree per image.
        A put that races into a pruned folder makes it again (:class:`_Upload`)."""
        while folder != self.root and self.root in folder.parents:
            try:
                os.rmdir(folder)
            except OSError:  # not empty (or gone): the folders above are not empty either
                return
            folder = folder.parent

    async def delete(self, key: str) -> bool:
        size = await asyncio.to_thread(self._delete_sync, key)
        if size < 0:
            return False
        self._used = max(0, self._used - size)
        return True

    # -- space -------------------------------------------------------------------------------

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def filesystem(self) -> str:
        """``HOST:DEVICE`` of the filesystem the pool is on (host name, ``st_dev``): two pools on one disk
        share its free space, so whoever sums free bytes counts it once (the admin overview)."""
        return f"{socket.gethostname()}:{os.stat(self.root).st_dev}"

    async def usage(self) -> tuple[int, int]:
        return self._used, await asyncio.to_thread(self.free_bytes)

    def _scan_sync(self) -> int:
        used = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                full = os.path.join(dirpath, name)
                if TMP_MARK in name:
                    with contextlib.suppress(OSError):
                        os.unlink(full)
                elif not name.endswith(META_SUFFIX):
                    with contextlib.suppress(OSError):
                        used += os.stat(full, follow_symlinks=False).st_size
        return used

    async def scan(self) -> int:
        """Sweep stale temp files and recount the bytes held; returns ``used_bytes``."""
        self._used = await asyncio.to_thread(self._scan_sync)
        return self._used

    def _keys_sync(self) -> list[str]:
        out: list[str] = []
        for dirpath, _dirs, files in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            for name in files:
                if TMP_MARK in name or name.endswith(META_SUFFIX):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                with contextlib.suppress(errors.BadRequest):
                    out.append(validate_key(key))
        return sorted(out)

    async def list_keys(self) -> AsyncIterator[str]:
        """Every valid object key in the pool, sorted (for migrations; temp files and sidecars skipped)."""
        for key in await asyncio.to_thread(self._keys_sync):
            yield key

    def _writable_sync(self) -> bool:
        # permission check rather than a probe write: a full disk still serves reads
        return self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)

    async def writable(self) -> bool:
        """True while the root directory takes writes (by permission; a full disk still counts)."""
        return await asyncio.to_thread(self._writable_sync)

    async def close(self) -> None:
        """Nothing to release (symmetry with :class:`~pixelfox.storage.s3.S3Store`)."""
