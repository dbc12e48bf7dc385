"""Receiving one upload: ticket, chunks to shared staging, probe, verify, store, complete.

Uploads are resumable and the node keeps no state of its own (DESIGN.md main flow step 2):
the committed offset lives in Redis (:mod:`pixelfox.uploadstate`) and the bytes in
``<staging>/<upload id>.part`` on a directory every upload node reaches (one host: the
launcher's ``.pixelfox/data/staging``; several hosts: a shared mount — staging on the
storage tier or as S3 multipart parts can replace :class:`Session`'s file I/O later without
changing the protocol). A :class:`Session` is one writer: it holds the upload's Redis lock,
truncates the staged file to the committed offset (dropping bytes a dead writer never
committed), re-hashes the committed prefix (SHA-256 state is not serialisable), then takes
chunks at the committed offset. Chunks wholly below it are duplicates and are acknowledged
without writing; a chunk straddling it is trimmed; one beyond it is refused with
:class:`~pixelfox.errors.OffsetMismatch` naming the committed offset.

Nothing is kept that fails a check: the file is named by the server (the upload id, never
the client's file name); the first ``probe_bytes`` are probed with
:func:`pixelfox.imaging.probe` before more bytes are kept; the whole file's SHA-256 (against the
gRPC stream header's and the one declared at ``CreateUpload``, when given) and structure
(:func:`pixelfox.imaging.verify`) are checked at the end. Both also hold an animation to the memory
budget a processing node holds it to (:func:`check_image`). A bad image or checksum
removes the staged file and marks the upload failed; a full staging disk removes it and
resets the upload to offset 0 (``RESOURCE_EXHAUSTED``, no partial file). Transport errors
keep the committed bytes for a resume.

Storing the original is fenced (:mod:`pixelfox.storage.fence`): another user's image of the same
bytes shares its key, and a delete of that image between this node's puts and ``CompleteUpload``
recording the new image would remove the bytes the new image is about to name. So
:meth:`Receiver.store` enters the write fence of the SHA-256 (waiting while such a delete runs)
before the first put, and the fence is left once ``CompleteUpload`` answered or failed (the
manager already leaves it for this upload as soon as its rows are committed). The writer's lease is
short (:data:`FENCE_LEASE_S`) and renewed every :data:`FENCE_RENEW_S` while the node waits for the
fence, stores and completes, so a node that crashes in between holds deletes of those bytes back
for about a minute, not a ticket's life.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mmap
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import google_crc32c
from prometheus_client import Counter, Histogram

from nodes.upload import liveness
from pixelfox import errors, failpoints, ids, imaging, tickets
from pixelfox.config import LimitsSettings
from pixelfox.storage.client import StorageClient
from pixelfox.storage.fence import WriteFence, upload_token
from pixelfox.storage.keys import original_key
from pixelfox.storage.replicate import write_all
from pixelfox.uploadstate import State, UploadStates, lock_holder
from pixelfox.v1 import common_pb2, manager_pb2

logger = logging.getLogger(__name__)

UPLOADS = Counter("pixelfox_uploads_total", "uploads finished by result", ["result"])
UPLOAD_BYTES = Counter("pixelfox_upload_bytes_total", "bytes received by upload nodes")
UPLOAD_STEP_SECONDS = Histogram(
    "pixelfox_upload_step_seconds",
    "seconds per step of finishing an upload after its last byte: verify (check the whole file), "
    "store (copy to the storage replicas), complete (the manager records the image)",
    ["step"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

T = TypeVar("T")

EXT = {"jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp", "avif": "avif"}
#: errors after which the staged bytes can never become a valid upload
FATAL = (errors.InvalidImage, errors.ChecksumMismatch)
#: a writer records its offset in Redis (and extends its lock) once this many bytes or seconds
#: have gone by since the last record (also while its client pauses), at the end of the file and
#: when its stream ends; a writer that dies loses at most that much, which its client sends
#: again (a Redis round trip per 256 KiB chunk was 10-15 % of a fast loopback upload)
COMMIT_EVERY_BYTES = 4 * 1024 * 1024
COMMIT_EVERY_S = 0.5
#: seconds an upload node's write-fence lease (:meth:`Receiver.store`) lasts without renewal: how long a
#: node that crashed between storing an original and ``CompleteUpload`` holds deletes of its bytes back
FENCE_LEASE_S = 60.0
#: seconds between renewals of that lease while the node waits for the fence, stores and completes
FENCE_RENEW_S = 15.0


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
    crc32c: int | None  # None: no checksum sent (tus without Upload-Checksum)


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
CompleteFn = Callable[[Stored], Awaitable[manager_pb2.CompleteUploadResponse]]
#: ``(upload_id, ticket) -> None``: tell the manager a client terminated its upload
AbandonFn = Callable[[str, str], Awaitable[None]]
#: ``(upload_id, error) -> None``: tell the manager an upload failed, and why (``FailUpload``)
FailFn = Callable[[str, errors.PixelfoxError], Awaitable[None]]


def limits_for(settings: LimitsSettings) -> imaging.Limits:
    return imaging.Limits(
        max_pixels=settings.max_pixels, max_frames=settings.max_frames, max_input_bytes=settings.max_upload_bytes,
        max_animation_bytes=settings.max_animation_bytes,
    )


def check_image(data: bytes | mmap.mmap, limits: imaging.Limits, whole: bool) -> imaging.ImageInfo:
    """Probe (a prefix) or verify (the whole file), mapping imaging errors to the error tree.

    An animation is also held to ``limits.max_animation_bytes`` for :data:`pixelfox.imaging.DEFAULT_RECIPE`'s
    variants, which are the processing nodes' (their settings change only its qualities), so a file a
    processing node would refuse as too large is refused here, with its message, before it is stored.
    """
    recipe = imaging.DEFAULT_RECIPE
    try:
        return imaging.verify(data, limits, recipe) if whole else imaging.probe(data, limits, recipe)
    except imaging.ImageError as exc:
        raise errors.from_image_error(exc) from exc


def _pwrite_all(fd: int, data: bytes, offset: int, into: hashlib._Hash) -> None:
    """Write ``data`` at ``offset``, then add it to the running SHA-256 ``into`` (one thread hop for both)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
    into.update(data)


def _close_after(fut: asyncio.Future[object], fd: int) -> None:
    """Close ``fd`` once the thread work ``fut`` ended (its error was reported to no one)."""
    if not fut.cancelled() and fut.exception() is not None:
        logger.debug("file work ended after its stream: %s", fut.exception())
    os.close(fd)


def _hash_prefix(fd: int, length: int, probe_bytes: int) -> tuple[hashlib._Hash, bytes]:
    """SHA-256 of the first ``length`` staged bytes, and their first ``probe_bytes``."""
    h = hashlib.sha256()
    head = b""
    pos = 0
    while pos < length:
        data = os.pread(fd, min(1 << 20, length - pos), pos)
        if not data:
            break
        if pos < probe_bytes:
            head += data[: probe_bytes - pos]
        h.update(data)
        pos += len(data)
    return h, head


class Receiver:
    """Receives uploads into the shared ``staging_dir`` and stores them (see module doc)."""

    def __init__(self, node_id: str, staging_dir: Path, limits: LimitsSettings, ticket_key: bytes,
                 place: PlaceFn, secret: str, max_concurrent: int, states: UploadStates,
                 complete: CompleteFn, abandon: AbandonFn | None = None, fail: FailFn | None = None) -> None:
        self.node_id = node_id
        self.staging = staging_dir
        self.staging.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self.image_limits = limits_for(limits)
        self.ticket_key = ticket_key
        self.place = place
        self.secret = secret
        self.max_concurrent = max_concurrent
        self.states = states
        self.complete = complete
        self.abandon = abandon
        self.fail = fail
        self.active = 0
        #: write fence of the originals' bytes (module doc); a writer's lease is ``fence_lease_s``, renewed
        #: every ``fence_renew_s`` until :meth:`unfence`, so a node that dies between store and complete
        #: holds deletes back for one lease at most
        self.fence = WriteFence(states.redis)
        self.fence_lease_s = FENCE_LEASE_S
        self.fence_renew_s = FENCE_RENEW_S
        self._renewals: dict[str, asyncio.Task[None]] = {}

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.staging).free

    def path(self, upload_id: str) -> Path:
        return self.staging / f"{upload_id}.part"

    def usable_until(self, ticket: tickets.Ticket) -> int:
        """The last unix second ``ticket`` is accepted here (:func:`pixelfox.tickets.usable_until`)."""
        return tickets.usable_until(ticket.expires_at, self.limits.ticket_leeway_s)

    def check_ticket(self, token: str, upload_id: str, size: int | None = None) -> tickets.Ticket:
        """Verify a ticket for ``upload_id`` (and ``size`` when given); raises InvalidTicket with the reason."""
        ticket = tickets.verify(self.ticket_key, token, leeway_s=self.limits.ticket_leeway_s)
        if upload_id != ticket.upload_id or not ids.ULID.fullmatch(upload_id):
            raise errors.InvalidTicket("ticket belongs to another upload")
        if size is not None and size != ticket.size:
            raise errors.InvalidTicket(f"ticket is for {ticket.size} bytes, not {size}")
        return ticket

    async def query(self, token: str, upload_id: str, idle: bool = False) -> State:
        """State of an upload for ``QueryUpload``/tus ``HEAD``; NotFound when unknown or expired.

        ``idle=True`` (gRPC) also raises UploadBusy while a stream holds the upload's lock, so a
        resuming client waits instead of sending bytes that would be refused.
        """
        return await self.state(self.check_ticket(token, upload_id), idle)

    async def state(self, ticket: tickets.Ticket, idle: bool = False) -> State:
        """:meth:`query` for a ticket :meth:`check_ticket` already verified (no second verify)."""
        upload_id = ticket.upload_id
        st = await self.states.get(upload_id)
        if st is None:
            raise errors.NotFound("upload not found: it expired or never existed; start a new upload")
        if st.closed:
            raise st.failure()  # the reason (415 not an image, cancelled by its owner...), not just "used"
        if idle and st.status == "open" and await self.states.locked(upload_id) \
                and not await self._dead_holder(upload_id):  # a dead node's lock: the next stream takes it over
            raise errors.UploadBusy("another stream is still writing this upload; ask again shortly")
        return st

    async def _dead_holder(self, upload_id: str) -> str:
        """The token of ``upload_id``'s writer lock when its node is known dead (:mod:`nodes.upload.liveness`),
        else ""."""
        token = await self.states.holder(upload_id)
        return token if token and await liveness.holder_dead(self.states, token) else ""

    async def _lock(self, upload_id: str) -> str:
        """Take ``upload_id``'s writer lock, or take it over from a dead node's stream; returns its token.
        Raises UploadBusy while a live (or maybe live) writer holds it."""
        try:
            return await self.states.lock(upload_id, self.node_id)
        except errors.UploadBusy:
            dead = await self._dead_holder(upload_id)
            token = await self.states.take_over(upload_id, dead, self.node_id) if dead else ""
            if not token:
                raise
            logger.info("upload %s: took the writer lock over from %s (that node is gone)", upload_id,
                        lock_holder(dead))
            return token

    async def open(self, token: str, upload_id: str, size: int, sha256: str = "") -> Session:
        """A writer :class:`Session` for one stream; the caller must ``await session.close()``."""
        ticket = self.check_ticket(token, upload_id, size)
        if self.active >= self.max_concurrent:
            raise errors.ResourceExhausted("upload node busy: too many uploads at once, retry shortly")
        # the slot is taken before the Redis round trips below: counted after them, a burst of streams
        # all passed the check at once (96 uploads in flight on a node capped at 64, issue 4)
        self.active += 1
        try:
            st = await self.states.require_open(upload_id)
            if st.size != size:
                raise errors.InvalidTicket(f"upload is for {st.size} bytes, not {size}")
            lock = await self._lock(upload_id)
        except BaseException:
            self.active -= 1
            raise
        session = Session(self, Header(token, upload_id, size, sha256, ""), lock,  # its close() frees the slot
                          st.user_id, self.usable_until(ticket))
        try:
            await session.start(st)
        except BaseException:
            await session.close()
            raise
        return session

    async def terminate(self, token: str, upload_id: str) -> None:
        """tus termination: remove the staged bytes, close the state as ``abandoned`` (later requests
        get NOT_FOUND saying the upload was cancelled, until the state's TTL; it was deleted, and they
        heard "expired or never existed"), and tell the manager (``abandon``), which frees the user's
        open-upload slot at once. A manager that cannot be reached is only logged: the slot then
        frees when the upload's TTL ends."""
        self.path(upload_id).unlink(missing_ok=True)
        await self.states.finish(upload_id, "abandoned", error=errors.NotFound(
            "the upload was cancelled by its client (tus DELETE); start a new upload"))
        if self.abandon is not None:
            try:
                await self.abandon(upload_id, token)
            except errors.PixelfoxError as exc:
                logger.warning("upload %s terminated, but the manager did not hear it: %s", upload_id, exc)

    async def report_failure(self, upload_id: str, error: errors.PixelfoxError) -> None:
        """Tell the manager (``fail``) why ``upload_id`` failed, so that its progress keeps the reason
        after the Redis state's TTL. A manager that cannot be reached is only logged: the reason then
        lives as long as the state (``upload_ttl_s``), and the upload reads ``expired`` after it."""
        if self.fail is None:
            return
        try:
            await self.fail(upload_id, error)
        except errors.PixelfoxError as exc:
            logger.warning("upload %s failed (%s), but the manager did not hear it: %s", upload_id, error.code, exc)

    async def receive(self, header: Header, chunks: AsyncIterator[Chunk]) -> manager_pb2.CompleteUploadResponse:
        """One gRPC stream: chunks from the committed offset to the end, then store and complete."""
        session = await self.open(header.ticket, header.upload_id, header.size, header.sha256)
        try:
            async for chunk in chunks:
                await session.write(chunk)
            if session.offset != header.size:
                raise errors.OffsetMismatch(
                    f"stream ended at offset {session.offset} of {header.size} bytes; resume from there")
            return await session.finish()
        finally:
            await session.close()

    async def sweep(self, min_age_s: float) -> int:
        """Remove staged files no upload can use any more; returns how many.

        A file goes when its upload's state expired and the file is untouched for ``min_age_s``
        seconds, or at once when its upload was cancelled (``abandoned``) or ``failed`` and no
        writer holds its lock (a writer that does finds out at its next commit and removes the file
        itself). An open upload's file is never removed.
        """
        removed = 0
        now = time.time()
        for path in list(self.staging.glob("*.part")):
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            st = await self.states.get(path.stem)
            if st is None:
                if age < min_age_s:
                    continue
            elif not st.closed or await self.states.locked(path.stem):
                continue
            path.unlink(missing_ok=True)
            removed += 1
            logger.info("removed the staged bytes of %s upload %s", st.status if st else "expired", path.stem)
        return removed

    async def store(self, path: Path, header: Header, sha: str, info: imaging.ImageInfo) -> Stored:
        """Put the checked original on the storage nodes the manager places it on, inside the write fence of
        ``sha`` (entered here; the caller leaves it with :meth:`unfence` after ``CompleteUpload``; left here
        when storing fails). Raises DeleteInProgress (a delete of the same bytes outlasted the fence's
        wait) and the placement's and storage's errors."""
        key = original_key(sha, EXT.get(info.format, info.format))
        token = upload_token(header.upload_id)
        self._stop_renewal(header.upload_id)
        # renewed from now on, also while enter() waits for a delete under way (up to its bound, longer
        # than one lease): a lease that ran out there would let the next deleter drop this writer
        self._renewals[header.upload_id] = asyncio.create_task(self._renew(sha, token))
        try:
            await self.fence.enter(sha, token, self.fence_lease_s)
            return await self._put_original(path, header, sha, info, key)
        except BaseException:
            await self.unfence(sha, header.upload_id)
            raise

    async def unfence(self, sha: str, upload_id: str) -> None:
        """Leave the write fence :meth:`store` entered and stop renewing its lease; a Redis error is only
        logged (the lease ends it)."""
        self._stop_renewal(upload_id)
        try:
            await self.fence.leave(sha, upload_token(upload_id))
        except Exception as exc:
            logger.warning("upload %s: could not leave the write fence (its lease ends it): %s", upload_id, exc)

    def _stop_renewal(self, upload_id: str) -> None:
        if (task := self._renewals.pop(upload_id, None)) is not None:
            task.cancel()

    async def _renew(self, sha: str, token: str) -> None:
        """Push writer ``token``'s lease on ``sha`` out every ``fence_renew_s`` until cancelled, or until it is
        not registered any more (the manager left it for us once the rows were committed, or it gave up
        waiting). A Redis error is logged and the next tick tries again."""
        while True:
            await asyncio.sleep(self.fence_renew_s)
            try:
                if not await self.fence.renew(sha, token, self.fence_lease_s):
                    return
            except Exception as exc:
                logger.warning("%s: could not renew the write-fence lease of %s: %s", token, sha[:12], exc)

    async def _put_original(self, path: Path, header: Header, sha: str, info: imaging.ImageInfo,
                            key: str) -> Stored:
        nodes = await self.place(header.size)

        async def put(node: common_pb2.Node) -> str:
            client = StorageClient(node.grpc_address, self.secret)
            try:
                await client.put(key, path, content_type=info.mime, sha256=sha)
                return node.node_id
            finally:
                await client.close()

        # every healthy target, transient failures retried; fewer than all = under-replicated (repair)
        ok = await write_all(list(nodes), put, what=f"original {key}")
        return Stored(header.upload_id, header.ticket, sha, header.size, info, key, ok)


class Session:
    """One writer of one upload, holding its Redis lock (made by :meth:`Receiver.open`)."""

    def __init__(self, rx: Receiver, header: Header, lock: str, owner: str = "", usable_until: float = 0.0) -> None:
        self.rx = rx
        self.header = header
        self.lock = lock
        self.owner = owner  # user id ("" anonymous): whose open-upload slot this upload holds
        self.usable_until = usable_until  # unix time its ticket is last accepted
        self.slot_until = 0.0  # the slot's end as last sent to Redis (see _record)
        self.path = rx.path(header.upload_id)
        self.fd = -1
        self.offset = 0
        self.probed = False
        self.head = b""
        self.hash = hashlib.sha256()
        self.declared = ""  # the file's SHA-256 as declared at CreateUpload (the state's; "" none)
        self.closed = False
        self.committed = 0  # the offset Redis holds
        self.committed_at = time.monotonic()
        self.held = False  # bytes written with commit=False wait for an explicit commit()
        self.dropped = False  # the staged bytes were removed (failed or reset): nothing left to commit
        self._commit_lock = asyncio.Lock()  # records go to Redis one at a time, offsets never going back
        self._idle_flush: asyncio.Task[None] | None = None
        self._io: asyncio.Future[object] | None = None  # the file work in a thread, if any

    async def start(self, st: State) -> None:
        self.declared = st.sha256
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        have = os.fstat(self.fd).st_size
        offset = st.offset
        if have < offset:  # staged bytes lost (staging not shared?): start over rather than guess
            logger.warning("upload %s: %d bytes staged but %d committed; restarting at 0",
                           self.header.upload_id, have, offset)
            offset = 0
            await self.rx.states.reset(self.header.upload_id)
        os.ftruncate(self.fd, offset)  # drop what a dead writer never committed
        self.offset, self.probed = offset, st.probed and offset > 0
        self.committed = offset
        if offset:
            self.hash, self.head = await self._in_thread(_hash_prefix, self.fd, offset, self.rx.limits.probe_bytes)
        self._idle_flush = asyncio.create_task(self._flush_while_idle())

    async def _flush_while_idle(self) -> None:
        """Record written bytes while no chunk arrives (the write path records only on a chunk)."""
        while True:
            await asyncio.sleep(COMMIT_EVERY_S)
            if time.monotonic() - self.committed_at >= COMMIT_EVERY_S:
                try:
                    await self.flush()
                except Exception as exc:  # the next write or close() reports it
                    logger.debug("upload %s: idle flush failed: %s", self.header.upload_id, exc)

    async def write(self, chunk: Chunk, commit: bool = True) -> int:
        """Take one chunk (see module doc for duplicates and offsets); returns the new offset.

        ``commit=True`` records the offset in Redis every :data:`COMMIT_EVERY_BYTES` or
        :data:`COMMIT_EVERY_S` and at the end of the file (:meth:`flush` records the rest);
        ``commit=False`` writes without recording it (tus checksums: the caller commits once
        the whole PATCH body checked out, or the next writer truncates).
        """
        if chunk.offset > self.offset or chunk.offset < 0:
            raise errors.OffsetMismatch(f"chunk at offset {chunk.offset}; committed offset is {self.offset}")
        if chunk.crc32c is not None and google_crc32c.value(chunk.data) != chunk.crc32c:
            raise errors.ChecksumMismatch(f"CRC32C mismatch in the chunk at offset {chunk.offset}")
        end = chunk.offset + len(chunk.data)
        if end <= self.offset:
            return self.offset  # a duplicate of committed bytes: acknowledged, not written again
        data = chunk.data[self.offset - chunk.offset:]
        if end > self.header.size:
            raise errors.PayloadTooLarge(f"more bytes than the declared {self.header.size}")
        try:
            await self._in_thread(_pwrite_all, self.fd, data, self.offset, self.hash)
        except OSError as exc:
            await self._drop(reset=True)
            raise errors.StorageFull("upload staging is full; the partial upload was removed, try again later") \
                from exc
        if not commit:  # before the probe's await below: an idle flush must not record unverified bytes
            self.held = True
        self.offset = end
        UPLOAD_BYTES.inc(len(data))
        if not self.probed:
            self.head += data[: self.rx.limits.probe_bytes - len(self.head)]
            if len(self.head) >= self.rx.limits.probe_bytes or end == self.header.size:
                await self._guard(check_image, self.head, self.rx.image_limits, False)
                self.probed, self.head = True, b""
        if commit and (end == self.header.size or end - self.committed >= COMMIT_EVERY_BYTES
                       or time.monotonic() - self.committed_at >= COMMIT_EVERY_S):
            await self.commit()
        return self.offset

    async def commit(self) -> None:
        """Record the current offset in Redis (fenced by the lock; extends it). Raises
        UploadBusy when the lock expired or another stream holds it, NotFound when the upload
        expired."""
        async with self._commit_lock:
            await self._record()

    async def flush(self) -> None:
        """Record bytes written since the last record (not those held for a tus checksum)."""
        async with self._commit_lock:
            if self.offset > self.committed and not self.held and not self.dropped:
                await self._record()

    async def _record(self) -> None:
        offset = self.offset
        try:
            await self.rx.states.commit(self.header.upload_id, self.lock, offset, self.probed)
        except errors.PixelfoxError:
            await self._drop_if_closed()
            raise
        self.committed, self.committed_at, self.held = offset, time.monotonic(), False
        # the commit pushed the state's expiry out, so the upload's open-upload slot lives as long (never
        # past its ticket's end): at most one more round trip a second, and one per stream or PATCH once the
        # ticket bounds it (the default: tickets end long before the state)
        until = min(self.usable_until, time.time() + self.rx.states.ttl_s)
        if self.owner and until - self.slot_until >= 1:
            await self.rx.states.hold_slot(self.owner, self.header.upload_id, until)
            self.slot_until = until

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` (file work on :attr:`fd`) in the default thread pool.

        A thread cannot be stopped: when the stream is cancelled mid-write, the ``pwrite``
        goes on. The future is kept so that :meth:`close` closes the fd only after that
        thread is done; closing it earlier could let the write land in another upload's file
        that reused the fd number.
        """
        fut = asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args))
        self._io = fut
        return await asyncio.shield(fut)

    async def _guard(self, fn: Callable[..., imaging.ImageInfo], *args: object) -> imaging.ImageInfo:
        try:
            return await self._in_thread(fn, *args)
        except FATAL as exc:
            await self._drop(reset=False, error=exc)
            UPLOADS.labels(exc.code).inc()
            raise

    async def _drop_if_closed(self) -> None:
        """After a refused commit: remove the staged bytes if the upload was cancelled or failed under
        this writer (they can never be used; the sweeper would only find them after a while)."""
        st = await self.rx.states.get(self.header.upload_id)
        if st is not None and st.closed:
            self.dropped = True
            self.path.unlink(missing_ok=True)
            logger.info("upload %s is %s: its staged bytes were removed", self.header.upload_id, st.status)

    async def _drop(self, reset: bool, error: errors.PixelfoxError | None = None) -> None:
        """Remove the staged bytes; reset to offset 0 (retryable) or mark the upload failed
        (with ``error``, which the ticket's later queries and resumes get again)."""
        self.dropped = True
        self.path.unlink(missing_ok=True)
        if reset:
            await self.rx.states.reset(self.header.upload_id)
        else:
            await self.rx.states.finish(self.header.upload_id, "failed", error=error)
            if error is not None:
                await self.rx.report_failure(self.header.upload_id, error)

    def _verify(self) -> imaging.ImageInfo:
        with mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ) as m:
            return check_image(m, self.rx.image_limits, whole=True)

    def _mismatch(self, sha: str) -> errors.ChecksumMismatch | None:
        """Why the file of SHA-256 ``sha`` is not the one announced, or None: the gRPC stream header's
        hash, and the one declared at ``CreateUpload`` (``POST /api/v1/uploads``' ``sha256``, used for
        dedup there: tus has no header of its own for it, and its bytes were stored under any hash)."""
        if self.header.sha256 and self.header.sha256.lower() != sha:
            return errors.ChecksumMismatch("SHA-256 of the received bytes does not match the header")
        if self.declared and self.declared.lower() != sha:
            return errors.ChecksumMismatch("SHA-256 of the received bytes does not match the sha256 declared "
                                           "when the upload was created")
        return None

    async def finish(self) -> manager_pb2.CompleteUploadResponse:
        """Check the whole file, store it, report it to the manager; removes the staged file."""
        sha = self.hash.hexdigest()
        if (mismatch := self._mismatch(sha)) is not None:
            await self._drop(reset=False, error=mismatch)
            UPLOADS.labels("checksum-mismatch").inc()
            raise mismatch
        with UPLOAD_STEP_SECONDS.labels("verify").time():
            info = await self._guard(self._verify)
        with UPLOAD_STEP_SECONDS.labels("store").time():
            stored = await self.rx.store(self.path, self.header, sha, info)
        try:
            await failpoints.pause("before-complete")
            with UPLOAD_STEP_SECONDS.labels("complete").time():
                try:
                    reply = await self.rx.complete(stored)
                except errors.PixelfoxError:  # refused: cancelled while its last bytes were on the way?
                    await self._drop_if_closed()
                    raise
        finally:  # recorded (the manager left the fence already) or not: nothing more to protect
            await self.rx.unfence(sha, self.header.upload_id)
        await self.rx.states.finish(self.header.upload_id, "complete", reply.image.slug)
        self.path.unlink(missing_ok=True)
        UPLOADS.labels("stored").inc()
        return reply

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.rx.active -= 1
        if self._idle_flush is not None:
            self._idle_flush.cancel()
        try:
            try:  # a cut stream keeps what it wrote: its client resumes from there
                await self.flush()
            except Exception as exc:
                logger.warning("upload %s: could not record offset %d: %s", self.header.upload_id, self.offset, exc)
        finally:  # also when cancelled: the fd is never left behind, and the lock is released (or, when
            # close() itself is cancelled while a thread write runs, expires after its TTL)
            if self.fd >= 0:
                fd, self.fd = self.fd, -1
                if self._io is not None and not self._io.done():  # a cancelled write still runs
                    self._io.add_done_callback(lambda f: _close_after(f, fd))
                else:
                    os.close(fd)
            try:
                if self._io is not None and not self._io.done():
                    # the lock stays until that write ends (at most its TTL): a next writer would
                    # truncate the staged file under it
                    await asyncio.wait({self._io}, timeout=self.rx.states.lock_ttl_ms / 1000)
                await self.rx.states.unlock(self.header.upload_id, self.lock)
            except Exception as exc:  # the lock expires by itself
                logger.warning("could not release the lock of upload %s: %s", self.header.upload_id, exc)
