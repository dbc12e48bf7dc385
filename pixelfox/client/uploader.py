"""Upload one file through the cluster: ticket from the manager, chunks to an upload node.

Used by ``pixelfox put`` and by the web node. The flow is DESIGN.md's main flow, steps 1-3:
``CreateUpload`` on the manager returns an upload node address, a signed ticket and the
chunk size; the file is streamed as a header then ``chunk_size`` chunks, each with its offset
and CRC32C, and the node answers with a receipt holding the new image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import google_crc32c

from pixelfox import errors
from pixelfox.grpcx.client import channel, map_rpc_errors
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc, upload_pb2, upload_pb2_grpc

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_sent, total_bytes)``."""


def sha256_file(path: Path, block: int = 1024 * 1024) -> str:
    """Hex SHA-256 of a file, read in ``block``-byte pieces."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()


async def _requests(
    path: Path, header: upload_pb2.UploadHeader, chunk_size: int, progress: Progress | None
) -> AsyncIterator[upload_pb2.UploadRequest]:
    yield upload_pb2.UploadRequest(header=header)
    offset = 0
    with path.open("rb") as f:
        while data := f.read(chunk_size):
            yield upload_pb2.UploadRequest(
                chunk=upload_pb2.UploadChunk(offset=offset, data=data, crc32c=google_crc32c.value(data))
            )
            offset += len(data)
            if progress:
                progress(offset, header.size)


async def upload_file(
    manager: manager_pb2_grpc.ManagerServiceStub,
    metadata: Sequence[tuple[str, str]],
    path: Path,
    *,
    filename: str = "",
    content_type: str = "",
    progress: Progress | None = None,
    timeout_s: float = 600.0,
) -> common_pb2.Image:
    """Upload ``path`` and return the new image (status ``processing``, or ``failed``).

    ``metadata`` authenticates to the manager (API key, or the web node's cluster token and
    acting user). Raises :class:`~pixelfox.errors.PixelfoxError` subclasses: ``InvalidImage``
    family for rejected bytes, ``Unauthenticated``, ``NoNodeAvailable``, ``Unavailable``...
    """
    size = path.stat().st_size
    name = filename or path.name
    async with map_rpc_errors():
        ticket = await manager.CreateUpload(
            manager_pb2.CreateUploadRequest(filename=name, size=size, content_type=content_type),
            metadata=tuple(metadata),
            timeout=30,
        )
    if size == 0:
        raise errors.EmptyFile("empty file")
    header = upload_pb2.UploadHeader(
        ticket=ticket.ticket, upload_id=ticket.upload_id, size=size, sha256=sha256_file(path), filename=name
    )
    async with channel(ticket.upload_address) as ch, map_rpc_errors():
        stub = upload_pb2_grpc.UploadServiceStub(ch)
        receipt = await stub.Upload(
            _requests(path, header, ticket.chunk_size or 256 * 1024, progress), timeout=timeout_s
        )
    return receipt.image


def guess_size(path: Path) -> int:
    """File size in bytes (``os.stat``); 0 for a missing file."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
