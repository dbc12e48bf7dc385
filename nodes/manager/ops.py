"""Operations side of the manager: dependency checks, cluster gauges, and run-once housekeeping.

* :meth:`ManagerOps.ready` — the manager's health: Redis answers ``PING`` and the database
  answers ``SELECT 1`` (each within 2 s). :func:`pixelfox.node.watch_dependencies` turns
  the gRPC health status NOT_SERVING while either is down.
* :meth:`ManagerOps.run` — every second, on every manager: list itself in the registry
  (role MANAGER, so ``pixelfox status`` shows every manager with its last "heartbeat"),
  refresh the registry (including the maintenance set the dispatcher reads) and export ``pixelfox_queue_depth``,
  ``pixelfox_queue_dead_letters``, ``pixelfox_cluster_nodes{role,status}`` and
  ``pixelfox_cluster_storage_free_bytes`` (:meth:`Registry.free_bytes`); and, on the
  one manager holding the ``registry-sweep`` lease (:mod:`pixelfox.leases`), once a minute, drop
  the nodes that stopped cleanly and those silent for longer than ``forget_after_s``
  (:meth:`Registry.sweep`).
* :meth:`ManagerOps.leave` — on a clean stop: the manager's own entry turns ``stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from prometheus_client import Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from nodes.manager.registry import NodeRecord, Registry
from pixelfox.leases import Lease, run_with_lease
from pixelfox.queue import JobQueue
from pixelfox.v1 import common_pb2

logger = logging.getLogger(__name__)

try:  # the dispatcher defines it too; one collector per name and process
    from nodes.manager.dispatch import QUEUE_DEPTH
except ImportError:  # pragma: no cover - if the dispatcher stops exporting it
    QUEUE_DEPTH = Gauge("pixelfox_queue_depth", "jobs waiting or in flight", ["queue"])
DEAD_LETTERS = Gauge("pixelfox_queue_dead_letters", "jobs in the dead-letter list", ["queue"])
NODES = Gauge("pixelfox_cluster_nodes", "registered nodes by role and status", ["role", "status"])
UP = Gauge("pixelfox_manager_dependency_up", "1 when the dependency answers", ["dependency"])
STORAGE_FREE = Gauge("pixelfox_cluster_storage_free_bytes",
                     "Bytes free for new objects on the healthy storage nodes, each filesystem counted once")

ROLES = {v: k.removeprefix("NODE_ROLE_").lower() for k, v in common_pb2.NodeRole.items() if v}
STATUSES = {v: k.removeprefix("NODE_STATUS_").lower() for k, v in common_pb2.NodeStatus.items() if v}
#: each check's own limit: below :func:`pixelfox.node.watch_dependencies`' 2 s, so a dependency that
#: hangs (SIGSTOP, a dead network) ends the check and sets its gauge before the watcher gives up on it
CHECK_TIMEOUT_S = 1.5


async def _checked(dependency: str, probe: Callable[[], Awaitable[None]]) -> bool:
    """Run ``probe`` (raises when ``dependency`` does not answer) and set its ``UP`` gauge from the
    outcome: 1 when it returned, 0 when it raised or was cancelled (a caller's timeout). Returns the outcome."""
    ok = False
    try:
        await probe()
        ok = True
    except Exception as exc:
        logger.warning("%s not reachable: %s", dependency, exc or type(exc).__name__)
    finally:
        UP.labels(dependency).set(int(ok))
    return ok


class ManagerOps:
    """See module doc. ``forget_after_s``: registry entries silent this long are removed (default 1 h);
    ``keep_stopped_storage_s``: how long a storage node that stopped cleanly stays listed (the repair's
    ``lost_after_s``: until then its copies count)."""

    def __init__(
        self, node_id: str, redis: aioredis.Redis, engine: AsyncEngine, registry: Registry, queue: JobQueue,
        forget_after_s: float = 3600.0, keep_stopped_storage_s: float = 600.0,
    ) -> None:
        self.node_id = node_id
        self.redis = redis
        self.engine = engine
        self.registry = registry
        self.queue = queue
        self.forget_after_s = forget_after_s
        self.keep_stopped_storage_s = keep_stopped_storage_s
        self.me: NodeRecord | None = None

    def advertise(self, grpc_address: str, metrics_url: str = "") -> None:
        """List this manager in the registry (role MANAGER), refreshed every second like a heartbeat."""
        self.me = NodeRecord(node_id=self.node_id, role=common_pb2.NODE_ROLE_MANAGER, grpc_address=grpc_address,
                             metrics_url=metrics_url, version="0.1.0")

    async def _redis_ok(self) -> bool:
        async def ping() -> None:
            await asyncio.wait_for(self.redis.ping(), CHECK_TIMEOUT_S)

        return await _checked("redis", ping)

    async def _db_ok(self) -> bool:
        async def select() -> None:
            async with asyncio.timeout(CHECK_TIMEOUT_S), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        return await _checked("database", select)

    async def ready(self) -> bool:
        """True when both Redis and the database answer (see module doc); every call sets
        ``pixelfox_manager_dependency_up`` for both."""
        redis_ok, db_ok = await asyncio.gather(self._redis_ok(), self._db_ok())
        return redis_ok and db_ok

    async def refresh(self) -> None:
        """One round of gauges (also refreshes the registry's maintenance set, our own entry and the
        read model's placement token: :meth:`Registry.publish_placement`)."""
        if self.me is not None:
            await self.registry.upsert(self.me)
        recs = await self.registry.all()
        await self.registry.publish_placement(recs)
        counts = {(r, s): 0 for r in ROLES.values() for s in STATUSES.values()}
        for rec in recs:
            key = (ROLES.get(rec.role, "unspecified"), STATUSES.get(self.registry.status(rec), "unspecified"))
            counts[key] = counts.get(key, 0) + 1
        for (role, status), n in counts.items():
            NODES.labels(role, status).set(n)
        STORAGE_FREE.set(self.registry.free_bytes(recs))
        QUEUE_DEPTH.labels("process").set(await self.queue.depth())
        DEAD_LETTERS.labels("process").set(await self.queue.dead_count())

    async def sweep(self) -> None:
        """:meth:`Registry.sweep` with this manager's limits (lease holder only)."""
        await self.registry.sweep(self.forget_after_s, self.keep_stopped_storage_s)

    async def leave(self) -> None:
        """Mark this manager ``stopped`` in the registry (a clean stop; see :meth:`Registry.leave`). Gives up
        after 2 s, logging why: Redis may be what is down."""
        if self.me is None:
            return
        try:
            await asyncio.wait_for(self.registry.leave(self.me.node_id), 2.0)
        except Exception as exc:
            logger.warning("could not mark %s stopped in the registry: %s", self.me.node_id, exc or type(exc).__name__)

    async def run(self, stop: asyncio.Event) -> None:
        """Gauges every second; the registry sweep once a minute on the lease holder."""
        lease = Lease(self.redis, "registry-sweep", ttl_s=90.0, owner=self.node_id)
        sweeper = asyncio.create_task(run_with_lease(lease, stop, self.sweep, every_s=60.0))
        try:
            while not stop.is_set():
                try:
                    await self.refresh()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.debug("ops refresh failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            await asyncio.gather(sweeper, return_exceptions=True)
