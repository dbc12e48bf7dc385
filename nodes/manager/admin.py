"""The admin overview: nodes with health and load, queue depth, storage use, counts, newest images."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.cursors import before_id
from nodes.manager.images import ImageViews
from nodes.manager.library import is_admin_user
from nodes.manager.objects import Objects
from nodes.manager.registry import Registry
from pixelfox import errors
from pixelfox.db.models import AbuseReport, Image, User
from pixelfox.queue import JobQueue
from pixelfox.v1 import common_pb2, manager_pb2


class Admin:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: Registry,
        queue: JobQueue,
        views: ImageViews,
        objects: Objects,
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.queue = queue
        self.views = views
        self.objects = objects

    async def overview(
        self, caller: User | None, recent: int, before: str = ""
    ) -> manager_pb2.AdminOverviewResponse:
        """Everything the admin dashboard shows; Forbidden unless ``caller`` is an admin user."""
        if not is_admin_user(caller):
            raise errors.Forbidden("only admins see the overview")
        recs = await self.registry.all(0)
        out = manager_pb2.AdminOverviewResponse(
            nodes=[self.registry.to_proto(r) for r in recs],
            queue_depth=await self.queue.depth(),
            dead_letters=await self.queue.dead_count(),
            pending_deletes=await self.objects.pending_count(),
        )
        stores = [r for r in recs if r.role == common_pb2.NODE_ROLE_STORAGE and self.registry.healthy(r)]
        out.storage_used_bytes = sum(r.in_use for r in stores)
        out.storage_free_bytes = self.registry.free_bytes(stores)
        async with self.sessions() as s:
            out.users = int(await s.scalar(select(func.count()).select_from(User)) or 0)
            out.images = int(await s.scalar(select(func.count()).select_from(Image)) or 0)
            out.image_bytes = int(await s.scalar(select(func.coalesce(func.sum(Image.bytes), 0))) or 0)
            out.open_reports = int(
                await s.scalar(select(func.count()).select_from(AbuseReport).where(AbuseReport.status == "open"))
                or 0
            )
            q = select(Image).order_by(Image.created_at.desc(), Image.id.desc()).limit(max(1, min(recent or 20, 200)))
            cursor = await before_id(s, Image, before)
            if cursor is not None:
                q = q.where(Image.id < cursor)
            out.recent_images.extend(await self.views.to_protos(s, (await s.execute(q)).scalars().all()))
        return out
