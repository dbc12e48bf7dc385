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
import functools
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import google_crc32c
import grpc

from pixelfox import errors
from pixelfox.client.journal import Entry, FileKey, epoch
from pixelfox.client.resume import Resume, abandon_upload, cancel_stale
from pixelfox.client.stall import NO_NODE_S, NoNode, Watch
from pixelfox.grpcx.client import DEFAULT_MAX_MESSAGE_BYTES, map_rpc_errors
from pixelfox.v1 import manager_pb2, manager_pb2_grpc, upload_pb2, upload_pb2_grpc
from pixelfox.visibility import asked_visibility

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


class _Pulls:
    """When a stream last took a message from :func:`_requests` (``time.monotonic()``): ``at``, its start
    or its last message; ``chunk_at``, its last chunk (0.0: none yet); ``done`` once the file is all
    sent; ``stalled`` once :func:`_send` cancelled it for taking nothing; ``shrank``, the size the file
    was found to have when it ended before its declared size (-1: it did not)."""

    def __init__(self) -> None:
        self.at, self.chunk_at, self.done, self.stalled = time.monotonic(), 0.0, False, False
        self.shrank = -1


async def _requests(
    path: Path, header: upload_pb2.UploadHeader, start: int, chunk_size: int, progress: Progress | None,
    max_rate: int = 0, pulls: _Pulls | None = None,
) -> AsyncIterator[upload_pb2.UploadRequest]:
    """The header, then the file from ``start`` to its declared size (``header.size``) in chunks of
    ``chunk_size`` bytes; with ``max_rate`` (bytes/s, 0: no limit) at most that fast, in chunks of at
    most a quarter second's worth (a stream that sends nothing for 10 s loses the upload's lock).
    ``pulls`` is told when each chunk was taken, and the file's size when it ended early (it shrank
    while being sent: the stream ends there). Bytes written past the declared size while it is sent are
    not read (they were sent, and refused as "more bytes than the declared" size)."""
    pulls = pulls or _Pulls()
    yield upload_pb2.UploadRequest(header=header)
    if max_rate:
        chunk_size = max(4096, min(chunk_size, max_rate // 4))
    offset, began = start, time.monotonic()
    with path.open("rb") as f:
        f.seek(start)
        while offset < header.size:
            data = f.read(min(chunk_size, header.size - offset))
            if not data:
                pulls.shrank = os.fstat(f.fileno()).st_size
                return
            yield upload_pb2.UploadRequest(
                chunk=upload_pb2.UploadChunk(offset=offset, data=data, crc32c=google_crc32c.value(data))
            )
            pulls.at = pulls.chunk_at = time.monotonic()  # gRPC takes the next one once this one is written
            offset += len(data)
            if progress:
                progress(offset, header.size)
            if max_rate and (ahead := (offset - start) / max_rate - (time.monotonic() - began)) > 0:
                await asyncio.sleep(ahead)
                pulls.at = time.monotonic()  # our own pause, not the node's
    pulls.done = True


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
        # a node that refused connections (killed, restarting) is tried again at least every 2 s, not after
        # gRPC's growing backoff (1 s, 1.6 s, ... 120 s): a node back within seconds is found within seconds
        ("grpc.max_reconnect_backoff_ms", 2000),
    ])


def _broken_transport(exc: errors.PixelfoxError) -> bool:
    """grpc-python reports a write on a connection that died as INTERNAL "Internal error from Core"
    (no PixelFox error code): a transport failure to resume from, unlike a server's internal error."""
    return type(exc) is errors.PixelfoxError and "Internal error from Core" in str(exc)


#: a stream that takes no chunk for this long (seconds) while the file is not all sent is given up and the
#: upload asked for again: its node is frozen or cut off (HTTP/2 flow control holds the writes; gRPC's own
#: keepalive took 70 s to notice a SIGSTOPped node)
SEND_STALL_S = 15.0


async def _send(att: _Attempt, requests: AsyncIterator[upload_pb2.UploadRequest], pulls: _Pulls,
                timeout_s: float) -> upload_pb2.UploadReceipt:
    """``Upload`` of ``requests`` on ``att``'s node, cancelled (Unavailable, ``pulls.stalled`` set) when it
    takes no message for :data:`SEND_STALL_S` seconds before the last chunk; other errors mapped as
    :func:`~pixelfox.grpcx.client.map_rpc_errors` does."""
    call = att.stub.Upload(requests, timeout=timeout_s)

    async def watchdog() -> None:
        while not call.done():
            await asyncio.sleep(min(1.0, SEND_STALL_S / 4))
            if not pulls.done and time.monotonic() - pulls.at > SEND_STALL_S:
                pulls.stalled = True
                call.cancel()
                return

    dog = asyncio.ensure_future(watchdog())
    try:
        async with map_rpc_errors():
            receipt: upload_pb2.UploadReceipt = await call
        return receipt
    except asyncio.CancelledError:
        if not pulls.stalled:  # cancelled from outside (Ctrl-C): as it is
            raise
        raise errors.Unavailable(f"the upload node took nothing for {SEND_STALL_S:.0f} s") from None
    finally:
        dog.cancel()


#: a ticket this close to its end (seconds, by the client's clock) is renewed when the upload node refuses it
RENEW_BEFORE_END_S = 60


class _Attempt:
    """One upload's moving parts across retries: the node address, its channel and stub, and its ticket;
    ``renewed``, when given, is called with ``RenewUpload``'s answer each time :meth:`renew` got one."""

    def __init__(self, ticket: manager_pb2.CreateUploadResponse, dial: Callable[[str], str],
                 renewed: Callable[[manager_pb2.CreateUploadResponse], None] | None = None) -> None:
        self.ticket = ticket
        self.dial = dial
        self.renewed = renewed
        self.address = ticket.upload_address
        self.ch = _own_channel(dial(self.address))
        self.stub = upload_pb2_grpc.UploadServiceStub(self.ch)

    async def _to(self, address: str) -> None:
        """Talk to the upload node at ``address`` from now on (a new channel when it is another one)."""
        if address and address != self.address:
            await self.ch.close()
            self.address = address
            self.ch = _own_channel(self.dial(self.address))
            self.stub = upload_pb2_grpc.UploadServiceStub(self.ch)

    async def move(self, manager: manager_pb2_grpc.ManagerServiceStub, metadata: tuple[tuple[str, str], ...]) -> None:
        """Ask the manager for another healthy upload node for the same upload (same ticket)."""
        async with map_rpc_errors():
            moved = await manager.RelocateUpload(
                manager_pb2.RelocateUploadRequest(upload_id=self.ticket.upload_id, ticket=self.ticket.ticket,
                                                  exclude_address=self.address),
                metadata=metadata, timeout=30)
        await self._to(moved.upload_address)

    async def renew(self, manager: manager_pb2_grpc.ManagerServiceStub, metadata: tuple[tuple[str, str], ...],
                    *, elsewhere: bool = False) -> bool:
        """A fresh ticket for the same upload (``RenewUpload``, the owner's ``metadata``) when this one has
        ended or ends within :data:`RENEW_BEFORE_END_S` s, on the node the answer names (with ``elsewhere``,
        another than this one's when one is healthy: it stopped answering); False when it does
        not end yet (the node refused it for another reason) or the manager refuses (the upload ended,
        expired, is anonymous or someone else's). Raises Unavailable (the manager does not answer) and
        ResourceExhausted (no room in the quota or open uploads for an upload that had stopped counting)."""
        if epoch(self.ticket.expires_at) > time.time() + RENEW_BEFORE_END_S:
            return False
        answer = await _renew(manager, metadata, self.ticket.upload_id, self.address if elsewhere else "")
        if answer is None:
            return False
        self.ticket = answer
        await self._to(answer.upload_address)
        if self.renewed:
            self.renewed(answer)
        return True

    async def query(self, timeout_s: float = 10.0) -> upload_pb2.QueryUploadResponse:
        """The upload's committed state on its node (``QueryUpload``, ``timeout_s`` seconds at most)."""
        async with map_rpc_errors():
            reply: upload_pb2.QueryUploadResponse = await self.stub.QueryUpload(
                upload_pb2.QueryUploadRequest(ticket=self.ticket.ticket, upload_id=self.ticket.upload_id),
                timeout=timeout_s)
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
    req: manager_pb2.CreateUploadRequest, digest: str, watch: Watch | None = None
) -> manager_pb2.CreateUploadResponse:
    """``CreateUpload`` declaring the file's SHA-256 ``digest`` (``req.sha256``), so that the manager can
    answer at once with the caller's image of these bytes (``deduplicated``: nothing to send). Raises
    EmptyFile for an empty file. With ``watch``, a manager that says no upload node takes uploads
    (NoNodeAvailable: every one down, stopped or in maintenance) is asked again every second until
    ``watch`` gives up (:meth:`Watch.lost`: its ``no_node_s``), then that NoNodeAvailable is raised."""
    req.sha256 = digest
    while True:
        try:
            ticket = await _create(manager, md, req)
        except errors.NoNodeAvailable as exc:
            if watch is None:
                raise
            watch.cause = str(exc)
            watch.lost(exc.message)
            if watch.left_s() <= 0:
                raise
            await asyncio.sleep(min(1.0, watch.left_s()))
            continue
        if watch is not None:
            watch.answered()
        break
    if req.size == 0:
        raise errors.EmptyFile("empty file")
    return ticket


KEPT = (errors.Unavailable, errors.Timeout, errors.ResourceExhausted)
"""Errors an upload ends the run with but stays open on the server: its journal entry is kept."""


async def _committed(
    att: _Attempt, manager: manager_pb2_grpc.ManagerServiceStub, md: tuple[tuple[str, str], ...], watch: Watch,
    offset: int,
) -> upload_pb2.QueryUploadResponse:
    """The upload's committed state (``QueryUpload``), on its node or, when that one does not answer
    (gone: refused; stopped, its host down or cut off: timed out), another (:func:`_elsewhere`); asked
    again after a busy lock, until ``watch`` gives up (Unavailable, :meth:`Watch.message` with the bytes
    the manager says the server has, else ``offset``), and once more with a renewed ticket when the node
    says the ticket ended (:meth:`_Attempt.renew`). Other errors (the upload is unknown, expired, failed,
    cancelled) are raised."""
    while True:
        if watch.gave_up():
            known = await _server_offset(manager, md, att.ticket.upload_id, offset)
            raise errors.Unavailable(watch.message(known))
        await asyncio.sleep(min(watch.delay, max(0.0, watch.left_s())))
        watch.delay = min(watch.delay * 2, 2.0)
        try:
            q = await att.query(min(10.0, max(1.0, watch.left_s())))  # no longer than is left to wait for a node
        except (errors.Unavailable, errors.Timeout) as exc:
            watch.cause = str(exc)
            watch.node_failed(att.address)
            await _elsewhere(att, manager, md, watch)
            continue
        except errors.UploadBusy:
            watch.answered()
            continue
        except errors.InvalidTicket:
            if not await att.renew(manager, md):  # ended, cancelled, failed, not the owner's: as it was
                raise
            continue
        watch.answered()
        return q


async def _elsewhere(att: _Attempt, manager: manager_pb2_grpc.ManagerServiceStub, md: tuple[tuple[str, str], ...],
                     watch: Watch) -> None:
    """Move ``att`` off a node that does not answer: to the node the manager names for the upload
    (``RelocateUpload``), or, when the manager refuses the ticket because it ended, to the node of a
    renewed ticket (``RenewUpload``, the owner's ``md``). The manager or every node being out of reach
    leaves it where it is (the caller asks again); the manager saying no upload node is healthy, or naming
    one that did not answer, tells ``watch`` that none answers (:meth:`Watch.lost`). A refused renewal
    raises that InvalidTicket."""
    try:
        with contextlib.suppress(errors.Unavailable, errors.Timeout):
            try:
                await att.move(manager, md)
            except errors.NoNodeAvailable as exc:
                watch.cause = str(exc)
                watch.lost()  # mid-upload its nodes stopped answering: said so (the manager's words are older news)
                return
            watch.offered(att.address)
    except errors.InvalidTicket:  # the ticket ended on the way (a node gone after it): renewed, on a healthy node
        if not await att.renew(manager, md, elsewhere=True):
            raise


async def _stream(
    att: _Attempt, manager: manager_pb2_grpc.ManagerServiceStub, md: tuple[tuple[str, str], ...],
    header: upload_pb2.UploadHeader, path: Path, offset: int, watch: Watch, *, progress: Progress | None,
    timeout_s: float, max_rate: int,
) -> upload_pb2.UploadReceipt:
    """Send ``path`` from ``offset`` on; after a broken stream, go on from the committed offset."""
    chunk_size = att.ticket.chunk_size or 256 * 1024
    upload_id = header.upload_id
    while True:
        header.ticket = att.ticket.ticket  # renewed on the way, maybe
        pulls = _Pulls()
        try:
            try:
                return await _send(att, _requests(path, header, offset, chunk_size, progress, max_rate, pulls),
                                   pulls, timeout_s)
            except errors.PixelfoxError:
                if pulls.shrank >= 0:  # it resumed past the file's end, for a minute, and called it a stall
                    raise errors.FileChanged(f"{path} shrank from {header.size} to {pulls.shrank} bytes while it was "
                                      "being sent; send it again once it is written") from None
                raise
        except RETRYABLE as exc:
            watch.cause = str(exc)
            logger.info("upload %s interrupted at about %d bytes (%s); resuming", upload_id, offset, exc)
        except errors.ResourceExhausted as exc:
            if type(exc) is not errors.ResourceExhausted:  # quota, rate, full disk: not a busy node
                raise
            watch.cause = str(exc)
            logger.info("upload node busy (%s); retrying", exc)
            watch.delay = max(watch.delay, 0.5)
        except errors.InvalidTicket:
            if not await att.renew(manager, md):  # ended, cancelled, failed, not the owner's: as it was
                raise
            logger.info("upload %s: its ticket ended; renewed, resuming", upload_id)
        except errors.PixelfoxError as exc:
            if not _broken_transport(exc):
                raise
            watch.cause = "the connection broke"
            logger.info("upload %s: the stream broke (%s); resuming", upload_id, exc)
        if pulls.chunk_at:
            watch.sent(pulls.chunk_at)
        if pulls.stalled:  # its node took nothing for SEND_STALL_S: frozen or cut off, not worth asking first
            watch.node_failed(att.address)
            await _elsewhere(att, manager, md, watch)
        q = await _committed(att, manager, md, watch, offset)
        if q.complete:  # finished, but the receipt was lost
            return await _lost_receipt(manager, md, header)
        offset = q.offset
        watch.moved(offset)


async def _server_offset(manager: manager_pb2_grpc.ManagerServiceStub, md: tuple[tuple[str, str], ...],
                         upload_id: str, known: int) -> int:
    """The bytes of ``upload_id`` the server committed, as the manager says (``GetUpload``, the owner's
    ``md``), or ``known`` when it does not say (an anonymous upload, the manager out of reach)."""
    try:
        async with map_rpc_errors():
            p: manager_pb2.UploadProgress = await manager.GetUpload(
                manager_pb2.GetUploadRequest(upload_id=upload_id), metadata=md, timeout=5)
        return max(known, p.offset)
    except errors.PixelfoxError as exc:
        logger.debug("upload %s: its committed bytes are unknown (%s)", upload_id, exc)
        return known


async def _renew(
    manager: manager_pb2_grpc.ManagerServiceStub, md: tuple[tuple[str, str], ...], upload_id: str,
    exclude_address: str = "",
) -> manager_pb2.CreateUploadResponse | None:
    """A fresh ticket for an earlier run's upload whose ticket ended (``RenewUpload``, with the owner's
    credential ``md``; on another node than ``exclude_address`` when one is healthy), or ``None`` when the
    manager refuses it (the upload ended or expired, is anonymous or someone else's). Unavailable and
    ResourceExhausted (no room for it in the quota or the open uploads now) are raised: the upload is still
    alive, to resume later."""
    try:
        async with map_rpc_errors():
            reply: manager_pb2.CreateUploadResponse = await manager.RenewUpload(
                manager_pb2.RenewUploadRequest(upload_id=upload_id, exclude_address=exclude_address), metadata=md,
                timeout=30)
            return reply
    except (errors.Unavailable, errors.ResourceExhausted):
        raise
    except errors.PixelfoxError as exc:
        logger.info("upload %s of an earlier run cannot get a new ticket (%s)", upload_id, exc)
        return None


async def _earlier(
    manager: manager_pb2_grpc.ManagerServiceStub, md: tuple[tuple[str, str], ...], entry: Entry,
    dial: Callable[[str], str], watch: Watch, renewed: Callable[[manager_pb2.CreateUploadResponse], None],
) -> tuple[_Attempt, upload_pb2.QueryUploadResponse] | None:
    """The upload of an earlier run (``entry``) and its committed state, or ``None`` when the server
    no longer knows it (expired, cancelled, failed, never there); Unavailable when ``watch`` gives up
    (the cluster does not answer, no upload node answers), ResourceExhausted when its renewal finds no
    room (the entry still holds either way). A ticket that ended (by the entry's ``expires_at``, or as
    the upload node says) is renewed (:meth:`_Attempt.renew`), and ``renewed`` is
    called with the new answer."""
    att = _Attempt(manager_pb2.CreateUploadResponse(
        upload_id=entry.upload_id, upload_address=entry.upload_address, ticket=entry.ticket,
        expires_at=entry.expires_at, chunk_size=entry.chunk_size, state_ttl_s=entry.state_ttl_s), dial, renewed)
    try:
        if entry.ticket_expired() and not await att.renew(manager, md):
            raise errors.InvalidTicket("upload ticket expired and not renewed")
        return att, await _committed(att, manager, md, watch, 0)  # renews it too if the node says it ended
    except errors.PixelfoxError as exc:
        await att.ch.close()
        if isinstance(exc, (errors.Unavailable, errors.ResourceExhausted)):  # alive: for a later run
            raise
        logger.info("upload %s of an earlier run cannot go on (%s): starting a new one", entry.upload_id, exc)
        return None
    except BaseException:
        await att.ch.close()
        raise


async def _open(
    manager: manager_pb2_grpc.ManagerServiceStub, md: tuple[tuple[str, str], ...], path: Path, digest: str,
    req: manager_pb2.CreateUploadRequest, dial: Callable[[str], str], watch: Callable[[], Watch],
    resume: Resume | None, key: FileKey | None, wait_for_node: bool = False,
) -> tuple[_Attempt, upload_pb2.QueryUploadResponse] | manager_pb2.CreateUploadResponse:
    """The upload to send ``path`` to and its committed state: the journal's upload of an earlier run
    when the server still has it, the file is the same (``digest``) and no other live run sends it, else a new one from
    ``CreateUpload`` (recorded in the journal under ``key``), or ``CreateUpload``'s deduplicated answer. A
    ticket renewed on the way (:meth:`_Attempt.renew`) replaces the entry's. The uploads of the file's
    entries made for other bytes (all of its entries with ``resume.lookup`` False: ``--no-resume``) are
    cancelled first (:func:`~pixelfox.client.resume.cancel_stale`). ``watch()`` makes the :class:`Watch` that
    gives up on the earlier run's upload when the cluster does not answer; with ``wait_for_node`` it also
    waits out a ``CreateUpload`` refused for want of an upload node (:func:`_create_hashed`)."""
    journal = resume.journal if resume and key else None

    def record(answer: manager_pb2.CreateUploadResponse) -> None:  # the entry holds the upload's latest ticket
        if journal and key:
            journal.put(key, Entry.of(answer, digest))

    if resume and key:
        entry, stale = resume.journal.claim(key, resume=resume.lookup)
        if entry and entry.sha256 != digest:  # other bytes, same size and mtime
            resume.journal.drop(key, entry.upload_id)
            stale, entry = [*stale, entry], None
        for old in stale:  # the file changed since (it can never complete), or --no-resume replaces it:
            # that upload's slot and quota go now
            await cancel_stale(manager, md, path, old, resume)
        if entry:
            found = await _earlier(manager, md, entry, dial, watch(), record)
            if found:
                if resume.resumed:
                    resume.resumed(path, entry.upload_id, found[1].offset)
                return found
            logger.info("upload %s of an earlier run is not resumed (the upload ended)", entry.upload_id)
            resume.journal.drop(key, entry.upload_id)
    ticket = await _create_hashed(manager, md, req, digest, watch() if wait_for_node else None)
    if ticket.deduplicated:
        return ticket
    record(ticket)
    return _Attempt(ticket, dial, record), upload_pb2.QueryUploadResponse(offset=0, size=req.size)


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
    no_node_s: float = NO_NODE_S,
    no_node: NoNode | None = None,
    dial: Callable[[str], str] | None = None,
    expire_after_s: int = 0,
    title: str = "",
    visibility: str = "",
    resume: Resume | None = None,
    max_rate: int = 0,
    wait_for_node: bool = False,
) -> upload_pb2.UploadReceipt:
    """Upload ``path``; the receipt's ``image`` is the new image (status ``processing``, or ``failed``).

    ``metadata`` authenticates to the manager (API key, or the web node's cluster token and
    acting user). The upload resumes by itself: after a broken stream, a dead node
    (``UNAVAILABLE``), a busy lock or an offset mismatch it asks the node for the committed
    offset (``QueryUpload``) and sends the rest from there (a node at its ``max_concurrent`` is
    retried the same way); when the node does not answer it
    asks the manager for another node for the same upload (``RelocateUpload``), at once when its
    node took no chunk for :data:`SEND_STALL_S` seconds (frozen, cut off). It gives up (Unavailable,
    with the bytes the server committed; the upload stays open, to resume) when no byte went through for
    ``max_stall_s`` seconds, or sooner, ``no_node_s`` seconds after no upload node answered (the manager
    says none is healthy, or names only nodes that did not answer; :data:`NO_NODE_S`): ``no_node(True, why)``
    is called then, and ``no_node(False, "")`` when a node answers again within that time (:data:`NoNode`).
    ``dial`` maps an upload node address to the address to connect to (a proxy; tests).
    ``expire_after_s`` > 0 deletes the
    image that long after the upload completes; ``title`` (at most 255 characters) titles a new
    image, while a re-upload of bytes the user already has returns that image as it is, with the
    receipt's ``deduplicated`` true (an upload with ``expire_after_s`` is never deduplicated).
    ``visibility`` ``private`` makes the new image private from the receipt on ("" or ``public``: public; anything
    else is BadRequest from the manager); such an upload is only deduplicated with a private image. The file is
    hashed first and its SHA-256 declared to ``CreateUpload``: when the manager answers with the caller's
    image of these bytes, no byte is sent and the receipt has no ``upload_id`` (no upload was made).
    With ``resume`` an upload a run left unfinished goes on in the next run (:class:`Resume`): the
    journal's entry of the same file (path, size, mtime, SHA-256), credential and site is asked for its
    committed offset instead of ``CreateUpload`` (a private upload's entries are apart from a public one's: one
    never resumes the other with the wrong visibility; its ticket renewed first with ``RenewUpload`` when it
    ended: the upload lives ``upload_ttl_s`` after its last chunk); it is forgotten once the upload completes or the
    server refuses or ended it (an upload the server no longer knows starts afresh). ``max_rate`` > 0
    sends at most that many bytes a second. ``wait_for_node`` (``pixelfox put``; a web request answers 503 at
    once instead) treats the manager saying no upload node takes uploads before the upload starts as a node
    that does not answer: ``CreateUpload`` is asked again for up to ``no_node_s`` seconds, ``no_node``
    told as above, before NoNodeAvailable is raised. Raises
    :class:`~pixelfox.errors.PixelfoxError` subclasses: ``InvalidImage`` family for rejected
    bytes, ``Unauthenticated``, ``NoNodeAvailable``, ``Unavailable``...
    """
    size = path.stat().st_size
    name = filename or path.name
    md = tuple(metadata)
    # a private upload's journal entries are keyed apart: resuming a public one would end up public
    keyed = md if asked_visibility(visibility) == "public" else (*md, ("visibility", "private"))
    key = resume.key(path, keyed) if resume else None
    # the hash runs in a thread (hashlib releases the GIL), never on the event loop, which it would stall for
    # every other task of the process (the web node's; 17-31 ms for 20 MiB here)
    digest = await asyncio.to_thread(sha256_file, path)
    watch = functools.partial(Watch, size, max_stall_s, no_node_s, no_node)
    opened = await _open(manager, md, path, digest, manager_pb2.CreateUploadRequest(
        filename=name, size=size, content_type=content_type, expire_after_s=expire_after_s, title=title,
        visibility=visibility),
        dial or (lambda a: a), watch, resume, key, wait_for_node)
    if isinstance(opened, manager_pb2.CreateUploadResponse):  # the caller's image of these bytes: nothing is sent
        return _known(opened, size, digest, progress)
    att, q = opened
    header = upload_pb2.UploadHeader(
        ticket=att.ticket.ticket, upload_id=att.ticket.upload_id, size=size, sha256=digest, filename=name)
    try:
        if q.complete:  # an earlier run sent it all, but was gone before the receipt came
            receipt = await _lost_receipt(manager, md, header)
        else:
            if progress and q.offset:
                progress(q.offset, size)
            receipt = await _stream(att, manager, md, header, path, q.offset, watch(),
                                    progress=progress, timeout_s=timeout_s, max_rate=max_rate)
    except errors.PixelfoxError as exc:
        if resume and key and not isinstance(exc, KEPT):  # refused or ended by the server: nothing to resume
            resume.journal.drop(key, header.upload_id)
        if isinstance(exc, errors.FileChanged):  # it can never complete: its slot, quota and staged bytes go now
            try:
                await abandon_upload(manager, md, header.upload_id, header.ticket)
            except errors.PixelfoxError as stuck:
                logger.info("upload %s could not be cancelled (%s); it ends when its state expires",
                            header.upload_id, stuck)
        raise
    finally:
        await att.ch.close()
    if resume and key:
        resume.journal.drop(key, header.upload_id)
    return receipt


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
    (which also knows whether it was deduplicated, and an anonymous upload's deletion link)."""
    async with map_rpc_errors():
        p: manager_pb2.UploadProgress = await manager.GetUpload(
            manager_pb2.GetUploadRequest(upload_id=header.upload_id), metadata=md, timeout=30)
    return upload_pb2.UploadReceipt(upload_id=header.upload_id, size=header.size, sha256=p.image.sha256,
                                    image=p.image, deduplicated=p.deduplicated, deletion_url=p.deletion_url)


def guess_size(path: Path) -> int:
    """File size in bytes (``os.stat``); 0 for a missing file."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
