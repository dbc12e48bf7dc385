"""The ``Store`` protocol every storage backend implements, and what it returns.

A store keeps immutable objects under :mod:`pixelfox.storage.keys` keys. Its promises:

* ``put`` verifies the size and SHA-256 *before* the object becomes visible; a reader never
  sees a partial, 0-byte or wrong object. Re-putting a key with the same content is
  idempotent and cheap (the stream is not read again); a key already holding other bytes is
  refused with :class:`~pixelfox.errors.AlreadyExists` (keys are never reused).
* Errors are :class:`~pixelfox.errors.PixelfoxError` subclasses: ``BadRequest`` for a bad key
  or size, ``ChecksumMismatch``, ``NotFound``, ``StorageFull`` when the backend is out of space.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: bytes per chunk for reads (and the gRPC data messages built from them)
CHUNK_SIZE = 256 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """What is known about a stored object; ``etag`` is the quoted strong ETag ``"<sha256>"``."""

    key: str
    size: int
    content_type: str
    sha256: str
    mtime: float

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


class Store(Protocol):
    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str, sha256: str, size: int
    ) -> ObjectInfo:
        """Store ``size`` bytes from ``chunks`` under ``key`` once they hash to ``sha256``."""
        ...

    def open_range(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Yield the object's bytes ``[offset, offset+length)`` (to the end if ``length`` is None)."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None:
        """The object's info, or ``None`` if the key holds nothing."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the object; ``True`` if something was removed."""
        ...

    async def usage(self) -> tuple[int, int]:
        """``(used_bytes, free_bytes)``: bytes held by objects, and room left for more."""
        ...

    def filesystem(self) -> str:
        """What the ``free_bytes`` of :meth:`usage` is the free space of: stores with equal values share it
        (two pools on one disk), so whoever sums free bytes counts each value once."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A local file holding the object (fs backends, for sendfile), else ``None``."""
        ...

    def list_keys(self) -> AsyncIterator[str]:
        """Every valid object key the store holds (for migrations and repair)."""
        ...

    async def writable(self) -> bool:
        """True while the backend takes writes (readiness)."""
        ...

    async def close(self) -> None:
        """Release connections (no-op for local disk)."""
        ...
