"""Image management for owners and admins: who may see an image, update, visibility, delete.

Access rule (issue 5, IDOR): a private image exists only for its owner and for admin *users*;
to anyone else every call answers ``NotFound``, exactly as for a slug that never existed. A
cluster caller with no acting user (the web node serving an anonymous visitor) is "anyone".

Going private re-keys the image: every object is copied to ``p/<new salt>/<public key>``
(:func:`pixelfox.storage.keys.private_key`), the rows switch to the new keys, and the old
public keys are deleted where no other image uses the same bytes, so the old public URLs stop
working (the CDN purge hook hears about them too). Going public copies back to the
content-addressed keys and drops the private copies. An upload may be private from the start
(:meth:`nodes.manager.uploads.Uploads.complete` copies its original to its own prefix); its processing job
writes the variants under that prefix (``Job.private_salt``). Variants a job wrote under keys that no longer
fit the image (its visibility changed while the job ran, or an older processing node wrote public keys) are
moved by :meth:`Library.after_processing`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from nodes.manager.images import ImageViews
from nodes.manager.objects import Objects, image_keys, wanted_key
from pixelfox import deletion, errors, failpoints, readmodel
from pixelfox.db.engine import begin_write
from pixelfox.db.models import AbuseReport, Image, Upload, User
from pixelfox.db.outbox import OutboxEntry
from pixelfox.leases import Lease
from pixelfox.queue import JobQueue
from pixelfox.storage.keys import keyed_for
from pixelfox.text import checked, checked_title, same_text
from pixelfox.v1 import common_pb2
from pixelfox.visibility import VISIBILITIES

logger = logging.getLogger(__name__)

MAX_DESCRIPTION = 2000
REKEY_LEASE_S = 300.0  # seconds a visibility change may hold its image (copies every object)


def is_admin_user(user: User | None) -> bool:
    return user is not None and user.role == "admin"


def can_manage(user: User | None, img: Image) -> bool:
    return user is not None and (user.role == "admin" or (img.user_id is not None and img.user_id == user.id))


def can_see(user: User | None, img: Image) -> bool:
    return img.visibility != "private" or can_manage(user, img)


@dataclass(frozen=True)
class Changes:
    title: str | None = None
    description: str | None = None
    visibility: str | None = None
    keep_metadata: bool | None = None


class Library:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        views: ImageViews,
        objects: Objects,
        redis: aioredis.Redis,
        secret: str = "",
        queue: JobQueue | None = None,
    ) -> None:
        self.sessions = sessions
        self.views = views
        self.objects = objects
        self.redis = redis
        self.secret = secret  # the cluster secret: deletion tokens (pixelfox.deletion)
        self.queue = queue  # a deleted image's dead letters go with it

    async def _load(self, s: AsyncSession, slug: str, user: User | None, *, manage: bool,
                    deletion_token: str = "", lock: bool = False) -> Image:
        """Image ``slug`` as ``user`` may see it (NotFound) or, with ``manage``, change it (Forbidden).
        A ``deletion_token`` (:mod:`pixelfox.deletion`) is the authority instead of ``user``: the
        image's own token, or Forbidden. ``lock``: the row is read ``FOR UPDATE OF images`` (PostgreSQL; on
        SQLite the caller's :func:`~pixelfox.db.engine.begin_write` already holds the write lock)."""
        q = select(Image).where(Image.slug == slug)
        img = (await s.execute(q.with_for_update(of=Image) if lock else q)).scalar_one_or_none()
        if deletion_token and img is not None:
            if not self.secret or not deletion.valid(self.secret, slug, img.user_id or "", deletion_token):
                raise errors.Forbidden("this deletion link is not valid")
            return img
        if img is None or not can_see(user, img):
            raise errors.NotFound("no such image")
        if manage and not can_manage(user, img):
            raise errors.Forbidden("only the owner or an admin may change this image")
        return img

    async def get(self, slug: str, user: User | None) -> common_pb2.Image:
        """The image as ``user`` may see it; NotFound for someone else's private image. The GPS
        position of the original (``location``) is given to the owner and admins only."""
        async with self.sessions() as s:
            img = await self._load(s, slug, user, manage=False)
            out = await self.views.to_proto(s, img)
        if can_manage(user, img) and img.gps_lat is not None and img.gps_lon is not None:
            out.location.CopyFrom(common_pb2.GeoPoint(latitude=img.gps_lat, longitude=img.gps_lon))
        return out

    async def update(self, slug: str, user: User | None, ch: Changes) -> common_pb2.Image:
        """Apply ``ch``; raises BadRequest (lengths, visibility name), Forbidden, NotFound, Conflict
        (visibility change while still processing), Unavailable (no storage node)."""
        if ch.visibility is not None and ch.visibility not in VISIBILITIES:
            raise errors.BadRequest("visibility must be 'public' or 'private'")
        ch = await self._checked_text(slug, ch)
        if ch.visibility is None:
            return await self._update(slug, user, ch)
        # one visibility change of an image at a time: two re-keys racing would each copy the
        # objects and the loser's copies would be left behind
        lease = Lease(self.redis, f"rekey:{slug}", ttl_s=REKEY_LEASE_S)
        if not await lease.acquire():
            raise errors.Conflict("another visibility change of this image is in progress; try again shortly")
        try:
            # the copies (to the shared public keys, or to new private ones) are made and recorded
            # inside the write fence of the image's bytes (_update)
            async with self.sessions() as s:
                sha = await s.scalar(select(Image.sha256).where(Image.slug == slug)) or ""
            return await self._update(slug, user, ch, sha)
        finally:
            await lease.release()

    async def _checked_text(self, slug: str, ch: Changes) -> Changes:
        """``ch`` with its title and description checked (:func:`pixelfox.text.checked_title`, :func:`checked`,
        :data:`MAX_DESCRIPTION` characters). One the text rules refuse but that equals what the image
        already has is left out of the change: text stored before a rule came (a bidi control) made
        every later save of the edit form, which sends all fields, a 400 the owner could not see the
        cause of. Raises BadRequest for a new value the rules refuse."""
        stored: tuple[str | None, str | None] | None = None

        async def kept(field: str, value: str) -> bool:
            nonlocal stored
            if stored is None:
                async with self.sessions() as s:
                    row = (await s.execute(select(Image.title, Image.description).where(Image.slug == slug))).first()
                stored = (row[0], row[1]) if row is not None else (None, None)
            return same_text(value, stored[0 if field == "title" else 1])

        if ch.title is not None:
            try:
                ch = dataclasses.replace(ch, title=checked_title(ch.title))
            except errors.BadRequest:
                if not await kept("title", ch.title):
                    raise
                ch = dataclasses.replace(ch, title=None)
        if ch.description is not None:
            try:
                description = checked(ch.description, "description", multiline=True)
                if len(description) > MAX_DESCRIPTION:
                    raise errors.BadRequest(f"description longer than {MAX_DESCRIPTION} characters")
                ch = dataclasses.replace(ch, description=description)
            except errors.BadRequest:
                if not await kept("description", ch.description):
                    raise
                ch = dataclasses.replace(ch, description=None)
        return ch

    async def _update(self, slug: str, user: User | None, ch: Changes, sha: str = "") -> common_pb2.Image:
        """:meth:`update` once checked. With ``sha`` (a visibility change), the copies to the new keys and
        the rows naming them are made inside the write fence of those bytes (:mod:`pixelfox.storage.fence`):
        another image of the same bytes deleted meanwhile must not delete the copies before they are
        named; and each copy is journalled (:meth:`~nodes.manager.objects.Objects.copying`) until the commit
        names it, so a change that fails leaves no copy behind. Entering may wait for a delete under way
        (DeleteInProgress after its bound). The image deleted while the change ran (its row gone at the
        commit, or its files before they were copied) raises NotFound, as a delete before it would."""
        try:
            return await self._apply(slug, user, ch, sha)
        except (StaleDataError, errors.NoNodeAvailable, errors.NotFound) as exc:
            async with self.sessions() as s:
                gone = await s.scalar(select(Image.id).where(Image.slug == slug)) is None
            if gone:
                logger.info("change of image %s: the image was deleted meanwhile (%s)", slug, type(exc).__name__)
                raise errors.NotFound("no such image") from exc
            raise

    async def _apply(self, slug: str, user: User | None, ch: Changes, sha: str) -> common_pb2.Image:
        """:meth:`_update` but for its answer to an image deleted meanwhile."""
        old_keys: list[str] = []
        old_urls: list[str] = []
        placement = await readmodel.placement(self.redis)  # read before the URLs are made (readmodel.publish)
        async with self._rekeying(sha) as made, self.sessions() as s:
            img = await self._load(s, slug, user, manage=True)
            if ch.title is not None:
                img.title = ch.title
            if ch.description is not None:
                img.description = ch.description
            if ch.keep_metadata is not None:
                img.keep_metadata = ch.keep_metadata
            if ch.visibility is not None and ch.visibility != img.visibility:
                if img.status == "processing":
                    raise errors.Conflict("the image is still processing; change its visibility when it is ready")
                before = await self.views.to_proto(s, img)
                old_urls = _file_urls(before)
                old_keys = await self._rekey(s, img, ch.visibility, made)
            await failpoints.pause("before-change-commit")
            await s.commit()
            out = await self.views.to_proto(s, img)
        await readmodel.publish(self.redis, out, placement)
        if old_keys:
            await self.objects.delete_unreferenced(old_keys)
            await self.objects.purge("image.rekeyed", old_urls)
        return out

    def _rekeying(self, sha: str) -> contextlib.AbstractAsyncContextManager[list[str]]:
        """:meth:`~nodes.manager.objects.Objects.rekeying` of bytes ``sha`` for :data:`REKEY_LEASE_S`; with no
        ``sha`` (no copy to make) an empty journal, nothing fenced."""
        return self.objects.rekeying(sha, REKEY_LEASE_S) if sha else contextlib.nullcontext([])

    async def _rekey(self, s: AsyncSession, img: Image, visibility: str, made: list[str]) -> list[str]:
        """Copy every object of ``img`` to its keys for ``visibility`` (each copy journalled in ``made``:
        :meth:`~nodes.manager.objects.Objects.copying`); returns the old keys."""
        salt = secrets.token_hex(16) if visibility == "private" else ""
        old = image_keys(img)
        mapping = {k: keyed_for(k, salt) for k in dict.fromkeys(old)}
        # the new location rows are written at the commit, not at the next copy's query: on SQLite a
        # flush takes the database's write lock, which every other writer would wait for while the
        # remaining objects are copied (seconds for a large image)
        with s.no_autoflush:
            for src, dst in mapping.items():
                if src != dst:
                    await self.objects.copy(s, src, dst, made)
        img.original_key = mapping[img.original_key]
        for v in img.variants:
            v.key = mapping[v.key]
        img.visibility = visibility
        img.private_salt = salt
        return [k for k, v in mapping.items() if k != v]

    async def after_processing(self, image_id: str) -> None:
        """After a job's variants are recorded: every variant of the image whose key does not fit its visibility
        now (:func:`~nodes.manager.objects.wanted_key`: ``p/<salt>/<public key>`` for a private image,
        the public key for a public one) is copied to the key that does and its row names that key; the old
        keys are deleted after the commit unless another image names them. The processing node writes under
        the keys the job named (``Job.private_salt``), so this moves something only when the image changed
        visibility (or went private again, with a new salt) while its job ran, or when a processing node older
        than ``private_salt`` wrote a private image's variants under their public keys. The read model gets the
        fresh image either way (so pages show new renditions at once).

        The copies are made as a visibility change makes them (:meth:`_update`: inside the write fence of the
        image's bytes, journalled), the fence entered only when there is something to move; the image deleted
        meanwhile is logged, and its copies go. An image the dispatcher left ``processing`` for this move
        (:meth:`nodes.manager.dispatch.Dispatcher._record`: a new image whose variants do not fit) becomes
        ``ready`` in the commit that names the fitting keys, and its outbox row goes; should the move fail,
        that row runs its job again. Variants an older processing node wrote under public keys for a private
        image exist there for the seconds until this move (never named by an answer while the image is new)."""
        old_keys: list[str] = []
        placement = await readmodel.placement(self.redis)  # read before the URLs are made (readmodel.publish)
        sha, fenced = "", False
        try:
            while True:
                async with self._rekeying(sha) as made, self.sessions() as s:
                    img = await s.get(Image, image_id)
                    if img is None:
                        return
                    await s.refresh(img, ["variants", "owner"])
                    mapping = {v.key: wanted_key(img, v.key) for v in img.variants}
                    mapping = {k: w for k, w in mapping.items() if k != w}
                    if mapping and not fenced:  # copies to make: again, inside the fence of the bytes
                        sha, fenced = img.sha256, True
                        continue
                    for src, dst in mapping.items():
                        await self.objects.copy(s, src, dst, made)
                    for v in img.variants:
                        v.key = mapping.get(v.key, v.key)
                    old_keys = list(mapping)
                    if mapping and img.status == "processing":  # left so by the dispatcher until now
                        img.status, img.ready_at = "ready", datetime.now(UTC)
                        await s.execute(delete(OutboxEntry).where(OutboxEntry.image_id == img.id))
                    await s.commit()
                    if mapping:
                        logger.info("image %s (%s): %d variants moved to the keys that fit it", image_id,
                                    img.visibility, len(mapping))
                    out = await self.views.to_proto(s, img)
                break
        except StaleDataError:
            logger.info("image %s was deleted while its new variants moved to the keys that fit it", image_id)
            return
        await readmodel.publish(self.redis, out, placement)
        if old_keys:
            await self.objects.delete_unreferenced(old_keys)

    async def delete(self, slug: str, user: User | None, deletion_token: str = "", *, expired_at: float = 0
                     ) -> tuple[int, int]:
        """Delete the rows and every replica of the image's objects; ``(deleted, pending)`` replicas.

        ``user`` must own the image or be an admin, unless ``deletion_token`` is the image's token
        (:mod:`pixelfox.deletion`; the uploader's deletion URL, the only way for an anonymous
        upload). Raises NotFound, Forbidden (neither; also a wrong token). ``expired_at`` > 0 (unix
        seconds; the image's own ``expires_at`` when it has one, not the sweep's time, up to one
        sweep interval later): the expiry sweeper deletes it because it expired, which its read-model marker keeps
        (:func:`pixelfox.readmodel.mark_deleted`), so that its page says "expired", not "deleted".

        The rows go in one write transaction that holds the image's row from the first read to the
        commit, the one an upload's dedup takes too (:meth:`nodes.manager.uploads.Uploads.complete`):
        a re-upload of the same bytes either became this image before the delete began (and goes with
        it, as asked) or waits and becomes a new image; it is never answered with an image being deleted.
        Its original is then named by the new row, so the delete below leaves the shared bytes alone."""
        async with self.sessions() as s:
            await begin_write(s)  # one writer from the read on (a dedup lookup waits for the commit)
            img = await self._load(s, slug, user, manage=True, deletion_token=deletion_token, lock=True)
            logger.info("deleting image %s (its row is held until the commit)", slug)
            proto = await self.views.to_proto(s, img)
            keys, image_id = image_keys(img), img.id
            if expired_at and img.expires_at is not None:  # when it expired, not when the sweeper came by
                expired_at = img.expires_at.replace(tzinfo=img.expires_at.tzinfo or UTC).timestamp()
            upload = await s.get(Upload, img.upload_id) if img.upload_id else None
            # open abuse reports of the image are settled with it (they stayed open, pointing nowhere)
            await s.execute(update(AbuseReport).where(AbuseReport.image_id == img.id, AbuseReport.status == "open")
                            .values(status="image-deleted", resolved_at=datetime.now(UTC),
                                    resolved_by=user.name if user is not None else "deletion link"))
            await s.delete(img)
            if upload is not None:  # its filename and owner go with the image (after it: the image points at it)
                await s.flush()
                await s.delete(upload)
            await failpoints.pause("before-delete-commit")
            await s.commit()
        await readmodel.mark_deleted(self.redis, slug, expired_at)
        if self.queue is not None:  # nothing left to retry: they would keep the dead-letter alert firing
            await self.queue.forget_dead_of(image_id)
        deleted, pending = await self.objects.delete_unreferenced(keys)
        await self.objects.purge("image.deleted", [proto.url, *_file_urls(proto)])
        logger.info("image %s deleted: %d replicas removed, %d pending", slug, deleted, pending)
        return deleted, pending


def _file_urls(image: common_pb2.Image) -> list[str]:
    urls = [image.original_url, *(v.url for v in image.variants)]
    return [u.split("?", 1)[0] for u in urls if u]
