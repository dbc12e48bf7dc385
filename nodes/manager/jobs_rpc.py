"""gRPC face of :class:`nodes.manager.jobs.JobAdmin` (service ``pixelfox.v1.JobService``, admin only)."""

from __future__ import annotations

import grpc

from nodes.manager.jobs import JobAdmin
from nodes.manager.service import ManagerService
from pixelfox import errors
from pixelfox.grpcx.server import caller, rpc
from pixelfox.v1 import jobs_pb2, jobs_pb2_grpc

Ctx = grpc.aio.ServicerContext


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, svc: ManagerService, jobs: JobAdmin) -> None:
        self.svc = svc
        self.jobs = jobs

    async def _admin(self) -> None:
        p = await self.svc.principal(caller())
        if not p.is_admin:
            raise errors.Forbidden("job administration needs the cluster credential or an admin key")

    @rpc()
    async def ListJobs(self, req: jobs_pb2.ListJobsRequest, ctx: Ctx) -> jobs_pb2.ListJobsResponse:
        await self._admin()
        return await self.jobs.list_jobs(list(req.states), req.limit)

    @rpc()
    async def RetryJob(self, req: jobs_pb2.RetryJobRequest, ctx: Ctx) -> jobs_pb2.RetryJobResponse:
        await self._admin()
        if not req.job_id:
            raise errors.BadRequest("job_id is required (a dead-letter id or an image slug)")
        return jobs_pb2.RetryJobResponse(job=await self.jobs.retry(req.job_id))

    @rpc()
    async def DiscardJob(self, req: jobs_pb2.DiscardJobRequest, ctx: Ctx) -> jobs_pb2.DiscardJobResponse:
        await self._admin()
        if not req.job_id:
            raise errors.BadRequest("job_id is required (a dead-letter id or an image slug)")
        return jobs_pb2.DiscardJobResponse(discarded=await self.jobs.discard(req.job_id))

    @rpc()
    async def Reprocess(self, req: jobs_pb2.ReprocessRequest, ctx: Ctx) -> jobs_pb2.ReprocessResponse:
        await self._admin()
        if not req.all and not req.slugs:
            raise errors.BadRequest("name images to re-run, or pass all")
        return await self.jobs.reprocess(req)
