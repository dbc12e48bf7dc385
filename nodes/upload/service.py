"""Receiving one upload: ticket, chunks to staging, probe, verify, store, complete.

Nothing is kept that fails a check: the staged file lives under a server-chosen name
(the upload id, never the client's file name) and is removed on every error. The header
is probed with :func:`pixelfox.imaging.probe` once the first ``probe_bytes`` have arrived,
so a non-image, an unsupported format or a decompression bomb is refused before the rest
is kept; the whole file's SHA-256 and structure (:func:`pixelfox.imaging.verify`) are
checked at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mmap
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
from prometheus_client import Counter

from pixelfox import errors, imaging, tickets
from pixelfox.config import LimitsSettings
from pixelfox.storage.client import StorageClient
from pixelfox.storage.keys import original_key
from pixelfox.v1 import common_pb2

logger = logging.getLogger(__name__)

UPLOADS = Counter("pixelfox_uploads_total", "uploads finished by result", ["result"])
UPLOAD_BYTES = Counter("pixelfox_upload_bytes_total", "bytes received by upload nodes")

UPLOAD_ID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")  # a ULID
EXT = {"jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp", "avif": "avif"}


@dataclass(frozen=True)
class Header:
    ticket: str
    upload_id: str
    size: int
    sha256: str
    filename: str


@dataclass(frozen=True)
class Chunk:
    offset: int
    data: bytes
    crc32c: int


@dataclass(frozen=True)
class Stored:
    """The checked original, ready to be reported to the manager."""

    upload_id: str
    ticket: str
    sha256: str
    size: int
    info: imaging.ImageInfo
    key: str
    storage_node_ids: list[str]


PlaceFn = Callable[[int], Awaitable[list[common_pb2.Node]]]


def limits_for(settings: LimitsSettings) -> imaging.Limits:
    return imaging.Limits(
        max_pixels=settings.max_pixels, max_frames=settings.max_frames, max_input_bytes=settings.max_upload_bytes
    )


def check_image(data: bytes | mmap.mmap, limits: imaging.Limits, whole: bool) -> imaging.ImageInfo:
    """Probe (a prefix) or verify (the whole file), mapping imaging errors to the error tree."""
    try:
        return imaging.verify(data, limits) if whole else imaging.probe(data, limits)
    except imaging.ImageError as exc:
        raise errors.from_image_error(exc) from exc


class Receiver:
    """Receives uploads into ``staging_dir`` and stores them through ``place`` + storage clients."""

    def __init__(self, node_id: str, staging_dir: Path, limits: LimitsSettings, ticket_key: bytes,
                 place: PlaceFn, secret: str, max_concurrent: int) -> None:
        self.node_id = node_id
        self.staging = staging_dir
        self.staging.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self.image_limits = limits_for(limits)
        self.ticket_key = ticket_key
        self.place = place
        self.secret = secret
        self.max_concurrent = max_concurrent
        self.active = 0

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.staging).free

    async def receive(self, header: Header, chunks: AsyncIterator[Chunk]) -> Stored:
        """Take one upload to a stored original; raises PixelfoxError subclasses, leaving nothing."""
        ticket = tickets.verify(self.ticket_key, header.ticket)
        if header.upload_id != ticket.upload_id or not UPLOAD_ID_RE.match(header.upload_id):
            raise errors.InvalidTicket("ticket belongs to another upload")
        if header.size != ticket.size:
            raise errors.InvalidTicket(f"ticket is for {ticket.size} bytes, not {header.size}")
        if self.active >= self.max_concurrent:
            raise errors.ResourceExhausted("upload node busy: too many uploads at once, retry shortly")
        self.active += 1
        path = self.staging / f"{header.upload_id}.part"
        try:
            sha, info = await self._stage(path, header, chunks)
            stored = await self._store(path, header, sha, info)
            UPLOADS.labels("stored").inc()
            return stored
        except errors.PixelfoxError as exc:
            UPLOADS.labels(exc.code).inc()
            raise
        finally:
            self.active -= 1
            path.unlink(missing_ok=True)

    async def _stage(self, path: Path, header: Header, chunks: AsyncIterator[Chunk]) -> tuple[str, imaging.ImageInfo]:
        h = hashlib.sha256()
        head = bytearray()
        info: imaging.ImageInfo | None = None
        offset = 0
        with path.open("wb") as f:
            async for chunk in chunks:
                if chunk.offset != offset:
                    raise errors.OffsetMismatch(f"chunk at offset {chunk.offset}; committed offset is {offset}")
                if google_crc32c.value(chunk.data) != chunk.crc32c:
                    raise errors.ChecksumMismatch(f"CRC32C mismatch in the chunk at offset {offset}")
                if offset + len(chunk.data) > header.size:
                    raise errors.PayloadTooLarge(f"more bytes than the declared {header.size}")
                try:
                    await asyncio.to_thread(f.write, chunk.data)
                except OSError as exc:
                    raise errors.StorageFull("upload staging is full; try again later") from exc
                h.update(chunk.data)
                offset += len(chunk.data)
                UPLOAD_BYTES.inc(len(chunk.data))
                if info is None:
                    head += chunk.data[: self.limits.probe_bytes - len(head)]
                    if len(head) >= self.limits.probe_bytes or offset == header.size:
                        info = check_image(bytes(head), self.image_limits, whole=False)
            f.flush()
        if offset != header.size:
            raise errors.BadRequest(f"upload ended at {offset} of {header.size} bytes")
        sha = h.hexdigest()
        if header.sha256 and header.sha256.lower() != sha:
            raise errors.ChecksumMismatch("SHA-256 of the received bytes does not match the header")
        info = await asyncio.to_thread(self._verify, path)
        return sha, info

    def _verify(self, path: Path) -> imaging.ImageInfo:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return check_image(m, self.image_limits, whole=True)

    async def _store(self, path: Path, header: Header, sha: str, info: imaging.ImageInfo) -> Stored:
        key = original_key(sha, EXT.get(info.format, info.format))
        nodes = await self.place(header.size)

        async def put(node: common_pb2.Node) -> str:
            client = StorageClient(node.grpc_address, self.secret)
            try:
                await client.put(key, path, content_type=info.mime, sha256=sha)
                return node.node_id
            finally:
                await client.close()

        results = await asyncio.gather(*(put(n) for n in nodes), return_exceptions=True)
        ok = [r for r in results if isinstance(r, str)]
        for n, r in zip(nodes, results, strict=True):
            if isinstance(r, BaseException):
                logger.warning("storing %s on %s failed: %s", key, n.node_id, r)
        if not ok:
            raise errors.Unavailable("no storage node accepted the original; try again")
        return Stored(header.upload_id, header.ticket, sha, header.size, info, key, ok)
