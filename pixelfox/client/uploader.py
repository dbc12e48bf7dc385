"""Upload one file through the cluster: ticket from the manager, chunks to an upload node.

Used by ``pixelfox put`` and by the web node. The flow is DESIGN.md's main flow, steps 1-3:
``CreateUpload`` on the manager returns an upload node address, a signed ticket and the
chunk size; the file is streamed as a header then ``chunk_size`` chunks, each with its offset
and CRC32C, and the node answers with a receipt holding the new image.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import google_crc32c

from pixelfox import errors
from pixelfox.grpcx.client import channel, map_rpc_errors
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc, upload_pb2, upload_pb2_grpc

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_sent, total_bytes)``."""


def sha256_file(path: Path, block: int = 1024 * 1024) -> str:
    """Hex SHA-256 of a file, read in ``block``-byte pieces."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()


RETRYABLE = (errors.Unavailable, errors.Timeout, errors.UploadBusy, errors.OffsetMismatch)
"""Errors after which the uploader asks for the committed offset and goes on."""


async def _requests(
    path: Path, header: upload_pb2.UploadHeader, start: int, chunk_size: int, progress: Progress | None
) -> AsyncIterator[upload_pb2.UploadRequest]:
    yield upload_pb2.UploadRequest(header=header)
    offset = start
    with path.open("rb") as f:
        f.seek(start)
        while data := f.read(chunk_size):
            yield upload_pb2.UploadRequest(
                chunk=upload_pb2.UploadChunk(offset=offset, data=data, crc32c=google_crc32c.value(data))
            )
            offset += len(data)
            if progress:
                progress(offset, header.size)


class _Attempt:
    """One upload's moving parts across retries: the node address, its channel and stub."""

    def __init__(self, ticket: manager_pb2.CreateUploadResponse, dial: Callable[[str], str]) -> None:
        self.ticket = ticket
        self.dial = dial
        self.address = ticket.upload_address
        self.ch = channel(dial(self.address))
        self.stub = upload_pb2_grpc.UploadServiceStub(self.ch)

    async def move(self, manager: manager_pb2_grpc.ManagerServiceStub, metadata: tuple[tuple[str, str], ...]) -> None:
        """Ask the manager for another healthy upload node for the same upload (same ticket)."""
        async with map_rpc_errors():
            moved = await manager.RelocateUpload(
                manager_pb2.RelocateUploadRequest(upload_id=self.ticket.upload_id, ticket=self.ticket.ticket,
                                                  exclude_address=self.address),
                metadata=metadata, timeout=30)
        if moved.upload_address != self.address:
            await self.ch.close()
            self.address = moved.upload_address
            self.ch = channel(self.dial(self.address))
            self.stub = upload_pb2_grpc.UploadServiceStub(self.ch)

    async def query(self) -> upload_pb2.QueryUploadResponse:
        async with map_rpc_errors():
            reply: upload_pb2.QueryUploadResponse = await self.stub.QueryUpload(
                upload_pb2.QueryUploadRequest(ticket=self.ticket.ticket, upload_id=self.ticket.upload_id), timeout=10)
            return reply


async def upload_file(
    manager: manager_pb2_grpc.ManagerServiceStub,
    metadata: Sequence[tuple[str, str]],
    path: Path,
    *,
    filename: str = "",
    content_type: str = "",
    progress: Progress | None = None,
    timeout_s: float = 600.0,
    max_stall_s: float = 60.0,
    dial: Callable[[str], str] | None = None,
    expire_after_s: int = 0,
) -> common_pb2.Image:
    """Upload ``path`` and return the new image (status ``processing``, or ``failed``).

    ``metadata`` authenticates to the manager (API key, or the web node's cluster token and
    acting user). The upload resumes by itself: after a broken stream, a dead node
    (``UNAVAILABLE``), a busy lock or an offset mismatch it asks the node for the committed
    offset (``QueryUpload``) and sends the rest from there; when the node does not answer it
    asks the manager for another node for the same upload (``RelocateUpload``). It gives up
    when no byte was committed for ``max_stall_s`` seconds. ``dial`` maps an upload node
    address to the address to connect to (a proxy; tests). ``expire_after_s`` > 0 deletes the
    image that long after the upload completes. Raises
    :class:`~pixelfox.errors.PixelfoxError` subclasses: ``InvalidImage`` family for rejected
    bytes, ``Unauthenticated``, ``NoNodeAvailable``, ``Unavailable``...
    """
    size = path.stat().st_size
    name = filename or path.name
    md = tuple(metadata)
    async with map_rpc_errors():
        ticket = await manager.CreateUpload(
            manager_pb2.CreateUploadRequest(filename=name, size=size, content_type=content_type,
                                            expire_after_s=expire_after_s),
            metadata=md,
            timeout=30,
        )
    if size == 0:
        raise errors.EmptyFile("empty file")
    header = upload_pb2.UploadHeader(
        ticket=ticket.ticket, upload_id=ticket.upload_id, size=size, sha256=sha256_file(path), filename=name
    )
    chunk_size = ticket.chunk_size or 256 * 1024
    att = _Attempt(ticket, dial or (lambda a: a))
    offset, best, last_progress = 0, 0, time.monotonic()
    delay = 0.1
    try:
        while True:
            try:
                async with map_rpc_errors():
                    receipt = await att.stub.Upload(_requests(path, header, offset, chunk_size, progress),
                                                    timeout=timeout_s)
                return receipt.image
            except RETRYABLE as exc:
                logger.info("upload %s interrupted at about %d bytes (%s); resuming", ticket.upload_id, offset, exc)
            while True:  # find the committed offset, on this node or another
                if time.monotonic() - last_progress > max_stall_s:
                    raise errors.Unavailable(f"upload stalled for {max_stall_s:.0f} s at {offset} of {size} bytes")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                try:
                    q = await att.query()
                except errors.Unavailable:
                    with contextlib.suppress(errors.Unavailable, errors.NoNodeAvailable):
                        await att.move(manager, md)
                    continue
                except (errors.Timeout, errors.UploadBusy):
                    continue
                break
            if q.complete:  # finished, but the receipt was lost
                async with map_rpc_errors():
                    return await manager.GetImage(manager_pb2.GetImageRequest(slug=q.image_slug), metadata=md,
                                                  timeout=30)
            offset = q.offset
            if offset > best:
                best, last_progress, delay = offset, time.monotonic(), 0.1
    finally:
        await att.ch.close()


def guess_size(path: Path) -> int:
    """File size in bytes (``os.stat``); 0 for a missing file."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
