"""``StorageClient``: put, get, stat and delete objects on one storage node over gRPC.

Used by the upload node (originals) and the proc node (read originals, write variants).
Every call carries the cluster credential; wire errors come back as the matching
:class:`~pixelfox.errors.PixelfoxError` (``NotFound``, ``ChecksumMismatch``, ``StorageFull``...).
Bytes travel in :data:`~pixelfox.storage.base.CHUNK_SIZE` (256 KiB) messages, header first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

from pixelfox.grpcx.auth import node_metadata
from pixelfox.grpcx.client import channel, map_rpc_errors
from pixelfox.storage.base import CHUNK_SIZE
from pixelfox.v1 import storage_pb2, storage_pb2_grpc


def _sha256_path(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while data := f.read(1024 * 1024):
            h.update(data)
            size += len(data)
    return h.hexdigest(), size


async def _put_requests(
    header: storage_pb2.PutHeader, source: bytes | Path
) -> AsyncIterator[storage_pb2.PutRequest]:
    yield storage_pb2.PutRequest(header=header)
    if isinstance(source, bytes):
        for i in range(0, len(source), CHUNK_SIZE):
            yield storage_pb2.PutRequest(data=source[i : i + CHUNK_SIZE])
        return
    f = await asyncio.to_thread(source.open, "rb")
    try:
        while data := await asyncio.to_thread(f.read, CHUNK_SIZE):
            yield storage_pb2.PutRequest(data=data)
    finally:
        f.close()


class StorageClient:
    """A channel to one storage node (``host:port``) with the cluster ``secret``."""

    def __init__(self, address: str, secret: str, *, timeout_s: float = 300.0) -> None:
        self.address = address
        self.channel = channel(address)
        self.stub = storage_pb2_grpc.StorageServiceStub(self.channel)
        self.metadata = node_metadata(secret)
        self.timeout_s = timeout_s

    async def put(
        self, key: str, source: bytes | Path, *, content_type: str, sha256: str | None = None
    ) -> storage_pb2.PutResponse:
        """Store ``source`` (bytes or a file) under ``key``; its SHA-256 is computed if not given."""
        if isinstance(source, bytes):
            size = len(source)
            sha256 = sha256 or hashlib.sha256(source).hexdigest()
        elif sha256 is None:
            sha256, size = await asyncio.to_thread(_sha256_path, source)
        else:
            size = (await asyncio.to_thread(source.stat)).st_size
        header = storage_pb2.PutHeader(key=key, content_type=content_type, size=size, sha256=sha256)
        async with map_rpc_errors():
            reply: storage_pb2.PutResponse = await self.stub.Put(
                _put_requests(header, source), metadata=self.metadata, timeout=self.timeout_s
            )
            return reply

    async def iter(self, key: str, offset: int = 0, length: int = 0) -> AsyncIterator[bytes]:
        """Yield the object's bytes ``[offset, offset+length)`` (``length`` 0 = to the end)."""
        call = self.stub.Get(
            storage_pb2.GetRequest(key=key, offset=offset, length=length),
            metadata=self.metadata,
            timeout=self.timeout_s,
        )
        async with map_rpc_errors():
            async for msg in call:
                if msg.data:
                    yield msg.data

    async def get(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        """The whole object (or a range of it) in memory; use :meth:`get_to` for big objects."""
        return b"".join([chunk async for chunk in self.iter(key, offset, length)])

    async def get_to(self, key: str, path: Path) -> int:
        """Stream the object into ``path`` (written to a temp name, then renamed); return its size."""
        tmp = path.with_name(f".{path.name}.part-{secrets.token_hex(4)}")
        size = 0
        f = await asyncio.to_thread(tmp.open, "wb")
        try:
            async for chunk in self.iter(key):
                await asyncio.to_thread(f.write, chunk)
                size += len(chunk)
            await asyncio.to_thread(f.close)
            await asyncio.to_thread(os.replace, tmp, path)
        except BaseException:
            f.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return size

    async def stat(self, key: str) -> storage_pb2.StatResponse:
        """``exists``, ``size``, ``content_type``, ``sha256`` and ``etag`` of ``key``."""
        async with map_rpc_errors():
            reply: storage_pb2.StatResponse = await self.stub.Stat(
                storage_pb2.StatRequest(key=key), metadata=self.metadata, timeout=30
            )
            return reply

    async def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` if it existed."""
        async with map_rpc_errors():
            reply: storage_pb2.DeleteResponse = await self.stub.Delete(
                storage_pb2.DeleteRequest(key=key), metadata=self.metadata, timeout=30
            )
            return reply.deleted

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> StorageClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
