"""Resuming ``pixelfox put`` across runs: which journal, and what becomes of the uploads of a file that
changed since (cancelled, as ``pixelfox uploads cancel`` does)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pixelfox import errors
from pixelfox.client.journal import Entry, FileKey, Journal, fingerprint
from pixelfox.grpcx.client import map_rpc_errors
from pixelfox.v1 import manager_pb2, manager_pb2_grpc

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resume:
    """Resuming across runs (``pixelfox put``), in the :class:`~pixelfox.client.journal.Journal`.

    ``journal`` records each upload ``CreateUpload`` opened for a file until it completes or the
    server ends it; ``site`` is the manager address the entries belong to; ``resumed``, when given,
    is called as ``resumed(path, upload_id, committed_bytes)`` when an upload of an earlier run goes on;
    ``cancelled``, as ``cancelled(path, upload_id, problem)`` for each upload of an earlier run made for
    other bytes of the file, cancelled (``problem`` "") or not (why: a warning, the new upload goes on).
    ``lookup=False`` starts afresh (``pixelfox put --no-resume``): the file's uploads of earlier runs are
    not resumed but cancelled (``cancelled`` is told), and the new one replaces the file's entry.
    """

    journal: Journal
    site: str
    resumed: Callable[[Path, str, int], None] | None = None
    lookup: bool = True
    cancelled: Callable[[Path, str, str], None] | None = None

    def key(self, path: Path, metadata: Sequence[tuple[str, str]]) -> FileKey:
        """``path``'s journal key for the caller of ``metadata`` (OSError when it cannot be read)."""
        return FileKey.of(path, self.site, fingerprint(metadata))


async def abandon_upload(manager: manager_pb2_grpc.ManagerServiceStub, md: tuple[tuple[str, str], ...],
                         upload_id: str, ticket: str) -> bool:
    """Cancel upload ``upload_id`` (``AbandonUpload``: as its owner with ``md``, or with its ``ticket`` when
    ``md`` is empty, an anonymous upload); waits up to 10 s. True: cancelled now, its open-upload slot,
    declared size of the quota and staged bytes freed; False: it had already ended, expired or gone.
    Raises ``PixelfoxError`` when the manager cannot say (``Unavailable``, ``NotAnswering``...)."""
    try:
        async with map_rpc_errors():
            reply = await manager.AbandonUpload(
                manager_pb2.AbandonUploadRequest(upload_id=upload_id, ticket="" if md else ticket),
                metadata=md, timeout=10)
    except (errors.NotFound, errors.InvalidTicket):  # ended, expired, or gone: nothing holds a slot
        return False
    return bool(reply.abandoned)


async def cancel_stale(manager: manager_pb2_grpc.ManagerServiceStub, md: tuple[tuple[str, str], ...], path: Path,
                       entry: Entry, resume: Resume) -> None:
    """Cancel ``entry``'s upload (``AbandonUpload``: as its owner with ``md``, or with its ticket when
    anonymous), which a new upload of ``path`` replaces: its entry is for other bytes of ``path`` than it
    now holds (it could never complete), or ``pixelfox put --no-resume`` sends the file afresh. Left
    open, it held an open-upload slot, its declared size of the quota and its staged bytes until it
    expired. ``resume.cancelled`` is told; an upload already ended says nothing, and one that cannot be
    cancelled (the manager does not answer) is reported, never raised."""
    problem = ""
    try:
        if not await abandon_upload(manager, md, entry.upload_id, entry.ticket):
            return
    except errors.PixelfoxError as exc:
        problem = str(exc)
    logger.info("upload %s of %s, replaced by a new one: %s", entry.upload_id, path, problem or "cancelled")
    if resume.cancelled:
        resume.cancelled(path, entry.upload_id, problem)
