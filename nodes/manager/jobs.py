"""Job administration (issue 7): what ``pixelfox jobs``, ``pixelfox reprocess`` and the web admin see.

Reads the queue (both lanes, the delayed set, the dead letters, the pending entries) and the
dispatcher's in-memory view of which processing node runs what; writes only through
:class:`~pixelfox.queue.JobQueue`. No gRPC here; :mod:`nodes.manager.jobs_rpc` is the face.
"""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.dispatch import Dispatcher
from pixelfox import errors, ids
from pixelfox.db.engine import begin_write
from pixelfox.db.models import Image
from pixelfox.db.outbox import OutboxEntry
from pixelfox.queue import JobQueue, QueuedJob
from pixelfox.v1 import jobs_pb2

S = jobs_pb2.JobState


def _info(job: QueuedJob, state: int, **extra: object) -> jobs_pb2.JobInfo:
    return jobs_pb2.JobInfo(
        job_id=job.entry_id, state=state, image_id=job.image_id, attempt=job.attempt,  # type: ignore[arg-type]
        lost=job.lost, lane=job.lane, kind=job.kind, reason=job.reason, requires_gpu=job.gpu,
        estimated_cpu_s=job.cpu, age_s=max(0.0, time.time() - job.enqueued_at) if job.enqueued_at else 0.0,
        **extra,  # type: ignore[arg-type]
    )


class JobAdmin:
    """List, replay and re-run jobs; ``recipe_version`` is the manager's current variant recipe."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], queue: JobQueue, dispatcher: Dispatcher,
                 recipe_version: int) -> None:
        self.sessions = sessions
        self.queue = queue
        self.dispatcher = dispatcher
        self.recipe_version = recipe_version

    async def list_jobs(self, states: list[int], limit: int) -> jobs_pb2.ListJobsResponse:
        """Jobs by state, newest dead letters first; counts cover every job, ``limit`` caps the rows per state."""
        limit = min(max(limit, 1), 1000) if limit else 100
        want = set(states) or {S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING, S.JOB_STATE_DELAYED, S.JOB_STATE_DEAD}
        nodes = {f.job.entry_id: w.node_id for w in self.dispatcher.workers.values() for f in w.inflight.values()}
        out = jobs_pb2.ListJobsResponse()
        rows: list[jobs_pb2.JobInfo] = []
        for lane in ("interactive", "batch"):
            pending = await self.queue.pending(lane, 10_000)
            for job in await self.queue.entries(lane, 10_000):
                if job.entry_id in pending:
                    out.running += 1
                    consumer, _idle = pending[job.entry_id]
                    if S.JOB_STATE_RUNNING in want:
                        rows.append(_info(job, S.JOB_STATE_RUNNING, node_id=nodes.get(job.entry_id, ""),
                                          consumer=consumer))
                else:
                    out.queued += 1
                    if S.JOB_STATE_QUEUED in want:
                        rows.append(_info(job, S.JOB_STATE_QUEUED))
        now = time.time()
        for job, due in await self.queue.delayed(10_000):
            out.delayed += 1
            if S.JOB_STATE_DELAYED in want:
                rows.append(_info(job, S.JOB_STATE_DELAYED, due_in_s=max(0.0, due - now)))
        out.dead = await self.queue.dead_count()
        if S.JOB_STATE_DEAD in want:
            rows.extend(_info(job, S.JOB_STATE_DEAD) for job in await self.queue.dead(limit))
        per_state: dict[int, int] = {}
        for r in rows:
            per_state[r.state] = per_state.get(r.state, 0) + 1
            if per_state[r.state] <= limit:
                out.jobs.append(r)
        await self._slugs(list(out.jobs))
        return out

    async def _slugs(self, rows: list[jobs_pb2.JobInfo]) -> None:
        image_ids = {r.image_id for r in rows}
        if not image_ids:
            return
        async with self.sessions() as s:
            slugs = dict((await s.execute(select(Image.id, Image.slug).where(Image.id.in_(image_ids)))).tuples().all())
        for r in rows:
            r.image_slug = slugs.get(r.image_id, "")

    async def retry(self, job_id: str) -> jobs_pb2.JobInfo:
        """Replay a dead letter (by entry id) or re-run an image's processing (by slug: its newest
        dead letter is replayed and older ones dropped). BadRequest for a ready image or one whose
        job is already queued or running; NotFound for neither an entry nor an image."""
        if not ids.ENTRY_ID.fullmatch(job_id):
            async with self.sessions() as s:
                img = (await s.execute(select(Image).where(Image.slug == job_id))).scalar_one_or_none()
            if img is None:
                raise errors.NotFound(f"no dead-letter job or image {job_id}")
            if img.status == "ready":  # its processing job would be dropped: nothing to finish
                raise errors.BadRequest(f"image {job_id} is ready; `pixelfox reprocess {job_id}` makes its "
                                        "variants again")
            if (await self.queue.known([img.id]))[0]:
                raise errors.BadRequest(f"image {job_id} already has a job queued or running (pixelfox jobs)")
            dead = [d for d in await self.queue.dead_of(img.id) if d.kind == "process_image"]
            if not dead:  # processing with no job anywhere, or failed long ago: a new job
                await self._reopen(img.id, "process_image")
                entry = await self.queue.enqueue(img.id)
                return await self._queued(QueuedJob(entry, img.id, enqueued_at=time.time()))
            await self.queue.forget_dead([d.entry_id for d in dead[1:]])
            job_id = dead[0].entry_id
        letter = await self.queue.dead_job(job_id)
        if letter is None:
            raise errors.NotFound(f"no dead-letter job {job_id}")
        # the image goes back to processing before the job is queued: a dispatcher that took the
        # job first would find the image still failed and drop the job without a word
        await self._reopen(letter.image_id, letter.kind)
        job = await self.queue.revive(job_id)
        if job is None:
            raise errors.NotFound(f"no dead-letter job {job_id} (retried meanwhile)")
        return await self._queued(job)

    async def discard(self, job_id: str) -> int:
        """Remove a dead letter (by entry id) or every dead letter of an image (by slug) without running
        it: the admin gave up on it (``pixelfox jobs discard``). Returns how many went; NotFound when
        there was none. The image stays as it is (failed, most likely; deleting it is up to its owner)."""
        if ids.ENTRY_ID.fullmatch(job_id):
            if await self.queue.dead_job(job_id) is None:
                raise errors.NotFound(f"no dead-letter job {job_id}")
            await self.queue.forget_dead([job_id])
            return 1
        async with self.sessions() as s:
            image_id = await s.scalar(select(Image.id).where(Image.slug == job_id))
        gone = await self.queue.forget_dead_of(image_id) if image_id else 0
        if not gone:
            raise errors.NotFound(f"no dead-letter job {job_id}" if image_id is None
                                  else f"image {job_id} has no dead-letter job")
        return gone

    async def _queued(self, job: QueuedJob) -> jobs_pb2.JobInfo:
        """Wake the dispatcher for ``job`` (just queued) and describe it."""
        self.dispatcher.wake.set()
        info = _info(job, S.JOB_STATE_QUEUED)
        await self._slugs([info])
        return info

    async def _reopen(self, image_id: str, kind: str) -> None:
        """A failed image goes back to processing, with its outbox row, so the replay converges too."""
        if kind != "process_image":
            return
        async with self.sessions() as s:
            await begin_write(s)
            img = await s.get(Image, image_id, with_for_update={"of": Image})
            if img is None:
                raise errors.NotFound("the job's image is gone; `pixelfox jobs discard ID` removes its dead letter")
            if img.status == "failed":
                img.status, img.error_code, img.error_message = "processing", "", ""
            if img.status == "processing" and await s.get(OutboxEntry, image_id) is None:
                s.add(OutboxEntry(image_id=image_id))
            await s.commit()

    async def reprocess(self, req: jobs_pb2.ReprocessRequest) -> jobs_pb2.ReprocessResponse:
        """Queue re-runs of ready images in the batch lane (the caller paces the calls: ``--rate``).

        Images that already have a live job (queued, running or delayed) are not queued again; the
        answer names them in ``skipped``. ``next`` is the last image id looked at, so a paged
        ``--all`` run goes on past skipped images. Errors: BadRequest for a recipe version outside
        1..2**31-1, NotFound for named slugs that are not ready images.
        """
        recipe = req.recipe_version or self.recipe_version
        if not 1 <= recipe < 2**31:  # a version names the variants' key prefix (r<version>/): any positive one
            raise errors.BadRequest(f"recipe version {recipe} is out of range: give a positive number")
        limit = min(max(req.limit or 100, 1), 1000)
        async with self.sessions() as s:
            q = select(Image.id, Image.slug).where(Image.status == "ready")
            if req.all:
                if req.after:
                    if not ids.ULID.fullmatch(req.after):  # a typo would match nothing, or everything after it
                        raise errors.BadRequest(f"after must be an image id (26 letters and digits), not {req.after!r}")
                    q = q.where(Image.id > req.after)
                rows = (await s.execute(q.order_by(Image.id).limit(limit))).tuples().all()
            else:
                rows = (await s.execute(q.where(Image.slug.in_(list(req.slugs))))).tuples().all()
                missing = set(req.slugs) - {slug for _id, slug in rows}
                if missing:
                    raise errors.NotFound(f"not found or not ready: {', '.join(sorted(missing))}")
        # an image with a live job (a reprocess still waiting in the batch lane, or any running job)
        # is left alone, checked and queued in one step: `reprocess --all` run twice, even at once,
        # queues it once
        queued, skipped = [], []
        for image_id, slug in rows:
            entry = await self.queue.enqueue_if_idle(image_id, lane="batch", kind="reprocess_image", recipe=recipe,
                                                     gpu=req.requires_gpu)
            (queued if entry is not None else skipped).append(slug)
        self.dispatcher.wake.set()
        more = req.all and len(rows) == limit
        return jobs_pb2.ReprocessResponse(queued=len(queued), next=rows[-1][0] if more else "", slugs=queued,
                                          skipped=skipped)
