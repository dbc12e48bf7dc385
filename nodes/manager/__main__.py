"""``python -m nodes.manager``: run the manager node."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import IO

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from nodes.manager import liveness
from nodes.manager.config import ManagerSettings
from nodes.manager.expiry import ExpirySweeper
from nodes.manager.jobs_rpc import JobServicer
from nodes.manager.ops import ManagerOps
from nodes.manager.registry import Registry
from nodes.manager.repair import ReplicaRepair
from nodes.manager.service import ManagerService
from nodes.manager.servicer import ManagerServicer
from nodes.manager.tiers import TierMover
from pixelfox import errors, readmodel, redisx
from pixelfox.db import generation
from pixelfox.db.checks import check_database
from pixelfox.db.engine import create_schema, make_engine, session_factory
from pixelfox.db.inuse import APPLICATION_NAME, mark_in_use
from pixelfox.db.replicas import make_replica_engines, routing_sessions
from pixelfox.grpcx.server import GrpcServer
from pixelfox.node import Load, NodeIdentity, node_main, run_node, start_metrics
from pixelfox.queue import JobQueue
from pixelfox.v1 import common_pb2, jobs_pb2_grpc, manager_pb2_grpc

logger = logging.getLogger("nodes.manager")
#: the open lock file marking this manager's SQLite database as in use (:func:`open_database`)
_IN_USE: IO[bytes] | None = None


async def open_database(settings: ManagerSettings) -> AsyncEngine:
    """The engine of ``settings.database``, its schema brought up to date (a new SQLite file is
    logged). Raises SystemExit with one line naming PIXELFOX_DATABASE__URL and the reason when the
    database does not answer (refused, unknown host, no answer within 10 s, wrong password or
    database name), a SQLite file's folder does not exist or its schema revision is newer than
    this code's, instead of a traceback.

    The database is marked as a running manager's for the life of the process
    (:mod:`pixelfox.db.inuse`), so ``pixelfox restore`` and ``migrate-db`` refuse to write over it."""
    global _IN_USE
    try:
        new = await check_database(settings.database.url)
    except errors.PixelfoxError as exc:
        raise SystemExit(exc.message) from None
    if new:
        logger.info("new SQLite database at %s", new)
    try:
        _IN_USE = mark_in_use(settings.database.url)
    except OSError as exc:  # a folder it may read but not write: the guard is lost, the manager is not
        logger.warning("cannot mark the database as in use (pixelfox restore will not see it): %s", exc)
    engine = make_engine(settings.database, application_name=APPLICATION_NAME)
    try:
        await create_schema(engine)
    except errors.PixelfoxError as exc:  # a database a newer PixelFox wrote (pixelfox.db.migrate.check_known)
        raise SystemExit(exc.message) from None
    return engine


def ready_after_cache(ops: ManagerOps, redis: aioredis.Redis, engine: AsyncEngine) -> Callable[[], Awaitable[bool]]:
    """The manager's readiness check: ``ops.ready`` (Redis and the database answer), and, once, the
    Redis read model made to follow this database's generation (:func:`pixelfox.readmodel.follow_database`:
    a restore, or another database, empties the image cache before the manager serves). Until that
    succeeds the manager is not ready; a manager started before Redis waits for it as before."""
    followed = False

    async def ready() -> bool:
        nonlocal followed
        if not await ops.ready():
            return False
        if not followed:
            try:
                flushed = await readmodel.follow_database(redis, await generation.current(engine))
            except (RedisError, OSError, DBAPIError) as exc:
                logger.warning("cannot check the read model's database generation yet: %s", exc)
                return False
            if flushed is not None:  # the cached images were read from another database's contents
                logger.info("new database generation: %d read-model entries removed", flushed)
            followed = True
        return True

    return ready


async def serve(settings: ManagerSettings) -> None:
    node_id = settings.node_id or "manager1"
    engine = await open_database(settings)
    redis = redisx.connect(settings.redis)
    registry = Registry(redis, settings.node_timeout_s, alive=liveness.answers)
    queue = JobQueue(redis, consumer=node_id, lease_s=settings.lease_s, max_attempts=settings.max_attempts,
                     max_lost=settings.max_lost, backoff_base_s=settings.retry_base_s,
                     backoff_cap_s=settings.retry_cap_s)
    replicas = make_replica_engines(settings.database)  # optional read replicas (pixelfox.db.replicas)
    sessions = routing_sessions(engine, replicas) if replicas else session_factory(engine)
    svc = ManagerService(settings, sessions, registry, queue)
    server = GrpcServer(
        [(manager_pb2_grpc.add_ManagerServiceServicer_to_server, ManagerServicer(svc), "pixelfox.v1.ManagerService"),
         (jobs_pb2_grpc.add_JobServiceServicer_to_server, JobServicer(svc, svc.jobs), "pixelfox.v1.JobService")],
        host=settings.grpc.host,
        port=settings.grpc.port,
        secret=settings.cluster.secret.get_secret_value(),
        max_message_bytes=settings.grpc.max_message_bytes,
        reflection_on=settings.grpc.reflection,
    )
    host = settings.grpc.advertise_host or settings.grpc.host
    metrics_url = start_metrics(settings.grpc.host, settings.metrics_port)
    ident = NodeIdentity(common_pb2.NODE_ROLE_MANAGER, node_id, f"{host}:{server.port}", metrics_url=metrics_url)

    # health of Redis + DB, gauges, run-once sweeps
    ops = ManagerOps(node_id, redis, engine, registry, queue, keep_stopped_storage_s=settings.repair.lost_after_s)
    ops.advertise(ident.grpc_address, ident.metrics_url)  # managers list themselves in the registry

    repair = ReplicaRepair(svc.views.sessions, registry, redis, settings.cluster.secret.get_secret_value(),
                           settings.replicas, settings.repair, owner=node_id)
    tiers = TierMover(svc.views.sessions, registry, redis, settings.cluster.secret.get_secret_value(),
                      settings.replicas, settings.tiers, owner=node_id)

    try:
        expiry = ExpirySweeper(redis, svc.library)  # Chevereto/ImgBB expiration (nodes/manager/expiry.py)
        background = [expiry.run, svc.dispatcher.run, ops.run, svc.objects.run, repair.run, tiers.run]
        # SIGTERM: end the processing nodes' Work streams once idle, or the server's grace waits for them
        drain_s = max(0.0, settings.grpc.grace_s - 1.0)
        await run_node(settings, server, ident, Load, background=background,
                       ready=ready_after_cache(ops, redis, engine), on_drain=lambda: svc.dispatcher.drain(drain_s))
        await ops.leave()  # a clean stop (run_node returned): shown stopped, not as a manager down
    finally:
        await redis.aclose()
        await engine.dispose()
        for r in replicas:
            await r.dispose()


def main() -> None:
    node_main("python -m nodes.manager", "PixelFox manager node", ManagerSettings, serve, "manager1")


if __name__ == "__main__":
    main()
