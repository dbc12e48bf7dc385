"""gRPC face of the manager: protobuf in, :class:`ManagerService` calls, protobuf out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from nodes.manager.account_ops import user_proto
from nodes.manager.pools import pool_figures
from nodes.manager.registry import NodeRecord
from nodes.manager.scrub import MAX_LISTED, scrub
from nodes.manager.service import ManagerService
from nodes.manager.servicer_community import ManagerCommunityServicer
from nodes.manager.tiers import record_view
from nodes.manager.uploads import Completion
from pixelfox import errors
from pixelfox.grpcx.server import caller, rpc, rpc_stream
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc

logger = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext
#: seconds ListNodes waits for the pools' figures (with_pools) before it answers the nodes without them
POOLS_TIMEOUT_S = 3.0


class ManagerServicer(ManagerCommunityServicer, manager_pb2_grpc.ManagerServiceServicer):
    def __init__(self, svc: ManagerService) -> None:
        self.svc = svc

    # ---- membership
    @rpc(cluster=True)
    async def Register(self, req: manager_pb2.RegisterRequest, ctx: Ctx) -> manager_pb2.RegisterResponse:
        if not req.node_id or (not req.grpc_address and req.role != common_pb2.NODE_ROLE_WEB):
            raise errors.BadRequest("node_id and grpc_address are required")
        self.svc.registry.check_interval(req.node_id, req.heartbeat_interval_s)
        await self.svc.registry.register(
            NodeRecord(
                node_id=req.node_id, role=req.role, grpc_address=req.grpc_address, http_url=req.http_url,
                metrics_url=req.metrics_url, capacity=max(1, req.capacity), free_bytes=req.free_bytes,
                capabilities=list(req.capabilities), version=req.version, host=req.host,
                instance=req.instance,
            )
        )
        return manager_pb2.RegisterResponse(
            node_id=req.node_id, heartbeat_interval_s=self.svc.settings.cluster.heartbeat_interval_s
        )

    @rpc(cluster=True)
    async def Heartbeat(self, req: manager_pb2.HeartbeatRequest, ctx: Ctx) -> manager_pb2.HeartbeatResponse:
        known = await self.svc.registry.heartbeat(req.node_id, req.in_use, req.capacity, req.free_bytes, req.status,
                                                  ready=not req.not_ready, instance=req.instance)
        return manager_pb2.HeartbeatResponse(known=known)

    @rpc()
    async def ListNodes(self, req: manager_pb2.ListNodesRequest, ctx: Ctx) -> manager_pb2.ListNodesResponse:
        await self._operator("listing nodes")
        recs = await self.svc.registry.all(req.role)
        out = manager_pb2.ListNodesResponse(nodes=[self.svc.registry.to_proto(r) for r in recs])
        if req.with_pools:
            await self._pools(out, recs if not req.role else await self.svc.registry.all())
        return out

    async def _pools(self, out: manager_pb2.ListNodesResponse, recs: list[NodeRecord]) -> None:
        """Fill ``out``'s pool figures from ``recs`` (every role; :func:`nodes.manager.pools.pool_figures`); a
        failure to read them is ``pools_error``, logged: the node list is answered all the same."""
        try:
            pools, lost = await asyncio.wait_for(pool_figures(
                self.svc.sessions, self.svc.registry, recs, self.svc.settings.replicas), POOLS_TIMEOUT_S)
        except TimeoutError:
            logger.warning("the storage pools' figures took over %g s; answered without them", POOLS_TIMEOUT_S)
            out.pools_error = f"the database did not answer within {POOLS_TIMEOUT_S:g} s"
            return
        except Exception as exc:  # the database: status must still show the nodes
            logger.exception("could not read the storage pools' figures")
            out.pools_error = f"{type(exc).__name__}: {exc}"[:300]
            return
        out.pools.extend(p.to_proto() for p in pools)
        out.lost_objects, out.pools_included = lost, True

    async def _operator(self, what: str) -> None:
        """Raise Forbidden unless the caller holds the cluster credential or an admin key; ``what`` names the act."""
        if not (await self.svc.principal(caller())).is_admin:
            raise errors.Forbidden(f"{what} needs the cluster credential or an admin key")

    @rpc()
    async def SetNodeMaintenance(self, req: manager_pb2.SetNodeMaintenanceRequest, ctx: Ctx) -> common_pb2.Node:
        await self._operator("maintenance mode")
        rec = await self.svc.registry.set_maintenance(req.node_id, req.maintenance)
        return self.svc.registry.to_proto(rec)

    @rpc()
    async def ForgetNode(self, req: manager_pb2.ForgetNodeRequest, ctx: Ctx) -> manager_pb2.ForgetNodeResponse:
        await self._operator("forgetting a node")
        rec = await self.svc.registry.forget(req.node_id)
        try:  # at once rather than at the next housekeeping pass, which retries it if this fails
            await self.svc.objects.settle_gone()
        except Exception:
            logger.exception("clearing up after forgotten node %s failed; the next pass retries", req.node_id)
        return manager_pb2.ForgetNodeResponse(node=self.svc.registry.to_proto(rec) if rec is not None else None)

    @rpc()
    async def Scrub(self, req: manager_pb2.ScrubRequest, ctx: Ctx) -> manager_pb2.ScrubResponse:
        await self._operator("scrubbing the storage nodes")
        report = await scrub(self.svc.objects, req.node_id, fix=req.fix, limit=req.limit)
        return manager_pb2.ScrubResponse(
            nodes=[manager_pb2.ScrubNode(node_id=n.node_id, checked=n.checked, missing=n.missing,
                                         unreachable=n.unreachable, error=n.error) for n in report.nodes],
            missing=[manager_pb2.MissingCopy(key=m.key, node_id=m.node_id, image_slug=m.slug, fixed=m.fixed)
                     for m in report.missing[:MAX_LISTED]],
            fixed=report.fixed)

    @rpc(cluster=True)
    async def PlaceObject(self, req: manager_pb2.PlaceObjectRequest, ctx: Ctx) -> manager_pb2.PlaceObjectResponse:
        recs = await self.svc.registry.place(req.replicas or self.svc.settings.replicas, req.size)
        return manager_pb2.PlaceObjectResponse(nodes=[self.svc.registry.to_proto(r) for r in recs])

    # ---- uploads
    @rpc()
    async def CreateUpload(
        self, req: manager_pb2.CreateUploadRequest, ctx: Ctx
    ) -> manager_pb2.CreateUploadResponse:
        user = await self.svc.uploader(caller())
        if user is None:
            forwarded = ",".join(str(v) for k, v in ctx.invocation_metadata() or () if k == "x-forwarded-for")
            await self.svc.count_direct_anonymous(caller(), ctx.peer(), forwarded)
        return await self.svc.uploads.create(user, req.filename, req.size, req.content_type, req.expire_after_s,
                                             req.title, req.sha256, req.visibility)

    @rpc()
    async def CheckUpload(self, req: manager_pb2.CheckUploadRequest, ctx: Ctx) -> manager_pb2.CheckUploadResponse:
        await self.svc.uploads.check(await self.svc.uploader(caller()), req.size, req.body_bytes)
        return manager_pb2.CheckUploadResponse()

    @rpc(cluster=True)
    async def CompleteUpload(
        self, req: manager_pb2.CompleteUploadRequest, ctx: Ctx
    ) -> manager_pb2.CompleteUploadResponse:
        return await self.svc.uploads.complete(
            Completion(
                upload_id=req.upload_id, ticket=req.ticket, sha256=req.sha256, size=req.size, format=req.format,
                mime=req.mime, width=req.width, height=req.height, frames=req.frames,
                orientation=req.orientation, original_key=req.original_key,
                storage_node_ids=list(req.storage_node_ids), upload_node_id=req.upload_node_id,
            )
        )

    @rpc()
    async def RelocateUpload(
        self, req: manager_pb2.RelocateUploadRequest, ctx: Ctx
    ) -> manager_pb2.CreateUploadResponse:
        return await self.svc.uploads.relocate(req.upload_id, req.ticket, req.exclude_address)

    @rpc()  # the owner's (or an admin's) credentials, never a ticket
    async def RenewUpload(
        self, req: manager_pb2.RenewUploadRequest, ctx: Ctx
    ) -> manager_pb2.CreateUploadResponse:
        p = await self.svc.principal(caller())
        return await self.svc.uploads.renew(req.upload_id, p.user, p.is_admin, req.exclude_address)

    @rpc()  # the ticket, or the owner's (or an admin's) credentials
    async def AbandonUpload(
        self, req: manager_pb2.AbandonUploadRequest, ctx: Ctx
    ) -> manager_pb2.AbandonUploadResponse:
        if req.ticket:  # tus termination, from an upload node
            abandoned = await self.svc.uploads.abandon(req.upload_id, req.ticket)
            return manager_pb2.AbandonUploadResponse(abandoned=abandoned)
        p = await self.svc.principal(caller())  # the owner, without the ticket (DELETE /api/v1/uploads/<id>)
        return manager_pb2.AbandonUploadResponse(
            abandoned=await self.svc.uploads.cancel(req.upload_id, p.user, p.is_admin))

    @rpc(cluster=True)
    async def FailUpload(self, req: manager_pb2.FailUploadRequest, ctx: Ctx) -> manager_pb2.FailUploadResponse:
        return manager_pb2.FailUploadResponse(
            recorded=await self.svc.uploads.fail(req.upload_id, req.error_code, req.error_message))

    @rpc()
    async def GetUpload(self, req: manager_pb2.GetUploadRequest, ctx: Ctx) -> manager_pb2.UploadProgress:
        p = await self.svc.principal(caller())
        return await self.svc.uploads.progress(req.upload_id, p.user, p.is_admin)

    @rpc()
    async def ListUploads(self, req: manager_pb2.ListUploadsRequest, ctx: Ctx) -> manager_pb2.ListUploadsResponse:
        p = await self.svc.principal(caller())
        if p.user is None:
            raise errors.Unauthenticated("listing uploads needs a user")
        return manager_pb2.ListUploadsResponse(uploads=await self.svc.uploads.list_open(p.user))

    # ---- images
    @rpc()
    async def GetImage(self, req: manager_pb2.GetImageRequest, ctx: Ctx) -> common_pb2.Image:
        image = await self.svc.library.get(req.slug, (await self.svc.principal(caller())).user)
        await record_view(self.svc.registry.redis, image.id)  # issue 6: tier moves keep viewed images
        return image

    @rpc()
    async def ListImages(self, req: manager_pb2.ListImagesRequest, ctx: Ctx) -> manager_pb2.ListImagesResponse:
        p = await self.svc.principal(caller())
        if p.user is None:
            raise errors.Unauthenticated("listing images needs a user")
        images = await self.svc.views.list_for_user(p.user.id, req.limit, req.before)
        return manager_pb2.ListImagesResponse(images=images)

    # ---- users and keys
    @rpc()
    async def CreateUser(self, req: manager_pb2.CreateUserRequest, ctx: Ctx) -> manager_pb2.User:
        p = await self.svc.principal(caller())
        if not p.is_admin:
            raise errors.Forbidden("creating users needs the cluster credential or an admin key")
        return user_proto(await self.svc.accounts.create_user(req.name, req.password, req.admin))

    @rpc(cluster=True)
    async def VerifyPassword(self, req: manager_pb2.VerifyPasswordRequest, ctx: Ctx) -> manager_pb2.User:
        return user_proto(await self.svc.accounts.verify_password(req.name, req.password))

    @rpc(cluster=True)
    async def GetUser(self, req: manager_pb2.GetUserRequest, ctx: Ctx) -> manager_pb2.User:
        return user_proto(await self.svc.accounts.get_user(req.id))

    @rpc()
    async def CreateApiKey(
        self, req: manager_pb2.CreateApiKeyRequest, ctx: Ctx
    ) -> manager_pb2.CreateApiKeyResponse:
        p = await self.svc.principal(caller())
        if req.user_name and (p.user is None or req.user_name.lower() != p.user.name.lower()):
            if not p.is_admin:
                raise errors.Forbidden("only admins create keys for other users")
            user = await self.svc.accounts.get_user_by_name(req.user_name)
        elif p.user is not None:
            user = p.user
        else:
            raise errors.Unauthenticated("creating an API key needs a user")
        key, key_id = await self.svc.accounts.create_api_key(user, req.label)
        return manager_pb2.CreateApiKeyResponse(key=key, key_id=key_id, user_name=user.name,
                                                user_disabled=user.disabled_at is not None)

    @rpc()
    async def WhoAmI(self, req: manager_pb2.WhoAmIRequest, ctx: Ctx) -> manager_pb2.User:
        p = await self.svc.principal(caller())
        if p.user is None:
            raise errors.Unauthenticated("no user for these credentials")
        return user_proto(p.user)

    # ---- processing
    @rpc_stream(cluster=True)
    async def Work(
        self, requests: AsyncIterator[manager_pb2.WorkerMessage], ctx: Ctx
    ) -> AsyncIterator[manager_pb2.DispatchMessage]:
        async for msg in self.svc.dispatcher.serve(requests):
            yield msg
