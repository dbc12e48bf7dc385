"""Upload tickets and completion: DESIGN.md main flow steps 1 and 3."""

from __future__ import annotations

import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from ulid import ULID

from nodes.manager import expiry
from nodes.manager.images import ImageViews, Nodes, iso, new_slug
from nodes.manager.registry import NodeRecord, Registry
from nodes.manager.upload_limits import UploadLimits
from pixelfox import deletion, errors, failpoints, readmodel, tickets, uploadstate
from pixelfox.background import Background
from pixelfox.client.images import original_lost
from pixelfox.config import LimitsSettings
from pixelfox.db.engine import begin_write
from pixelfox.db.models import Image, ObjectLocation, Upload, User
from pixelfox.db.outbox import OutboxEntry
from pixelfox.idlenodes import STATUS_NAMES, none_takes, why_idle
from pixelfox.queue import JobQueue
from pixelfox.queue.streams import cpu_estimate_s
from pixelfox.storage.fence import WriteFence, fence_sha, upload_token
from pixelfox.storage.keys import declared_sha256, is_private_key, private_key, public_key
from pixelfox.text import checked_title, printable, safe_filename
from pixelfox.uploadstate import MAX_EXPIRE_AFTER_S, UploadStates
from pixelfox.v1 import common_pb2, manager_pb2
from pixelfox.visibility import ANONYMOUS_PRIVATE, asked_visibility

logger = logging.getLogger(__name__)

#: the most open uploads :meth:`Uploads.list_open` answers when ``user_open_uploads`` is 0 (no limit)
LISTED_UPLOADS_CAP = 100


@dataclass(frozen=True)
class Completion:
    """What an upload node reports once the original is stored."""

    upload_id: str
    ticket: str
    sha256: str
    size: int
    format: str
    mime: str
    width: int  # stored px
    height: int
    frames: int
    orientation: int
    original_key: str
    storage_node_ids: list[str]
    upload_node_id: str


def spread(nodes: list[NodeRecord]) -> NodeRecord:
    """A healthy upload node, chosen at random weighted by headroom (free upload slots).

    Loads arrive with heartbeats (every second); picking the single least-loaded node would
    send a whole burst of uploads between two heartbeats to one node, so the choice is
    weighted by ``capacity - in_use`` instead (a full node keeps a small weight: it answers
    "busy" and the client retries). Raises NoNodeAvailable when ``nodes`` is empty.
    """
    if not nodes:
        raise errors.NoNodeAvailable("no healthy upload node")
    weights = [max(1, r.capacity - r.in_use) for r in nodes]
    return random.choices(nodes, weights=weights)[0]


def limited(user: User | None) -> str:
    """The id the per-user upload limits apply to, or ``""``: anonymous uploads and admins are exempt."""
    return user.id if user and user.role != "admin" else ""


class Uploads:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: Registry,
        queue: JobQueue,
        views: ImageViews,
        limits: LimitsSettings,
        ticket_key: bytes,
        recipe_version: int,
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.queue = queue
        self.views = views
        self.limits = limits
        self.ticket_key = ticket_key
        self.recipe_version = recipe_version
        self.states = UploadStates(registry.redis, ttl_s=limits.upload_ttl_s)
        self.gate = UploadLimits(registry.redis, sessions, limits)
        #: ``(keys) -> (deleted, pending)``: delete the replicas of object keys no image names
        #: (:meth:`nodes.manager.objects.Objects.delete_unreferenced`); the original of an upload
        #: cancelled after it was stored goes this way
        self.on_orphaned: Callable[[list[str]], Awaitable[tuple[int, int]]] | None = None
        #: ``(session, key, new key) -> node ids``: copy an object under another key on the storage nodes that hold
        #: it, recording the new locations in the session (:meth:`nodes.manager.objects.Objects.copy`): how a lost
        #: private image gets its original back from a re-upload (its key is ``p/<salt>/`` + the upload's)
        self.on_copy: Callable[[AsyncSession, str, str], Awaitable[list[str]]] | None = None
        #: the upload node fences its original's bytes until the rows are committed here; this manager then
        #: removes its token (:func:`~pixelfox.storage.fence.upload_token`) and calls ``on_written`` with
        #: the hash (:meth:`nodes.manager.objects.Objects.written`: deletes that waited for it)
        self.fence = WriteFence(registry.redis)
        self.on_written: Callable[[str], Coroutine[Any, Any, None]] | None = None
        #: the cluster secret deletion tokens are made with (:mod:`pixelfox.deletion`); set by the service
        self.deletion_secret = ""
        self._background = Background(logger)

    def _usable_until(self, expires_at: int) -> int:
        """The last unix second a ticket whose ``exp`` is ``expires_at`` is accepted
        (:func:`pixelfox.tickets.usable_until`, with this cluster's ``ticket_leeway_s``)."""
        return tickets.usable_until(expires_at, self.limits.ticket_leeway_s)

    async def create(
        self, user: User | None, filename: str, size: int, content_type: str, expire_after_s: int = 0,
        title: str = "", sha256: str = "", visibility: str = "",
    ) -> manager_pb2.CreateUploadResponse:
        """Check the declared size (bytes), expiration (seconds), title and visibility, pick an upload node and
        sign a ticket for one upload. Raises EmptyFile, PayloadTooLarge, BadRequest, RateLimited,
        QuotaExceeded, NoNodeAvailable.

        ``visibility`` (:func:`~pixelfox.visibility.asked_visibility`: "" or ``public``, ``private``; else
        BadRequest naming it; BadRequest for a private anonymous upload, which nobody could see) is kept in the
        upload's row and state: :meth:`complete` makes a private upload's new image private before its first
        commit (the row's word counts: a completion after the Redis state is gone still makes it private; so do
        ``title`` and ``expire_after_s``)).

        ``sha256`` (optional, 64 hex digits in either case, kept in lower case; else BadRequest): the file's
        hash as the client declares it. When ``user`` already has a lasting image of ``size`` bytes with that
        hash (the rules of :meth:`complete`'s dedup: :meth:`_lasting_copy`; none for anonymous uploads or one
        with an expiration), the answer is that image with ``deduplicated`` and no upload is made (no ticket, no
        open-upload slot, rate token or quota). The lookup is only among the caller's own images. An upload
        that goes ahead must bring bytes of that hash: it is kept in the upload's state, and its upload node
        refuses other bytes (ChecksumMismatch, nothing stored), over tus as over gRPC. A client declaring
        the hash of one of its images for other bytes just gets that image back: it sends nothing, so
        nothing of its is stored. A private upload's dedup only answers with a private image (:meth:`_lasting_copy`)."""
        title = checked_title(title)
        visibility = asked_visibility(visibility)
        if visibility == "private" and user is None:
            raise errors.BadRequest(ANONYMOUS_PRIVATE)
        if expire_after_s < 0 or expire_after_s > MAX_EXPIRE_AFTER_S:  # before anything is recorded
            raise errors.BadRequest(f"expiration must be between 0 and {MAX_EXPIRE_AFTER_S} seconds "
                                    f"({MAX_EXPIRE_AFTER_S // (365 * 86400)} years)")
        sha256 = declared_sha256(sha256)  # lower case, as images store it
        if size <= 0:
            raise errors.EmptyFile("empty file")
        if size > self.limits.max_upload_bytes:
            raise errors.PayloadTooLarge.declared(size, self.limits.max_upload_bytes)
        if sha256 and user is not None and expire_after_s == 0:  # dedup before any byte is sent
            found = await self._declared_copy(user.id, sha256, size, private=visibility == "private")
            if found is not None:  # else not the declared file: no answer from it
                return manager_pb2.CreateUploadResponse(deduplicated=True, image=found)
        recs = await self.registry.all()  # one registry read
        healthy = [r for r in recs if self.registry.healthy(r)]
        uploaders = [r for r in healthy if r.role == common_pb2.NODE_ROLE_UPLOAD]
        if not uploaders:
            raise self.no_upload_node(recs)
        node = spread(uploaders)
        if not any(r.role == common_pb2.NODE_ROLE_STORAGE for r in healthy):  # the bytes could not be kept
            raise errors.NoNodeAvailable("no storage node takes new files (every one is down, not ready or in "
                                         "maintenance); try again later")
        upload_id = str(ULID())
        issued = int(time.time())
        expires_at = issued + self.limits.ticket_ttl_s  # the ticket's exp
        expires = datetime.fromtimestamp(expires_at, UTC)
        async with self.gate.quota_guard(limited(user)):  # the next upload's quota check sees this row
            await self.gate.admit(limited(user), upload_id, size, self._usable_until(expires_at))
            async with self.sessions() as s:
                s.add(Upload(id=upload_id, user_id=user.id if user else None,
                             filename=safe_filename(filename, default=""), size=size,
                             content_type=printable(content_type)[:100], upload_node_id=node.node_id,
                             expires_at=expires, title=title, visibility=visibility,
                             expire_after_s=expire_after_s))
                await s.commit()
        await self.states.create(upload_id, size, user.id if user else "", expire_after_s, title, sha256, visibility)
        token = tickets.sign(self.ticket_key, upload_id, user.id if user else "", size, content_type,
                             self.limits.ticket_ttl_s, now=issued)
        return self._ticket_answer(upload_id, node, token, expires_at, size)

    async def _declared_copy(self, user_id: str, sha256: str, size: int, *, private: bool = False
                             ) -> common_pb2.Image | None:
        """:meth:`create`'s dedup: ``user_id``'s lasting image of these bytes (hash ``sha256``, ``size`` bytes)
        as its owner sees it, or None; with ``private`` (a private upload) only a private one. Its Redis reads
        (the copies' expirations, the registry for the URLs) come first, with no lock held; the write lock is
        then taken only to confirm the copy found
        (:meth:`_lasting_copy`, which waits for a delete of it under way) and read the answer, before the
        commit: a delete that follows cannot turn it into a 404. A copy whose original is lost
        (:func:`~pixelfox.client.images.original_lost`) is no answer: the upload goes ahead, and its completion
        restores that image from the bytes it brings (:meth:`complete`)."""
        marks = await self._lasting_marks(user_id, sha256)
        if not any(marks.values()):  # no lasting copy: no lock either (a copy made since then is the completion's)
            return None
        nodes = await self.views.nodes()
        async with self.sessions() as s:
            await begin_write(s)  # waits for a delete of the image under way (Library.delete)
            dup = await self._lasting_copy(s, user_id, sha256, marks, late=False, private=private)
            found = await self.views.to_proto(s, dup, nodes) if dup is not None and dup.bytes == size else None
            if found is not None and dup is not None and self._can_restore(dup.original_key) and original_lost(found):
                logger.info("CreateUpload by %s: its image %s of the same bytes lost its files; the upload goes "
                            "ahead to restore them", user_id, found.slug)
                found = None
            if found is not None:  # logged under the lock: before the "deleting" line of a delete of it
                logger.info("CreateUpload by %s answered with its image %s of the same bytes (dedup)",
                            user_id, found.slug)
            await s.commit()
        return found

    async def check(self, user: User | None, size: int, body_bytes: int = 0) -> None:
        """Raise what :meth:`create` would for ``user``'s per-user limits (RateLimited,
        TooManyOpenUploads, QuotaExceeded) on an upload of at least ``size`` bytes (0 or less: 1);
        counts nothing (see :meth:`UploadLimits.check`). ``body_bytes`` > 0: ``size`` is an estimate
        made from a request body of that many bytes, which QuotaExceeded names instead of a file
        size. Admins and anonymous uploads pass."""
        await self.gate.check(limited(user), max(1, size), max(0, body_bytes))

    async def complete(self, c: Completion) -> manager_pb2.CompleteUploadResponse:
        """Record the stored original as an image (status processing) and enqueue its job.

        The answer's ``deduplicated`` is true when the upload became the user's existing image of
        these bytes (see :meth:`_lasting_copy`; a private upload's only when that image is private): that image
        unchanged, this upload's title dropped. A private upload's new image is made private in the same
        transaction (:meth:`_make_private`: its original copied to its own ``p/<salt>/`` key, the upload's public
        copy deleted after the commit unless another image names it); when that copy cannot be made the upload
        fails (:meth:`_private_failed`), never ending up public. When
        that image's original was lost (:func:`~pixelfox.client.images.original_lost`: its only holder was
        forgotten, or its copies were found missing by ``pixelfox scrub --fix``), the copies just stored become
        its original again, in the same transaction as everything
        else (the upload node's write fence covers them until the commit, as for any upload): recorded as
        they are for a public image (keys are content-addressed: the same key), copied to its own
        ``p/<salt>/`` key for a private one (:attr:`on_copy`). The image goes back to ``processing`` with its
        outbox row and a new job, which makes its variants again under their old keys: the answer is that
        image (same slug), processing. When the image's original has another key than this upload's (a
        private image), the upload's public copy is deleted after the commit (unless another image names it).

        The ticket may have expired meanwhile: only an upload node calls this, once every byte came
        through a stream or PATCH it admitted with a live ticket (a 100 MiB upload at 1 Mbit/s
        takes 14 of a ticket's 15 minutes; one that ran past them was refused here, its original
        already stored). Resuming after the ticket's end is still refused, by the upload node.
        """
        ticket = tickets.verify(self.ticket_key, c.ticket, allow_expired=True,
                                leeway_s=self.limits.ticket_leeway_s)
        if ticket.upload_id != c.upload_id:
            raise errors.InvalidTicket("ticket belongs to another upload")
        if ticket.size != c.size:
            raise errors.InvalidTicket(f"ticket is for {ticket.size} bytes, upload has {c.size}")
        # the Redis reads first, no lock held: the upload's state, its user's copies of these bytes, the registry
        st = await self.states.get(c.upload_id)
        expiring = st is not None and st.expire_after_s > 0
        private = st is not None and st.visibility == "private"
        marks = {} if expiring else await self._lasting_marks(ticket.user_id, c.sha256)
        nodes = await self.views.nodes()
        async with self.sessions() as s:
            await begin_write(s)
            upload = await s.get(Upload, c.upload_id, with_for_update=True)
            if upload is None:
                raise errors.InvalidTicket("unknown upload")
            # what the upload asked for, from its row too: its Redis state (read above, to look up dedup marks
            # without the lock) may be gone by now, and a private upload must never end up public (a row from
            # before migration 0010 says public: its state has the word then)
            private = private or upload.visibility == "private"
            expire_after_s = upload.expire_after_s or (st.expire_after_s if st is not None else 0)
            expiring = expire_after_s > 0
            # an upload asking for an expiration always makes its own image: merged, it would either
            # make the lasting copy expire or keep the bytes past the time asked for; the match is looked up
            # before this upload's copies are recorded, which may give a lost image its original back
            dup = (None if expiring or upload.status != "open"
                   else await self._lasting_copy(s, upload.user_id, c.sha256, marks, late=True, private=private))
            restore = dup is not None and await self._restorable(s, dup, c, nodes)
            # every branch records where this upload's original was just stored, before its commit: a
            # copy no row names is never deleted (keys are content-addressed: the copies of an earlier
            # upload of the same bytes are recorded, but this one may have used other nodes)
            await self._record_copies(s, c)
            if upload.status == "abandoned":  # cancelled while its last bytes were on the way
                # its original is already stored (and now recorded): deleted below unless an image has
                # the same bytes (keys are content-addressed; not an upload of its own only)
                await s.commit()
                await self._written(c)
                await self._discard(c.upload_id, c.original_key, "was cancelled after its original was stored")
                raise errors.InvalidTicket("the upload was cancelled; start a new upload")
            if upload.status != "open":
                done = await self._existing(s, upload.id, upload.user_id, c.sha256, marks, private)
                answer = await self._answer(s, done, done.upload_id != upload.id, nodes) if done is not None else None
                kept = done.original_key if done is not None else c.original_key
                await s.commit()
                await self._written(c)
                if answer is not None:  # an upload node retrying after a crash (it stored the original again)
                    await self.states.finish(c.upload_id, "complete", answer.image.slug)
                    await self._drop_upload_copy(c, kept, answer.image.slug)
                    return answer
                # no image of its: deleted unless another names them
                await self._discard(c.upload_id, c.original_key, f"was already {upload.status} when its "
                                    "completion came (ticket already used)")
                raise errors.InvalidTicket("ticket was already used")
            upload.status = "complete"
            if dup is not None:  # dedup: this user already has these bytes, and keeps them
                slug = dup.slug
                upload.duplicate_of = dup.id  # GetUpload's answer once the Redis state is gone
                if restore:  # its files were lost: the copies just recorded (or copied) are its original again
                    restore = await self._restore_original(s, dup, c)
                if restore:
                    await self._reprocess(s, dup)
                kept = dup.original_key  # a private image's: the upload's copy is not it
                answer = await self._answer(s, dup, True, nodes)  # before the commit: a later delete is no 404
                await s.commit()
                await self._written(c)
                await self.states.finish(c.upload_id, "complete", slug)  # also frees the open-upload slot
                if restore:
                    await self._restored(answer.image, c)
                await self._drop_upload_copy(c, kept, slug)
                logger.info("upload %s duplicates image %s of the same user%s", c.upload_id, slug,
                            ": its lost files are restored from it, the image is processed again" if restore else "")
                return answer
            expires_at = (datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=round(expire_after_s))
                          if expiring else None)
            img = await self._new_image(s, upload, c, upload.title or (st.title if st is not None else ""),
                                        expires_at, private=private)
            answer = await self._answer(s, img, False, nodes)  # before the commit: a later delete is no 404
            await s.commit()
            image_id, slug, kept = img.id, img.slug, img.original_key
        await self._written(c)
        await self.states.finish(c.upload_id, "complete", slug)  # also frees the open-upload slot
        await self._drop_upload_copy(c, kept, slug)  # a private upload's: its image has a copy of its own
        if expires_at is not None:  # the sweeper deletes it then (the row says when: answers and pages show it)
            await expiry.schedule_at(self.registry.redis, slug, expires_at.timestamp())
        failpoints.hit("after-image-commit")
        await self._enqueue(image_id, c)
        failpoints.hit("after-enqueue")
        await failpoints.pause("before-complete-answer")
        logger.info("upload %s complete: image %s queued", c.upload_id, slug)
        return answer

    async def _new_image(self, s: AsyncSession, upload: Upload, c: Completion, title: str,
                         expires_at: datetime | None = None, *, private: bool = False) -> Image:
        """Add the image row of completed ``upload`` (status processing, upright size; deleted by the expiry
        sweeper at ``expires_at`` when given; with ``private`` made private: :meth:`_make_private`) and its outbox
        row to ``s`` (same transaction: no image without its job, issue 7); flushed, owner and variants loaded.
        A private image whose copy failed rolls ``s`` back and raises :meth:`_private_failed`'s error."""
        swap = c.orientation in (5, 6, 7, 8)
        img = Image(
            id=str(ULID()), slug=new_slug(), upload_id=upload.id, user_id=upload.user_id,
            filename=upload.filename, title=title, sha256=c.sha256, bytes=c.size,
            format=c.format, mime=c.mime,
            width=c.height if swap else c.width, height=c.width if swap else c.height,
            frames=max(1, c.frames), orientation=c.orientation or 1, status="processing",
            original_key=c.original_key, recipe_version=self.recipe_version, expires_at=expires_at,
        )
        s.add(img)
        await s.flush()
        s.add(OutboxEntry(image_id=img.id))
        if private:
            try:
                await self._make_private(s, img, c)
            except errors.PixelfoxError as exc:
                await s.rollback()  # no image, no location row: the upload ends failed
                raise await self._private_failed(c, exc) from exc
        await s.refresh(img, ["owner", "variants"])  # the answer reads them; no lazy load in async
        return img

    async def _make_private(self, s: AsyncSession, img: Image, c: Completion) -> None:
        """Make new image ``img`` (added to ``s``, not committed) of a private upload private: a salt of its own
        (:func:`secrets.token_hex`, 16 bytes), ``c``'s original copied to ``p/<salt>/<key>``
        (:func:`~pixelfox.storage.keys.private_key`) by :attr:`on_copy` (its locations recorded in ``s``, as
        :meth:`_restore_original` does for a lost private image), and named as the image's original. The copy
        is made inside the upload node's write fence of these bytes, which covers it until the commit.

        Its processing job then writes the variants under that prefix too (the dispatcher sends the salt:
        ``Job.private_salt``), so none is ever stored under a public key (a processing node older than that
        field writes public keys, which :meth:`nodes.manager.library.Library.after_processing` moves while the
        image stays ``processing``). Raises NoNodeAvailable (no healthy storage node holds the original or
        takes the copy) or Unavailable (this manager cannot copy objects)."""
        if self.on_copy is None:
            raise errors.Unavailable("this manager cannot copy objects")
        salt = secrets.token_hex(16)
        key = private_key(c.original_key, salt)
        await self.on_copy(s, c.original_key, key)
        img.original_key, img.visibility, img.private_salt = key, "private", salt

    async def _private_failed(self, c: Completion, exc: errors.PixelfoxError) -> errors.NoNodeAvailable:
        """After the private copy of ``c``'s original failed with ``exc`` (:meth:`_make_private`; the transaction
        rolled back): the upload ends ``failed`` (row and state: its ticket is refused with the reason, its upload
        node drops the staged bytes) and its stored original is deleted unless an image names it. Returns the
        error to raise: NoNodeAvailable, whose message says nothing was kept (a private upload never ends up
        public instead)."""
        logger.warning("upload %s asked for a private image, but its original %s could not be copied: %s",
                       c.upload_id, c.original_key, exc)
        reason = errors.NoNodeAvailable("the upload asked for a private image, but its original could not be "
                                        "copied to a private key (no storage node took the copy); nothing was "
                                        "kept: upload it again")
        await self._end_row(c.upload_id, "failed", errors.InvalidTicket("unknown upload"),
                            error=(reason.code, reason.message))
        await self.states.finish(c.upload_id, "failed", error=reason)  # also frees the open-upload slot
        await self._written(c)
        await self._discard(c.upload_id, c.original_key, "failed: its private copy could not be made")
        return reason

    async def _enqueue(self, image_id: str, c: Completion) -> None:
        """Queue the processing job of image ``image_id``, whose original is ``c``'s, once its row and outbox
        row are committed; a failure is only logged: the outbox row enqueues it later (nodes/manager/outbox.py)."""
        try:
            await self.queue.enqueue(image_id, cpu=cpu_estimate_s(c.width, c.height, c.frames))
        except Exception as exc:  # Redis down
            logger.warning("enqueue of image %s deferred to the outbox: %s", image_id, exc)

    def _can_restore(self, key: str) -> bool:
        """Whether an upload can restore a lost original stored under ``key``: a public key (the upload's own,
        content-addressed), or a private image's ``p/<salt>/`` copy of it when :attr:`on_copy` can make one."""
        return not is_private_key(key) or self.on_copy is not None

    async def _restorable(self, s: AsyncSession, img: Image, c: Completion, nodes: Nodes) -> bool:
        """Whether ``img``, the dedup's match for ``c``, read in ``s`` before ``c``'s copies are recorded, has
        lost its original (:func:`~pixelfox.client.images.original_lost`: no storage node holds it, its variants
        kept or not) and ``c``'s original can be its original again (its key, or a private image's copy of it:
        :meth:`_can_restore`)."""
        return (public_key(img.original_key) == c.original_key and self._can_restore(img.original_key)
                and await self.views.original_lost(s, img, nodes))

    async def _restore_original(self, s: AsyncSession, img: Image, c: Completion) -> bool:
        """Make ``c``'s stored original (its location rows already in ``s``) lost image ``img``'s original again:
        nothing more for the same key; for a private image's own key, copied there by :attr:`on_copy`, its new
        locations recorded in ``s``. False (logged) when that copy could not be made: the image stays lost."""
        if img.original_key == c.original_key:
            return True
        assert self.on_copy is not None  # _restorable
        try:
            await self.on_copy(s, c.original_key, img.original_key)
        except errors.PixelfoxError as exc:
            logger.warning("upload %s could not restore image %s's original (%s): %s", c.upload_id, img.slug,
                           img.original_key, exc)
            return False
        return True

    @staticmethod
    async def _reprocess(s: AsyncSession, img: Image) -> None:
        """Set lost image ``img`` (read in ``s``, locked) processing again, with its outbox row in ``s``: in the same
        transaction as the location rows of its restored original, as for a new image (issue 7), so that its
        variants are made again from that original (a ``process_image`` job: their keys are the ones it had)."""
        img.status, img.error_code, img.error_message = "processing", "", ""
        if await s.get(OutboxEntry, img.id) is None:
            s.add(OutboxEntry(image_id=img.id))

    async def _restored(self, image: common_pb2.Image, c: Completion) -> None:
        """After lost ``image``'s restore (:meth:`_reprocess`) is committed: the read model drops its cached
        lost copy (a processing image is not cached; its job publishes it once ready), and its job is queued.
        A Redis error is only logged: the entry's TTL ends it, and the outbox row queues the job."""
        try:
            await readmodel.publish(self.registry.redis, image, b"")
        except Exception as exc:
            logger.warning("image %s: its read-model entry could not be dropped: %s", image.slug, exc)
        await self._enqueue(image.id, c)

    @staticmethod
    async def _record_copies(s: AsyncSession, c: Completion) -> None:
        """Record (merge) a location row for every storage node that holds ``c``'s original, in ``s``."""
        for node_id in dict.fromkeys(c.storage_node_ids):
            await s.merge(ObjectLocation(key=c.original_key, node_id=node_id, size=c.size))

    async def _written(self, c: Completion) -> None:
        """The rows naming ``c``'s original are committed (or it needs none): its upload node's writer token
        leaves the fence now, not when the node hears back, and deletes that waited for these bytes are
        decided (``on_written``). Redis errors are only logged: the token's lease ends it."""
        try:
            sha = fence_sha(c.original_key)
            await self.fence.leave(sha, upload_token(c.upload_id))
        except Exception as exc:
            logger.warning("upload %s: could not leave the write fence (its lease ends it): %s", c.upload_id, exc)
            return
        if self.on_written is not None:  # in the background: CompleteUpload does not wait for storage deletes
            self._background.start(self.on_written(sha), f"deletes waiting for {sha[:12]}")

    async def _drop_upload_copy(self, c: Completion, kept: str, slug: str) -> None:
        """After the commit that made ``c`` image ``slug``, whose original is stored under ``kept``: when that is
        not the upload's own key (a private image's ``p/<salt>/`` copy), the upload's public copy is deleted
        unless another image names it (:meth:`_discard`); nothing for the same key."""
        if kept != c.original_key:
            await self._discard(c.upload_id, c.original_key, f"is image {slug}, whose original has a key of its own")

    async def _discard(self, upload_id: str, key: str, why: str) -> None:
        """Delete the replicas of a refused upload's original ``key`` unless an image uses it
        (:attr:`on_orphaned`); a failure is only logged (replicas that could not go are retried).
        ``why`` says in the log why the completion was refused ("was cancelled ...")."""
        if self.on_orphaned is None:
            return
        try:
            deleted, pending = await self.on_orphaned([key])
        except Exception as exc:
            logger.warning("upload %s %s; its original %s could not be deleted: %s", upload_id, why, key, exc)
            return
        logger.info("upload %s %s: %d replicas of %s deleted, %d pending (none when an image has the same bytes)",
                    upload_id, why, deleted, key, pending)

    async def _answer(self, s: AsyncSession, img: Image, deduplicated: bool, nodes: Nodes
                      ) -> manager_pb2.CompleteUploadResponse:
        """The completion answer: ``img`` as its owner sees it (read in ``s``, URLs from ``nodes``: no Redis
        call), and whether it was deduplicated. An anonymous upload's own new image (not a dedup match) gets
        its ``deletion_url`` (on ``nodes.site``; none while no site URL is known): its uploader (who holds
        the ticket: ``pixelfox put``, the web node) has no other way to delete it."""
        image = await self.views.to_proto(s, img, nodes)
        link = ""
        if img.user_id is None and not deduplicated and nodes.site and self.deletion_secret:
            link = deletion.url(nodes.site, self.deletion_secret, img.slug, "")
        return manager_pb2.CompleteUploadResponse(image=image, deduplicated=deduplicated, deletion_url=link)

    async def _existing(self, s: AsyncSession, upload_id: str, user_id: str | None, sha256: str,
                        marks: dict[str, bool], private: bool = False) -> Image | None:
        """The image these bytes already are: this upload's (a retried completion) or the same user's
        lasting copy (dedup; ``marks`` and ``private`` as :meth:`_lasting_copy` takes them)."""
        img = await s.scalar(select(Image).where(Image.upload_id == upload_id))
        if img is not None:
            return img if img.sha256 == sha256 else None
        return await self._lasting_copy(s, user_id, sha256, marks, late=True, private=private)

    async def _lasting_marks(self, user_id: str | None, sha256: str) -> dict[str, bool]:
        """The dedup lookup's first step, with no lock held: ``{slug: lasting}`` for each of ``user_id``'s
        images of these bytes that did not fail, oldest first (read in a session of its own: on SQLite no
        transaction, no lock), ``lasting`` false for a copy scheduled to expire (Redis); {} without a user."""
        if not user_id:
            return {}
        async with self.sessions() as s:
            slugs = await _copies(s, user_id, sha256)
        return await self._lasting_of(slugs)

    async def _lasting_of(self, slugs: list[str]) -> dict[str, bool]:
        """``{slug: lasting}`` for ``slugs``: true when no expiration is scheduled (one ZMSCORE per 500)."""
        marks: dict[str, bool] = {}
        for start in range(0, len(slugs), 500):  # a handful in practice; ZMSCORE takes them in one round trip
            batch = slugs[start:start + 500]
            await failpoints.pause("dedup-expiry-read")
            scores = await self.registry.redis.zmscore(expiry.KEY, batch)
            marks.update((slug, score is None) for slug, score in zip(batch, scores, strict=True))
        return marks

    async def _lasting_copy(self, s: AsyncSession, user_id: str | None, sha256: str, marks: dict[str, bool],
                            *, late: bool, private: bool = False) -> Image | None:
        """The dedup lookup's second step: the oldest of ``user_id``'s images of these bytes that is neither
        failed nor scheduled to expire, by ``marks`` (:meth:`_lasting_marks`, read before the lock).

        With ``private`` (an upload asking for a private image) only a private image is an answer, as read
        under the lock: a public one would leave content meant to be private public, so such an upload makes
        its own private image then (as an upload asking for an expiration always makes its own image).

        Copies that expire are passed over, not a reason to stop looking: the first one used to be
        taken, and when it expired dedup was off, so every re-upload made another lasting copy.

        Call it in a write transaction (:func:`~pixelfox.db.engine.begin_write`): the rows are read again
        under the lock, and the one found ``FOR UPDATE OF images`` (PostgreSQL: the owner is outer-joined
        in, which plain ``FOR UPDATE`` refuses; SQLite's write lock covers it), so a delete of it under way
        (:meth:`nodes.manager.library.Library.delete`, which holds the row) is waited for, and a row it
        removed is passed over like an expiring copy: an image being deleted is never the answer. A copy
        ``marks`` does not know was made since (a completion of the same bytes at the same instant): with
        ``late`` its expiration is read now (the only Redis call under the lock, and a rare one: two uploads of
        one file completing at once still make one image), else it is passed over (``CreateUpload``: the
        upload goes ahead, and its completion finds that copy)."""
        if not user_id:
            return None
        slugs = await _copies(s, user_id, sha256)
        unknown = [slug for slug in slugs if slug not in marks]
        if unknown and late:
            marks = {**marks, **await self._lasting_of(unknown)}
        for slug in (slug for slug in slugs if marks.get(slug)):
            img = await s.scalar(select(Image).where(Image.slug == slug).with_for_update(of=Image))
            if img is not None and (not private or img.visibility == "private"):  # None: deleted meanwhile
                return img
        return None

    def no_upload_node(self, recs: list[NodeRecord]) -> errors.NoNodeAvailable:
        """The 503 for an upload when no upload node among ``recs`` (any roles) takes new uploads, naming each
        with why in the words of ``pixelfox status`` (:func:`pixelfox.idlenodes.none_takes`): "no upload node
        takes new uploads (upload1: maintenance, upload2: maintenance); try again later". It said "no healthy
        upload node" even when an admin had put them all in maintenance. "no upload node is registered" for none."""
        idle = [(r.node_id, why_idle(STATUS_NAMES.get(self.registry.status(r), "?"),
                                     "healthy" if self.registry.healthy(r) else "unhealthy"))
                for r in recs if r.role == common_pb2.NODE_ROLE_UPLOAD]
        if not idle:
            return errors.NoNodeAvailable("no upload node is registered; try again later")
        return errors.NoNodeAvailable(f"{none_takes('upload', 'takes new uploads', sorted(idle))}; try again later")

    async def relocate(
        self, upload_id: str, ticket_token: str, exclude_address: str
    ) -> manager_pb2.CreateUploadResponse:
        """Another healthy upload node for an open upload whose node failed; same ticket.

        The ticket is the credential (it must name ``upload_id``); ``exclude_address`` is
        avoided unless it is the only healthy node. Raises InvalidTicket, NotFound
        (expired upload) or NoNodeAvailable.
        """
        ticket = tickets.verify(self.ticket_key, ticket_token, leeway_s=self.limits.ticket_leeway_s)
        if ticket.upload_id != upload_id:
            raise errors.InvalidTicket("ticket belongs to another upload")
        await self.states.require_open(upload_id)
        recs = await self.registry.all(common_pb2.NODE_ROLE_UPLOAD)
        nodes = [r for r in recs if self.registry.healthy(r)]
        others = [n for n in nodes if n.grpc_address != exclude_address] or nodes
        if not others:
            raise self.no_upload_node(recs)
        node = spread(others)
        async with self.sessions() as s:
            upload = await s.get(Upload, upload_id)
            if upload is None:
                raise errors.InvalidTicket("unknown upload")
            upload.upload_node_id = node.node_id
            await s.commit()
        return self._ticket_answer(upload_id, node, ticket_token, ticket.expires_at, ticket.size)

    async def renew(self, upload_id: str, user: User | None, is_admin: bool, exclude_address: str = ""
                    ) -> manager_pb2.CreateUploadResponse:
        """A fresh ticket, ``ticket_ttl_s`` from now, for upload ``upload_id``, asked by its owner or an admin
        (``RenewUpload``; ``POST /api/v1/uploads/<id>/ticket``), so that it resumes from its committed bytes
        while its state lives (``upload_ttl_s`` after its last chunk), however long ago its ticket ended.

        The row's ``expires_at`` becomes the new ticket's exp (quota and :meth:`progress` follow it) and the
        upload's open-upload slot is pushed out to the new ticket's end (or its state's, when sooner). An
        upload whose ticket had already ended stopped counting: it is counted again as a new one would be
        (quota and open uploads, no rate token). Its node is kept while healthy, else another is picked;
        ``exclude_address`` (a node the caller saw stop answering) is left unless it is the only healthy one, as
        :meth:`relocate` does, so a client moves off a frozen node (still healthy until its heartbeats are
        missed) in one call.
        Earlier tickets stay valid until their own end (they name the same upload). Raises Unauthenticated
        (no user), NotFound (unknown, someone else's, or its state expired: nothing left to resume),
        Forbidden (an anonymous upload: no owner), Conflict (complete, failed or cancelled, with the
        reason), QuotaExceeded, TooManyOpenUploads, NoNodeAvailable."""
        if user is None and not is_admin:
            raise errors.Unauthenticated("renewing an upload's ticket needs its owner's API key (or an admin's)")
        async with self.sessions() as s:  # who owns it, before any lock (the quota lock comes first)
            upload = await s.get(Upload, upload_id)
            if upload is None or not _may_see(upload, user, is_admin):
                raise errors.NotFound("no such upload")
            if upload.user_id is None:
                raise errors.Forbidden("an anonymous upload's ticket cannot be renewed (it has no owner to ask): "
                                       "start a new upload")
            owner_id, owner = upload.user_id, await s.get(User, upload.user_id)
            lapsed = time.time() > self._usable_until(_unix(upload.expires_at))
        st = await self.states.get(upload_id)
        if st is None:
            raise errors.NotFound(f"the upload expired (no byte came for {self.limits.upload_ttl_s} s) or was "
                                  "cancelled: its ticket cannot be renewed; start a new upload")
        if st.status != "open":  # a ticket never brings back an upload that ended
            why = f" ({st.failure().message})" if st.closed else ""
            raise errors.Conflict(f"the upload is {st.status}{why}: its ticket cannot be renewed")
        nodes = await self.registry.healthy_nodes(common_pb2.NODE_ROLE_UPLOAD)
        issued = int(time.time())
        expires_at = issued + self.limits.ticket_ttl_s
        until = min(self._usable_until(expires_at), await self.states.ttl(upload_id) or math.inf)
        who = limited(owner)
        async with self.gate.quota_guard(who if lapsed else ""), self.sessions() as s:
            await begin_write(s)
            upload = await s.get(Upload, upload_id, with_for_update=True)
            if upload is None or upload.status != "open":
                raise errors.Conflict(f"the upload is {upload.status if upload else 'gone'}: its ticket cannot be "
                                      "renewed")
            usable = [n for n in nodes if n.grpc_address != exclude_address] or nodes
            node = next((n for n in usable if n.node_id == upload.upload_node_id), None) or spread(usable)
            if lapsed:  # it stopped counting when its ticket ended: counted again (ZADD), or refused
                await self.gate.admit(who, upload_id, upload.size, until, rate=False)
            else:  # still counted: its end moves out
                await self.states.hold_slot(who, upload_id, until)
            upload.expires_at = datetime.fromtimestamp(expires_at, UTC)
            upload.upload_node_id = node.node_id
            size, content_type = upload.size, upload.content_type
            await s.commit()
        token = tickets.sign(self.ticket_key, upload_id, owner_id, size, content_type,
                             self.limits.ticket_ttl_s, now=issued)
        logger.info("upload %s: ticket renewed until %d", upload_id, expires_at)
        return self._ticket_answer(upload_id, node, token, expires_at, size)

    def _ticket_answer(self, upload_id: str, node: NodeRecord, ticket: str, expires_at: int, size: int
                       ) -> manager_pb2.CreateUploadResponse:
        """Where and how to send upload ``upload_id`` (``size`` bytes): upload node ``node`` (its gRPC
        address, and its tus URL when it serves HTTP), with ``ticket``, whose ``exp`` is ``expires_at``
        (unix seconds); the answer's ``expires_at`` is the ticket's last usable second
        (:func:`pixelfox.tickets.usable_until`), as ``GetUpload`` and tus ``Upload-Expires`` say too."""
        return manager_pb2.CreateUploadResponse(
            upload_id=upload_id,
            upload_address=node.grpc_address,
            upload_url=f"{node.http_url.rstrip('/')}/tus/{upload_id}" if node.http_url else "",
            ticket=ticket,
            expires_at=iso(datetime.fromtimestamp(self._usable_until(expires_at), UTC)),
            chunk_size=self.limits.chunk_size,
            max_size=size,
            state_ttl_s=self.limits.upload_ttl_s,
        )

    async def abandon(self, upload_id: str, ticket_token: str) -> bool:
        """Mark an open upload ``abandoned`` (tus termination) and free its open-upload slot; True if
        it was open. Raises InvalidTicket (bad ticket, another upload's, unknown upload)."""
        ticket = tickets.verify(self.ticket_key, ticket_token, leeway_s=self.limits.ticket_leeway_s)
        if ticket.upload_id != upload_id:
            raise errors.InvalidTicket("ticket belongs to another upload")
        owner = await self._end_row(upload_id, "abandoned", errors.InvalidTicket("unknown upload"))
        if owner is None:
            return False
        await self._closed(upload_id, owner, None)  # tus termination deletes the state itself
        return True

    async def fail(self, upload_id: str, error_code: str, error_message: str) -> bool:
        """Record that an upload node refused upload ``upload_id`` (not an image, a checksum mismatch):
        row ``open`` -> ``failed`` with the reason's stable ``error_code`` and ``error_message`` (cut to
        64 and 500 characters), so :meth:`progress` answers it once the Redis state is gone. True if
        it was open, False if it had already ended. Raises NotFound for an unknown upload."""
        if await self._end_row(upload_id, "failed", errors.NotFound("no such upload"),
                               error=(error_code, error_message)) is None:
            return False
        logger.info("upload %s failed: %s", upload_id, error_code)
        return True

    async def cancel(self, upload_id: str, user: User | None, is_admin: bool) -> bool:
        """The owner (or an admin) gives up an open upload without its ticket (``DELETE
        /api/v1/uploads/<id>``): marked ``abandoned``, its open-upload slot freed at once, and
        every later PATCH, stream or resume of its ticket refused with the reason. True if it was
        open, False if it had already ended (complete, failed, abandoned). Raises NotFound for an
        unknown upload or someone else's (as :meth:`progress`)."""
        st = await self.states.get(upload_id)  # before the row is locked, not while
        owner = await self._end_row(upload_id, "abandoned", errors.NotFound("no such upload"),
                                    visible=lambda u: _may_see(u, user, is_admin),
                                    still_open=st is None or st.status == "open")  # failed: keep its reason
        if owner is None:
            return False
        by = "its owner" if (user.id if user else "") == owner else "an admin"
        await self._closed(upload_id, owner,
                           errors.InvalidTicket(f"the upload was cancelled by {by}; start a new upload"))
        return True

    async def _end_row(self, upload_id: str, status: str, missing: errors.PixelfoxError, *,
                       visible: Callable[[Upload], bool] | None = None, still_open: bool = True,
                       error: tuple[str, str] | None = None) -> str | None:
        """Mark upload ``upload_id``'s row ``status`` (``abandoned`` or ``failed``, with ``error``'s
        ``(code, message)``, cut to 64 and 500 characters) if it is still ``open`` and ``still_open``
        (the caller's word on its Redis state), in one locked read; its owner's id ("" for an anonymous
        upload) when it was marked, None when it had already ended. Raises ``missing`` for an unknown
        row, or one ``visible`` (when given) says the caller may not see."""
        async with self.sessions() as s:
            await begin_write(s)
            upload = await s.get(Upload, upload_id, with_for_update=True)  # one read: checked, then marked
            if upload is None or (visible is not None and not visible(upload)):
                raise missing
            if upload.status != "open" or not still_open:
                return None
            upload.status, owner = status, upload.user_id or ""
            if error is not None:
                upload.error_code, upload.error_message = error[0][:64], error[1][:500]
            await s.commit()
        return owner

    async def _closed(self, upload_id: str, owner: str, reason: errors.PixelfoxError | None) -> None:
        """After a row went ``abandoned``: free ``owner``'s open-upload slot; with ``reason`` the shared
        state is closed too, so upload nodes refuse the ticket with it."""
        if reason is not None and await self.states.get(upload_id) is not None:
            await self.states.finish(upload_id, "abandoned", error=reason)
        await self.gate.closed(owner, upload_id)
        logger.info("upload %s abandoned by %s", upload_id, "its owner" if reason is not None else "its client")

    async def progress(self, upload_id: str, user: User | None, is_admin: bool) -> manager_pb2.UploadProgress:
        """Committed bytes and status of one upload, and its image once complete.

        Only its owner (or an admin / the cluster) may look; anonymous uploads by id only.
        Raises NotFound for an unknown upload or someone else's.
        """
        async with self.sessions() as s:
            upload = await s.get(Upload, upload_id)
            if upload is None or not _may_see(upload, user, is_admin):
                raise errors.NotFound("no such upload")
            image = await s.scalar(select(Image).where(Image.upload_id == upload_id))
            original = await s.get(Image, upload.duplicate_of) if image is None and upload.duplicate_of else None
        return await self._progress(upload, image.slug if image else "", original.slug if original else "")

    async def _progress(self, upload: Upload, slug: str, original: str) -> manager_pb2.UploadProgress:
        """:meth:`progress` of ``upload`` (a loaded row) whose image is ``slug`` ("" none), or which
        became the user's existing image ``original`` (dedup; "" none); reads its Redis state."""
        size, row_status, row_error = upload.size, upload.status, (upload.error_code or "", upload.error_message or "")
        ticket_end = self._usable_until(_unix(upload.expires_at))  # nothing can resume it after this
        st = await self.states.get(upload.id)
        reply = manager_pb2.UploadProgress(upload_id=upload.id, size=size, filename=upload.filename)
        if original:  # deduplicated: the user's existing image
            slug, reply.deduplicated = original, True
        elif not slug and st is not None and st.status == "complete":  # the same, recorded before migration 0003
            slug, reply.deduplicated = st.slug, True
        if slug:
            reply.status, reply.offset = "complete", size
            reply.image.CopyFrom(await self.views.get(slug))
            if upload.user_id is None and not reply.deduplicated:
                reply.deletion_url = await self._deletion_url(slug)
        elif st is None and row_status == "failed":  # its TTL ran out: the reason its upload node reported
            reason = uploadstate.failure("failed", *row_error)
            reply.status, reply.error_code, reply.error_message = "failed", reason.code, reason.message
        elif st is None:  # the state is gone: cancelled by its client (tus DELETE), or its TTL ran out
            reply.status = "abandoned" if row_status == "abandoned" else "expired"
        elif st.status == "abandoned":  # cancelled by its owner: the state stays to refuse the ticket
            reply.status, reply.offset = "abandoned", st.offset
        elif st.status == "failed":  # the reason the PATCH or stream was told, for whoever asks later
            reason = st.failure()
            reply.status, reply.offset = "failed", st.offset
            reply.error_code, reply.error_message = reason.code, reason.message
            if expires := min(await self.states.ttl(upload.id) or math.inf, ticket_end):
                reply.expires_at = _iso(expires)
        else:
            await self._unfinished(reply, upload, st.offset, ticket_end)
        return reply

    async def _deletion_url(self, slug: str) -> str:
        """The deletion link of the anonymous image ``slug`` (:func:`pixelfox.deletion.url`), as
        :meth:`_answer` gives it; "" while no site URL is known or without a deletion secret."""
        site = (await self.views.nodes()).site
        return deletion.url(site, self.deletion_secret, slug, "") if site and self.deletion_secret else ""

    async def _unfinished(self, reply: manager_pb2.UploadProgress, upload: Upload, offset: int,
                          ticket_end: float) -> None:
        """Fill ``reply`` for ``upload``, open in Redis at ``offset`` bytes, whose ticket is accepted until
        ``ticket_end`` (unix s: its expiry plus the clock-skew leeway, as tus Upload-Expires says):
        ``open`` while the ticket holds; then ``paused`` while the state lives when it has an owner, who
        renews the ticket (:meth:`renew`), else ``expired`` (an anonymous upload has nobody to renew it).
        ``ticket_expires_at`` is ``ticket_end``; ``expires_at`` when nothing can resume it any more: its
        state's end (``upload_ttl_s`` after the last chunk), or the ticket's when sooner for an anonymous one."""
        state_end, now = await self.states.ttl(upload.id) or math.inf, time.time()
        renewable = upload.user_id is not None
        reply.offset = offset
        if now > ticket_end and not renewable:
            reply.status = "expired"  # its ticket ended and nobody may renew it: nothing can resume it now
            return
        reply.status = "open" if now <= ticket_end else "paused"
        reply.ticket_expires_at = _iso(ticket_end)
        if (expires := state_end if renewable else min(state_end, ticket_end)) < math.inf:
            reply.expires_at = _iso(expires)

    async def list_open(self, user: User) -> list[manager_pb2.UploadProgress]:
        """``user``'s unfinished uploads (``open``, and ``paused``: its ticket ended, its state lives, it
        resumes once renewed), newest first, each as :meth:`progress` answers it: at most
        ``user_open_uploads`` of them (:data:`LISTED_UPLOADS_CAP` when that is 0), an admin's own too
        (admins skip the limit, so they are not in the Redis set of open uploads; the table is the
        source). A row stays ``open`` when its ticket or state ran out (and when its upload failed but
        the manager did not hear it), so only rows whose ticket was accepted within the last
        ``upload_ttl_s`` + ``ticket_ttl_s`` are read, in one query (a state lives ``upload_ttl_s`` after the
        last chunk, and a stream admitted before the ticket's end may commit chunks after it; one longer
        than a whole ticket's life is not listed, ``GetUpload`` still answers it), and each one's Redis
        state says whether it is still open or paused. Such a row has no image of its own and is no
        duplicate, so nothing else is read from the database."""
        limit = self.limits.user_open_uploads or LISTED_UPLOADS_CAP
        since = datetime.now(UTC) - timedelta(  # usable_until(exp) within that time
            seconds=self.limits.ticket_leeway_s + self.limits.upload_ttl_s + self.limits.ticket_ttl_s)
        async with self.sessions() as s:
            candidates = list(await s.scalars(select(Upload).where(
                Upload.user_id == user.id, Upload.status == "open", Upload.expires_at > since,
            ).order_by(Upload.created_at.desc(), Upload.id.desc())))
        found: list[manager_pb2.UploadProgress] = []
        for upload in candidates:
            p = await self._progress(upload, "", "")
            if p.status in ("open", "paused"):
                found.append(p)
                if len(found) == limit:
                    break
        return found


async def _copies(s: AsyncSession, user_id: str, sha256: str) -> list[str]:
    """Slugs of ``user_id``'s images of hash ``sha256`` that did not fail, oldest first (read in ``s``)."""
    return list(await s.scalars(select(Image.slug).where(
        Image.user_id == user_id, Image.sha256 == sha256, Image.status != "failed",
    ).order_by(Image.created_at, Image.id)))


def _iso(unix: float) -> str:
    """ISO 8601 UTC of unix time ``unix`` (seconds), as the API answers times."""
    return iso(datetime.fromtimestamp(unix, UTC))


def _unix(at: datetime) -> int:
    """Unix seconds of a stored time (a naive one, as SQLite gives it back, is UTC)."""
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())


def _may_see(upload: Upload, user: User | None, is_admin: bool) -> bool:
    """Whether the caller may see (and cancel) ``upload``: its owner, an admin or the cluster
    credential; an anonymous upload by its id alone (the id is the secret, as for its ticket)."""
    return upload.user_id is None or (user is None and is_admin) or (
        user is not None and (user.id == upload.user_id or user.role == "admin"))
