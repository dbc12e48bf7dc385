"""One job: read the original, run the Rust core, write every variant, describe the result.

A variant's key is its content-addressed :func:`~pixelfox.storage.keys.variant_key`, under ``p/<salt>/``
(:func:`~pixelfox.storage.keys.private_key`) when the job names a private image's salt (``Job.private_salt``):
a private image's variants are never stored under a public key."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client import Histogram

from pixelfox import errors, failpoints, imaging
from pixelfox.storage.client import StorageClient
from pixelfox.storage.keys import checked_salt, keyed_for, variant_key
from pixelfox.storage.replicate import write_all
from pixelfox.v1 import common_pb2, manager_pb2

logger = logging.getLogger(__name__)

STEP_SECONDS = Histogram("pixelfox_proc_step_duration_seconds", "time per job step (s)", ["step"])


def job_variant_key(job: manager_pb2.Job, v: imaging.Variant) -> str:
    """The key variant ``v`` of ``job`` is stored and reported under: its public key, or with
    ``job.private_salt`` (checked by :meth:`Processor.run` first) its ``p/<salt>/`` copy's."""
    return keyed_for(variant_key(job.sha256, job.recipe_version, v.name, v.format), job.private_salt)


@dataclass(frozen=True)
class JobOutcome:
    result: manager_pb2.JobResult | None = None
    failure: manager_pb2.JobFailure | None = None


class Processor:
    """Runs jobs on a thread pool of ``workers`` threads (the core releases the GIL)."""

    def __init__(self, secret: str, workers: int, recipe: imaging.Recipe, limits: imaging.Limits) -> None:
        self.secret = secret
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pixelfox-proc")
        self.recipe = recipe
        self.limits = limits
        self.recycled = 0  # pools replaced after a job overran its time limit

    def _limits_for(self, deadline_s: float) -> tuple[imaging.Limits, str]:
        """The core's limits for a job with ``deadline_s`` (seconds, 0 = none) and a phrase naming the
        time limit that applies: the shorter of the per-image limit (``Limits.timeout_s``, 0 = none)
        and the job's deadline. ``timeout_s`` 0 in the result means no limit at all."""
        per_image = self.limits.timeout_s
        if deadline_s > 0 and (per_image <= 0 or deadline_s < per_image):
            return (dataclasses.replace(self.limits, timeout_s=deadline_s),
                    f"{deadline_s:g} s job time limit (PIXELFOX_JOB_TIMEOUT_S on the manager)")
        return self.limits, f"{per_image:g} s per-image time limit (PIXELFOX_LIMITS__PROCESS_TIMEOUT_S)"

    def _recycle(self) -> None:
        """Give the pool fresh threads: the overrunning call cannot be interrupted from Python, so its
        thread is left to finish on the old pool (which is shut down without waiting) and no new job
        queues behind it."""
        old, self.pool = self.pool, ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="pixelfox-proc")
        old.shutdown(wait=False, cancel_futures=False)
        self.recycled += 1

    async def _process(self, data: bytes, recipe: imaging.Recipe, job: manager_pb2.Job) -> imaging.ProcessResult:
        """Run the core under the shorter of the per-image and the job time limit.

        Raises :class:`pixelfox.errors.Timeout` naming that limit when it is passed, and the core's
        other :class:`imaging.ImageError` unchanged."""
        loop = asyncio.get_running_loop()
        limits, limit_name = self._limits_for(job.deadline_s)
        call = loop.run_in_executor(self.pool, imaging.process_with_original, data, recipe, limits)
        # The core stops itself between steps; Python only backs it up, for one step that runs far over.
        wait_s = limits.timeout_s + max(5.0, limits.timeout_s / 2) if limits.timeout_s > 0 else None
        try:
            return await asyncio.wait_for(call, wait_s)
        except imaging.Timeout as exc:
            if exc.elapsed_s is None:
                raise errors.Timeout(f"processing stopped: over the {limit_name}") from None
            raise errors.Timeout(f"processing stopped after {exc.elapsed_s:.1f} s during {exc.step}: "
                                 f"over the {limit_name}") from None
        except TimeoutError:
            self._recycle()
            raise errors.Timeout(f"processing took longer than the {limit_name}") from None

    async def _fetch(self, job: manager_pb2.Job) -> bytes:
        last: Exception = errors.Unavailable("no storage node holds the original")
        for node in job.source_nodes:
            client = StorageClient(node.grpc_address, self.secret)
            try:
                data = await client.get(job.original_key)
                if hashlib.sha256(data).hexdigest() != job.sha256:
                    raise errors.ChecksumMismatch(f"original on {node.node_id} does not match its SHA-256")
                return data
            except errors.PixelfoxError as exc:
                logger.warning("reading %s from %s failed: %s", job.original_key, node.node_id, exc)
                last = exc
            finally:
                await client.close()
        raise last

    async def _store(self, job: manager_pb2.Job, variants: tuple[imaging.Variant, ...],
                     stored: dict[str, tuple[int, str]]) -> list[str]:
        """Write every variant to every target node; ``stored`` gets (size, sha256) of keys that already
        held other bytes. Returns the ids of the nodes that took all variants."""

        async def put_all(node: common_pb2.Node) -> str:
            client = StorageClient(node.grpc_address, self.secret)
            try:
                for v in variants:
                    key = job_variant_key(job, v)
                    try:
                        await client.put(key, v.data, content_type=v.mime, sha256=hashlib.sha256(v.data).hexdigest())
                    except errors.AlreadyExists:
                        # A re-run whose encoder gave other bytes: the key's first bytes stay (keys
                        # are immutable) and the result reports what is stored.
                        st = await client.stat(key)
                        stored[key] = (st.size, st.sha256)
                return node.node_id
            finally:
                await client.close()

        # every healthy target, transient failures retried; fewer than all = under-replicated (repair)
        return await write_all(list(job.target_nodes), put_all, what=f"variants of {job.image_id}")

    async def run(self, job: manager_pb2.Job) -> JobOutcome:
        """Process ``job``; bad input is a permanent failure, anything else may be retried.

        A ``private_salt`` that is not 32 hex digits is a permanent failure (``bad-request``) before anything
        is read or written: its variants must not go under public keys, nor under keys no one can name."""
        start = time.perf_counter()
        if job.private_salt:
            try:
                checked_salt(job.private_salt)
            except errors.BadRequest as exc:
                logger.warning("job %s image %s: refused: its private_salt is malformed", job.job_id, job.image_id)
                return JobOutcome(failure=manager_pb2.JobFailure(
                    job_id=job.job_id, lease_id=job.lease_id, code=exc.code, permanent=True,
                    message=f"the job's private salt is malformed ({exc.message}); nothing was processed"))
        try:
            data = await self._fetch(job)
            t = time.perf_counter()
            STEP_SECONDS.labels("fetch").observe(t - start)
            recipe = dataclasses.replace(self.recipe, version=job.recipe_version or self.recipe.version)
            await failpoints.pause("before-process")
            out = await self._process(data, recipe, job)
            STEP_SECONDS.labels("process").observe(time.perf_counter() - t)
            t = time.perf_counter()
            stored: dict[str, tuple[int, str]] = {}
            nodes = await self._store(job, out.variants, stored)
            failpoints.hit("after-variant-put")
            STEP_SECONDS.labels("store").observe(time.perf_counter() - t)
            await failpoints.pause("before-result")
        except imaging.ImageError as exc:
            err = errors.from_image_error(exc)
            transient = getattr(exc, "code", "") == "timeout"  # over the time limit: retried, then dead-lettered
            return JobOutcome(failure=manager_pb2.JobFailure(
                job_id=job.job_id, lease_id=job.lease_id, code=err.code, message=err.message,
                permanent=not transient))
        except Exception as exc:
            code = exc.code if isinstance(exc, errors.PixelfoxError) else "internal"
            if code == "internal":
                logger.exception("job %s failed", job.job_id)
            return JobOutcome(failure=manager_pb2.JobFailure(
                job_id=job.job_id, lease_id=job.lease_id, code=code, message=str(exc), permanent=False))
        result = manager_pb2.JobResult(
            job_id=job.job_id, lease_id=job.lease_id, width=out.width, height=out.height,
            storage_node_ids=nodes, seconds=time.perf_counter() - start,
        )
        result.exif.update(out.exif)
        if out.gps is not None:
            result.location.CopyFrom(common_pb2.GeoPoint(latitude=out.gps[0], longitude=out.gps[1]))
        for v in out.variants:
            key = job_variant_key(job, v)
            size, sha = stored.get(key, (len(v.data), hashlib.sha256(v.data).hexdigest()))
            result.variants.append(common_pb2.Variant(
                name=v.name, format=v.format, width=v.width, height=v.height, bytes=size, key=key,
                frames=v.frames, sha256=sha,
            ))
        return JobOutcome(result=result)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
