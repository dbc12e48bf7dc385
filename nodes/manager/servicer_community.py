"""gRPC face of issue 5's manager RPCs (image management, albums, reports, account, admin).

A mixin of :class:`nodes.manager.servicer.ManagerServicer`: protobuf in, service calls, protobuf
out. Every method resolves the caller with ``svc.principal``; the acting *user* decides access
(a cluster caller without an acting user is anonymous here, see :mod:`nodes.manager.library`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from nodes.manager.account_ops import user_proto
from nodes.manager.images import iso
from nodes.manager.library import Changes
from pixelfox.db.models import User
from pixelfox.grpcx.server import caller, rpc
from pixelfox.v1 import common_pb2, manager_pb2

if TYPE_CHECKING:
    from nodes.manager.service import ManagerService

Ctx = grpc.aio.ServicerContext


class ManagerCommunityServicer:
    svc: ManagerService

    async def _user(self) -> User | None:
        return (await self.svc.principal(caller())).user

    @rpc()
    async def UpdateImage(self, req: manager_pb2.UpdateImageRequest, ctx: Ctx) -> common_pb2.Image:
        ch = Changes(
            title=req.title if req.HasField("title") else None,
            description=req.description if req.HasField("description") else None,
            visibility=req.visibility if req.HasField("visibility") else None,
            keep_metadata=req.keep_metadata if req.HasField("keep_metadata") else None,
        )
        return await self.svc.library.update(req.slug, await self._user(), ch)

    @rpc()
    async def DeleteImage(self, req: manager_pb2.DeleteImageRequest, ctx: Ctx) -> manager_pb2.DeleteImageResponse:
        deleted, pending = await self.svc.library.delete(req.slug, await self._user(), req.deletion_token)
        return manager_pb2.DeleteImageResponse(deleted=True, objects_deleted=deleted, objects_pending=pending)

    @rpc()
    async def CreateAlbum(self, req: manager_pb2.CreateAlbumRequest, ctx: Ctx) -> manager_pb2.Album:
        return await self.svc.albums.create(await self._user(), req.title, req.description)

    @rpc()
    async def GetAlbum(self, req: manager_pb2.GetAlbumRequest, ctx: Ctx) -> manager_pb2.Album:
        return await self.svc.albums.get(req.slug, await self._user())

    @rpc()
    async def CheckAlbum(self, req: manager_pb2.CheckAlbumRequest, ctx: Ctx) -> manager_pb2.CheckAlbumResponse:
        await self.svc.albums.check_changeable(await self._user(), req.slug)
        return manager_pb2.CheckAlbumResponse()

    @rpc()
    async def ListAlbums(self, req: manager_pb2.ListAlbumsRequest, ctx: Ctx) -> manager_pb2.ListAlbumsResponse:
        albums = await self.svc.albums.list_for(await self._user(), req.limit, req.before)
        return manager_pb2.ListAlbumsResponse(albums=albums)

    @rpc()
    async def UpdateAlbum(self, req: manager_pb2.UpdateAlbumRequest, ctx: Ctx) -> manager_pb2.Album:
        return await self.svc.albums.update(await self._user(), req)

    @rpc()
    async def DeleteAlbum(self, req: manager_pb2.DeleteAlbumRequest, ctx: Ctx) -> manager_pb2.DeleteAlbumResponse:
        return manager_pb2.DeleteAlbumResponse(deleted=await self.svc.albums.delete(await self._user(), req.slug))

    @rpc()
    async def ReportImage(self, req: manager_pb2.ReportImageRequest, ctx: Ctx) -> manager_pb2.AbuseReport:
        return await self.svc.reports.report(await self._user(), req.slug, req.reason)

    @rpc()
    async def ListReports(self, req: manager_pb2.ListReportsRequest, ctx: Ctx) -> manager_pb2.ListReportsResponse:
        reports = await self.svc.reports.list(await self._user(), req.include_resolved, req.limit)
        return manager_pb2.ListReportsResponse(reports=reports)

    @rpc()
    async def ResolveReport(self, req: manager_pb2.ResolveReportRequest, ctx: Ctx) -> manager_pb2.AbuseReport:
        return await self.svc.reports.resolve(await self._user(), req.id, req.delete_image)

    @rpc()
    async def ListApiKeys(self, req: manager_pb2.ListApiKeysRequest, ctx: Ctx) -> manager_pb2.ListApiKeysResponse:
        p = await self.svc.principal(caller())
        return manager_pb2.ListApiKeysResponse(keys=await self.svc.account_ops.list_keys(p.user, p.cluster,
                                                                                        req.user_name))

    @rpc()
    async def RevokeApiKey(
        self, req: manager_pb2.RevokeApiKeyRequest, ctx: Ctx
    ) -> manager_pb2.RevokeApiKeyResponse:
        p = await self.svc.principal(caller())
        revoked_at, already = await self.svc.account_ops.revoke_key(p.user, req.id, p.cluster)
        return manager_pb2.RevokeApiKeyResponse(revoked=True, revoked_at=iso(revoked_at), already_revoked=already)

    @rpc()
    async def ChangePassword(self, req: manager_pb2.ChangePasswordRequest, ctx: Ctx) -> manager_pb2.User:
        user = await self.svc.account_ops.change_password(await self._user(), req.old_password, req.new_password)
        return user_proto(user)

    @rpc()
    async def ListUsers(self, req: manager_pb2.ListUsersRequest, ctx: Ctx) -> manager_pb2.ListUsersResponse:
        p = await self.svc.principal(caller())
        users, total = await self.svc.account_ops.list_users(p.user, req.limit, req.offset, p.cluster)
        return manager_pb2.ListUsersResponse(users=users, total=total)

    @rpc()
    async def SetUserDisabled(self, req: manager_pb2.SetUserDisabledRequest, ctx: Ctx) -> manager_pb2.User:
        who = caller()
        p = await self.svc.principal(who)
        holder = await self.svc.key_holder(who) if req.disabled else None
        user, unchanged = await self.svc.account_ops.set_disabled(p.user, p.cluster, req.name, req.disabled, holder)
        reply = user_proto(user)
        reply.unchanged = unchanged
        return reply

    @rpc()
    async def AdminOverview(
        self, req: manager_pb2.AdminOverviewRequest, ctx: Ctx
    ) -> manager_pb2.AdminOverviewResponse:
        return await self.svc.admin.overview(await self._user(), req.recent_images, req.images_before)
