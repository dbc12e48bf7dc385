"""Abuse reports: anyone who can see an image may report it; admins list and resolve them.

Resolving with ``delete_image`` deletes the image through :class:`~nodes.manager.library.Library`
(rows, every replica, the CDN purge hook) and marks the report ``image-deleted``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from ulid import ULID

from nodes.manager.images import ImageViews, iso
from nodes.manager.library import Library, can_see, is_admin_user
from pixelfox import errors
from pixelfox.db.models import AbuseReport, Image, User
from pixelfox.text import checked
from pixelfox.v1 import manager_pb2

MAX_REASON = 1000


class Reports:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], views: ImageViews, library: Library) -> None:
        self.sessions = sessions
        self.views = views
        self.library = library

    async def _proto(self, s: AsyncSession, r: AbuseReport) -> manager_pb2.AbuseReport:
        out = manager_pb2.AbuseReport(
            id=r.id, image_slug=r.image_slug, reason=r.reason, reporter=r.reporter.name if r.reporter else "",
            status=r.status, created_at=iso(r.created_at), resolved_at=iso(r.resolved_at),
            resolved_by=r.resolved_by,
        )
        if r.image_id:
            img = await s.get(Image, r.image_id)
            if img is not None:
                out.image_thumbnail_url = (await self.views.to_proto(s, img)).thumbnail_url
        return out

    async def report(self, user: User | None, slug: str, reason: str) -> manager_pb2.AbuseReport:
        """File a report; BadRequest for an empty or over-long reason, NotFound for an unseen image."""
        reason = checked(reason, "reason", multiline=True)
        if not 1 <= len(reason) <= MAX_REASON:
            raise errors.BadRequest(f"give a reason of 1-{MAX_REASON} characters")
        async with self.sessions() as s:
            img = (await s.execute(select(Image).where(Image.slug == slug))).scalar_one_or_none()
            if img is None or not can_see(user, img):
                raise errors.NotFound("no such image")
            r = AbuseReport(id=str(ULID()), image_id=img.id, image_slug=img.slug,
                            reporter_id=user.id if user else None, reason=reason)
            s.add(r)
            await s.commit()
            await s.refresh(r, ["reporter"])
            return await self._proto(s, r)

    async def list(self, user: User | None, include_resolved: bool, limit: int) -> list[manager_pb2.AbuseReport]:
        if not is_admin_user(user):
            raise errors.Forbidden("only admins see abuse reports")
        async with self.sessions() as s:
            q = select(AbuseReport).order_by(AbuseReport.id.desc()).limit(max(1, min(limit or 100, 500)))
            if not include_resolved:
                q = q.where(AbuseReport.status == "open")
            return [await self._proto(s, r) for r in (await s.execute(q)).scalars().all()]

    async def resolve(self, user: User | None, report_id: str, delete_image: bool) -> manager_pb2.AbuseReport:
        if user is None or not is_admin_user(user):
            raise errors.Forbidden("only admins resolve abuse reports")
        async with self.sessions() as s:
            r = await s.get(AbuseReport, report_id)
            if r is None:
                raise errors.NotFound("no such report")
            slug = r.image_slug
        status = "resolved"
        if delete_image and slug:
            try:
                await self.library.delete(slug, user)
                status = "image-deleted"
            except errors.NotFound:
                status = "image-deleted"
        async with self.sessions() as s:
            r = await s.get(AbuseReport, report_id)
            assert r is not None
            targets = [r]
            if status == "image-deleted":  # every open report of that image is settled too
                q = select(AbuseReport).where(AbuseReport.image_slug == slug, AbuseReport.status == "open")
                targets = [*(await s.execute(q)).scalars().all(), r]
            for t in targets:
                t.status, t.resolved_at, t.resolved_by = status, datetime.now(UTC), user.name
            await s.commit()
            return await self._proto(s, r)
