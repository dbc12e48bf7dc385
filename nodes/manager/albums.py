"""Albums: a user's named sets of their own images with a cover and a public link ``/a/<slug>``.

Anyone with the slug may read an album; its private images are left out (and not counted)
for everyone but the owner and admins, and a private cover shows no thumbnail to them.
Only the owner (or an admin) changes an album; only the owner's images can be added, and a
slug of someone else's private image is NotFound, as everywhere else. Any image of the album (one an
admin added too) can be removed by the album's owner, and any the owner can see can be its cover.
Two changes of an album at once (a double click, two tabs) both apply; a change racing the deletion of
the album or of an image it names answers NotFound, as after it.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError
from ulid import ULID

from nodes.manager.cursors import before_id
from nodes.manager.images import ImageViews, iso, new_slug
from nodes.manager.library import can_manage, can_see
from pixelfox import errors
from pixelfox.db.models import Album, AlbumImage, Image, User
from pixelfox.text import MAX_TITLE, checked, same_text
from pixelfox.v1 import manager_pb2

logger = logging.getLogger(__name__)

MAX_DESCRIPTION = 2000
MAX_ALBUM_IMAGES = 1000
#: times :meth:`Albums.update` runs when its commit meets a concurrent change (a row another change added or
#: deleted first); the next run reads what that change committed
UPDATE_ATTEMPTS = 3


def _owns(user: User | None, album: Album) -> bool:
    return user is not None and (user.role == "admin" or user.id == album.user_id)


class Albums:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], views: ImageViews) -> None:
        self.sessions = sessions
        self.views = views

    async def _album(self, s: AsyncSession, slug: str) -> Album:
        album = (await s.execute(select(Album).where(Album.slug == slug))).scalar_one_or_none()
        if album is None:
            raise errors.NotFound("no such album")
        return album

    async def _images(self, s: AsyncSession, album: Album, user: User | None) -> list[Image]:
        q = (
            select(Image)
            .join(AlbumImage, AlbumImage.image_id == Image.id)
            .where(AlbumImage.album_id == album.id)
            .order_by(AlbumImage.added_at, Image.id)
        )
        rows = (await s.execute(q)).scalars().all()
        return [img for img in rows if can_see(user, img)]

    async def to_proto(
        self, s: AsyncSession, album: Album, user: User | None, *, with_images: bool
    ) -> manager_pb2.Album:
        images = await self._images(s, album, user)
        site = await self.views._site()
        out = manager_pb2.Album(
            id=album.id, slug=album.slug, title=album.title, description=album.description,
            owner=album.owner.name if album.owner else "", owner_id=album.user_id,
            created_at=iso(album.created_at), image_count=len(images),
            url=f"{site}/a/{album.slug}" if site else f"/a/{album.slug}",
        )
        cover = next((i for i in images if i.id == album.cover_image_id), None)
        cover = cover or (images[0] if images else None)
        protos = await self.views.to_protos(s, images) if with_images else []
        if cover is not None:
            out.cover_slug = cover.slug
            cover_proto = next((p for p in protos if p.slug == cover.slug), None)
            out.cover_url = (cover_proto or await self.views.to_proto(s, cover)).thumbnail_url
        out.images.extend(protos)
        return out

    async def create(self, user: User | None, title: str, description: str) -> manager_pb2.Album:
        if user is None:
            raise errors.Unauthenticated("albums need an account")
        title = checked(title, "album title")
        description = checked(description, "description", multiline=True)
        if not 1 <= len(title) <= MAX_TITLE:
            raise errors.BadRequest(f"album title must be 1-{MAX_TITLE} characters")
        if len(description) > MAX_DESCRIPTION:
            raise errors.BadRequest(f"description longer than {MAX_DESCRIPTION} characters")
        async with self.sessions() as s:
            album = Album(id=str(ULID()), slug=new_slug(), user_id=user.id, title=title,
                          description=description)
            s.add(album)
            await s.commit()
            album = await self._album(s, album.slug)
            return await self.to_proto(s, album, user, with_images=True)

    async def get(self, slug: str, user: User | None) -> manager_pb2.Album:
        async with self.sessions() as s:
            return await self.to_proto(s, await self._album(s, slug), user, with_images=True)

    async def check_changeable(self, user: User | None, slug: str) -> None:
        """Raise unless ``user`` may change the album ``slug`` (its owner or an admin): NotFound for
        no such album, Forbidden for another user's, Unauthenticated without a user. One query for
        the owner's id: none of the album's images is read (a check before an upload adds one)."""
        if user is None:
            raise errors.Unauthenticated("albums need an account")
        async with self.sessions() as s:
            owner_id = (await s.execute(select(Album.user_id).where(Album.slug == slug))).scalar_one_or_none()
        if owner_id is None:
            raise errors.NotFound("no such album")
        if user.role != "admin" and user.id != owner_id:
            raise errors.Forbidden("only the owner changes an album")

    async def list_for(self, user: User | None, limit: int, before: str) -> list[manager_pb2.Album]:
        if user is None:
            raise errors.Unauthenticated("listing albums needs a user")
        async with self.sessions() as s:
            q = select(Album).where(Album.user_id == user.id).order_by(Album.id.desc())
            cursor = await before_id(s, Album, before, owner_id=user.id)
            if cursor is not None:
                q = q.where(Album.id < cursor)
            rows = (await s.execute(q.limit(max(1, min(limit or 50, 200))))).scalars().all()
            return [await self.to_proto(s, a, user, with_images=False) for a in rows]

    async def _own_image(self, s: AsyncSession, slug: str, user: User | None) -> Image:
        img = (await s.execute(select(Image).where(Image.slug == slug))).scalar_one_or_none()
        if img is None or not can_see(user, img):
            raise errors.NotFound(f"no such image {slug[:64]!r}")
        if not can_manage(user, img):
            raise errors.Forbidden("only your own images can go in your albums")
        return img

    async def _album_image(self, s: AsyncSession, album: Album, slug: str, user: User | None, *,
                           visible: bool) -> Image:
        """Image ``slug`` of ``album`` (whoever's it is, as its owner may remove any; ``visible``: only one
        ``user`` can see, as for a cover), or else :meth:`_own_image`'s answer (NotFound, Forbidden)."""
        img = (await s.execute(select(Image).where(Image.slug == slug))).scalar_one_or_none()
        if (img is not None and (not visible or can_see(user, img))
                and await s.get(AlbumImage, (album.id, img.id)) is not None):
            return img
        return await self._own_image(s, slug, user)

    async def update(
        self, user: User | None, req: manager_pb2.UpdateAlbumRequest
    ) -> manager_pb2.Album:
        """Apply ``req`` (title, description, images added and removed, cover) as ``user``; the album as it
        is then. Raises NotFound (no such album, or image), Forbidden (another's album; adding another's
        image), BadRequest (text rules, :data:`MAX_ALBUM_IMAGES`, a cover not in the album). A commit that
        meets a concurrent change (``IntegrityError``: the same image added by another request, or an image
        deleted; ``StaleDataError``: the album deleted) is tried again from the start, up to
        :data:`UPDATE_ATTEMPTS` times, so it answers as after that change: adding an image already there
        is nothing, a deleted album or image is NotFound."""
        for _ in range(UPDATE_ATTEMPTS - 1):
            try:
                return await self._update(user, req)
            except (IntegrityError, StaleDataError) as exc:
                logger.info("album %s changed under an update (%s); trying it again", req.slug[:64],
                            type(exc).__name__)
        return await self._update(user, req)  # the last attempt: its error is the answer

    async def _update(self, user: User | None, req: manager_pb2.UpdateAlbumRequest) -> manager_pb2.Album:
        """One attempt of :meth:`update`."""
        async with self.sessions() as s:
            album = await self._album(s, req.slug)
            if not _owns(user, album):
                raise errors.Forbidden("only the owner changes an album")
            # a value equal to the stored one is kept as it is, even one the text rules now refuse
            # (stored before a rule came: see nodes.manager.library.Library._checked_text)
            if req.HasField("title") and not same_text(req.title, album.title):
                title = checked(req.title, "album title")
                if not 1 <= len(title) <= MAX_TITLE:
                    raise errors.BadRequest(f"album title must be 1-{MAX_TITLE} characters")
                album.title = title
            if req.HasField("description") and not same_text(req.description, album.description):
                description = checked(req.description, "description", multiline=True)
                if len(description) > MAX_DESCRIPTION:
                    raise errors.BadRequest(f"description longer than {MAX_DESCRIPTION} characters")
                album.description = description
            for slug in req.add_images:
                img = await self._own_image(s, slug, user)
                exists = await s.get(AlbumImage, (album.id, img.id))
                if exists is None:
                    count = await s.scalar(
                        select(func.count()).select_from(AlbumImage).where(AlbumImage.album_id == album.id)
                    )
                    if (count or 0) >= MAX_ALBUM_IMAGES:
                        raise errors.BadRequest(f"an album holds at most {MAX_ALBUM_IMAGES} images")
                    s.add(AlbumImage(album_id=album.id, image_id=img.id))
                    await s.flush()
            for slug in req.remove_images:
                img = await self._album_image(s, album, slug, user, visible=False)
                await s.execute(
                    delete(AlbumImage).where(AlbumImage.album_id == album.id, AlbumImage.image_id == img.id)
                )
                if album.cover_image_id == img.id:
                    album.cover_image_id = None
            if req.HasField("cover_slug"):
                if req.cover_slug:
                    img = await self._album_image(s, album, req.cover_slug, user, visible=True)
                    if await s.get(AlbumImage, (album.id, img.id)) is None:
                        raise errors.BadRequest("the cover must be an image of the album")
                    album.cover_image_id = img.id
                else:
                    album.cover_image_id = None
            await s.commit()
            return await self.to_proto(s, album, user, with_images=True)

    async def delete(self, user: User | None, slug: str) -> bool:
        async with self.sessions() as s:
            album = await self._album(s, slug)
            if not _owns(user, album):
                raise errors.Forbidden("only the owner deletes an album")
            await s.delete(album)
            await s.commit()
        return True
