"""Upload one file through the cluster: ticket from the manager, chunks to an upload node.

Used by ``pixelfox put`` and by the web node. The flow is DESIGN.md's main flow, steps 1-3:
``CreateUpload`` on the manager returns an upload node address, a signed ticket and the
chunk size; the file is streamed as a header then ``chunk_size`` chunks, each with its offset
and CRC32C, and the node answers with a receipt holding the new image (or, deduplicated, the
user's existing image of the same bytes).
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
import grpc

from pixelfox import errors
from pixelfox.grpcx.client import DEFAULT_MAX_MESSAGE_BYTES, map_rpc_errors
from pixelfox.v1 import manager_pb2, manager_pb2_grpc, upload_pb2, upload_pb2_grpc

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


def _own_channel(address: str) -> grpc.aio.Channel:
    """A channel with its own TCP connection (not the process-wide subchannel pool).

    Each upload is a long stream of large messages: sharing one HTTP/2 connection between many
    concurrent uploads would share its flow-control window and hit the server's
    ``max_concurrent_streams`` (256), which refuses streams (``RST_STREAM REFUSED_STREAM``).
    """
    return grpc.aio.insecure_channel(address, options=[
        ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.use_local_subchannel_pool", 1),
    ])


def _broken_transport(exc: errors.PixelfoxError) -> bool:
    """grpc-python reports a write on a connection that died as INTERNAL "Internal error from Core"
    (no PixelFox error code): a transport failure to resume from, unlike a server's internal error."""
    return type(exc) is errors.PixelfoxError and "Internal error from Core" in str(exc)


class _Attempt:
    """One upload's moving parts across retries: the node address, its channel and stub."""

    def __init__(self, ticket: manager_pb2.CreateUploadResponse, dial: Callable[[str], str]) -> None:
        self.ticket = ticket
        self.dial = dial
        self.address = ticket.upload_address
        self.ch = _own_channel(dial(self.address))
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
            self.ch = _own_channel(self.dial(self.address))
            self.stub = upload_pb2_grpc.UploadServiceStub(self.ch)

    async def query(self) -> upload_pb2.QueryUploadResponse:
        async with map_rpc_errors():
            reply: upload_pb2.QueryUploadResponse = await self.stub.QueryUpload(
                upload_pb2.QueryUploadRequest(ticket=self.ticket.ticket, upload_id=self.ticket.upload_id), timeout=10)
            return reply


async def _create(
    manager: manager_pb2_grpc.ManagerServiceStub, md: tuple[tuple[str, str], ...], req: manager_pb2.CreateUploadRequest
) -> manager_pb2.CreateUploadResponse:
    """``CreateUpload``, asked again (up to 4 times) when the call was refused or dropped on the way."""
    for attempt in range(4):
        try:
            async with map_rpc_errors():
                reply: manager_pb2.CreateUploadResponse = await manager.CreateUpload(req, metadata=md, timeout=30)
                return reply
        except errors.Unavailable:
            if attempt == 3:
                raise
            await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


async def _create_hashed(
    manager: manager_pb2_grpc.ManagerServiceStub, md: tuple[tuple[str, str], ...],
    req: manager_pb2.CreateUploadRequest, path: Path
) -> tuple[manager_pb2.CreateUploadResponse, str]:
    """The file's SHA-256, then ``CreateUpload`` declaring it (``req.sha256``), so that the manager can
    answer at once with the caller's image of these bytes (``deduplicated``: nothing to send). The hash
    runs in a thread (hashlib releases the GIL), never on the event loop, which it would stall for every
    other task of the process (the web node's; 17-31 ms for 20 MiB here); the file's bytes are read
    for the stream anyway. Returns the answer and the digest; raises EmptyFile for an empty file."""
    digest = await asyncio.to_thread(sha256_file, path)
    req.sha256 = digest
    ticket = await _create(manager, md, req)
    if req.size == 0:
        raise errors.EmptyFile("empty file")
    return ticket, digest


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
    title: str = "",
) -> upload_pb2.UploadReceipt:
    """Upload ``path``; the receipt's ``image`` is the new image (status ``processing``, or ``failed``).

    ``metadata`` authenticates to the manager (API key, or the web node's cluster token and
    acting user). The upload resumes by itself: after a broken stream, a dead node
    (``UNAVAILABLE``), a busy lock or an offset mismatch it asks the node for the committed
    offset (``QueryUpload``) and sends the rest from there (a node at its ``max_concurrent`` is
    retried the same way); when the node does not answer it
    asks the manager for another node for the same upload (``RelocateUpload``). It gives up
    when no byte was committed for ``max_stall_s`` seconds. ``dial`` maps an upload node
    address to the address to connect to (a proxy; tests). ``expire_after_s`` > 0 deletes the
    image that long after the upload completes; ``title`` (at most 255 characters) titles a new
    image, while a re-upload of bytes the user already has returns that image as it is, with the
    receipt's ``deduplicated`` true (an upload with ``expire_after_s`` is never deduplicated). The file is
    hashed first and its SHA-256 declared to ``CreateUpload``: when the manager answers with the caller's
    image of these bytes, no byte is sent and the receipt has no ``upload_id`` (no upload was made). Raises
    :class:`~pixelfox.errors.PixelfoxError` subclasses: ``InvalidImage`` family for rejected
    bytes, ``Unauthenticated``, ``NoNodeAvailable``, ``Unavailable``...
    """
    size = path.stat().st_size
    name = filename or path.name
    md = tuple(metadata)
    ticket, digest = await _create_hashed(manager, md, manager_pb2.CreateUploadRequest(
        filename=name, size=size, content_type=content_type, expire_after_s=expire_after_s, title=title), path)
    if ticket.deduplicated:  # the caller's image of these bytes: no upload was made, nothing is sent
        return _known(ticket, size, digest, progress)
    att = _Attempt(ticket, dial or (lambda a: a))
    chunk_size = ticket.chunk_size or 256 * 1024
    offset, best, last_progress = 0, 0, time.monotonic()
    delay = 0.1
    cause = ""  # the last answer that interrupted the upload, for the stall message
    try:
        header = upload_pb2.UploadHeader(
            ticket=ticket.ticket, upload_id=ticket.upload_id, size=size, sha256=digest, filename=name
        )
        while True:
            try:
                async with map_rpc_errors():
                    receipt: upload_pb2.UploadReceipt = await att.stub.Upload(
                        _requests(path, header, offset, chunk_size, progress), timeout=timeout_s)
                return receipt
            except RETRYABLE as exc:
                cause = str(exc)
                logger.info("upload %s interrupted at about %d bytes (%s); resuming", ticket.upload_id, offset, exc)
            except errors.ResourceExhausted as exc:
                if type(exc) is not errors.ResourceExhausted:  # quota, rate, full disk: not a busy node
                    raise
                cause = str(exc)
                logger.info("upload node busy (%s); retrying", exc)
                delay = max(delay, 0.5)
            except errors.PixelfoxError as exc:
                if not _broken_transport(exc):
                    raise
                cause = "the connection broke"
                logger.info("upload %s: the stream broke (%s); resuming", ticket.upload_id, exc)
            while True:  # find the committed offset, on this node or another
                if time.monotonic() - last_progress > max_stall_s:
                    said = f"; the last answer was: {cause}" if cause else ""
                    raise errors.Unavailable(
                        f"upload stalled for {max_stall_s:.0f} s at {offset} of {size} bytes{said}")
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
                return await _lost_receipt(manager, md, header)
            offset = q.offset
            if offset > best:
                best, last_progress, delay = offset, time.monotonic(), 0.1
    finally:
        await att.ch.close()


def _known(
    answer: manager_pb2.CreateUploadResponse, size: int, digest: str, progress: Progress | None
) -> upload_pb2.UploadReceipt:
    """The receipt of a file ``CreateUpload`` answered with the caller's image of its bytes (``deduplicated``):
    that image, no ``upload_id`` (none was made); ``progress`` is told the file is done."""
    if progress:
        progress(size, size)
    return upload_pb2.UploadReceipt(size=size, sha256=digest, image=answer.image, deduplicated=True)


async def _lost_receipt(
    manager: manager_pb2_grpc.ManagerServiceStub, md: tuple[tuple[str, str], ...], header: upload_pb2.UploadHeader
) -> upload_pb2.UploadReceipt:
    """The receipt of a completed upload whose answer was lost, from the manager's ``GetUpload``
    (which also knows whether it was deduplicated)."""
    async with map_rpc_errors():
        p: manager_pb2.UploadProgress = await manager.GetUpload(
            manager_pb2.GetUploadRequest(upload_id=header.upload_id), metadata=md, timeout=30)
    return upload_pb2.UploadReceipt(upload_id=header.upload_id, size=header.size, sha256=p.image.sha256,
                                    image=p.image, deduplicated=p.deduplicated)


def guess_size(path: Path) -> int:
    """File size in bytes (``os.stat``); 0 for a missing file."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
