"""Clearing up after a storage node dropped for good.

An admin's ``pixelfox nodes forget`` and the registry sweep's drop of a node silent for ``forget_after_s``
put its id in the Redis set ``pixelfox:{registry}:gone`` in the same step as the drop
(:data:`~nodes.manager.registry.GONE_KEY`). Each housekeeping pass (:meth:`Objects.run`, and ``ForgetNode``
at once) then, for every such node that has not registered again:

* gives up its pending replica deletes (``"<node id> <key>"`` in :data:`~nodes.manager.objects.PENDING`):
  there is no node left to delete on; counted in ``pixelfox_objects_deletes_given_up_total`` and logged
  once per node;
* removes its ``object_locations`` rows. The repair stopped counting its copies when its record went
  (it counts nodes in the registry only), so it needs none of them; but a key an image still names whose
  only location was on that node has no copy left anywhere: it gets a replica debt with ``have`` 0 and an
  error naming the node (counted in ``pixelfox_storage_under_replicated_objects``, its text in the
  ``replica_debts`` table and the log) rather than vanishing from every listing.

A node's id leaves the set once a pass finds nothing left of it (a delete that was in flight when the rows
went is caught by the pass after). A node that registers again under that id keeps whatever rows are left.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from prometheus_client import Counter
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.registry import GONE_KEY, Registry
from nodes.manager.repair import record_debt
from pixelfox.db.models import Image, ObjectLocation, Variant

logger = logging.getLogger(__name__)

GIVEN_UP = Counter("pixelfox_objects_deletes_given_up_total",
                   "Pending replica deletes dropped because their storage node was forgotten "
                   "(nothing left to delete on)")


async def clear_gone(sessions: async_sessionmaker[AsyncSession], registry: Registry, redis: aioredis.Redis,
                     pending_key: str, replicas: int) -> int:
    """One pass over the nodes in :data:`GONE_KEY` (see module doc); ``pending_key`` is the pending-deletes
    set and ``replicas`` the factor a lost key's debt asks for. Returns how many pending deletes it gave up."""
    given_up = 0
    for raw in await redis.smembers(GONE_KEY):
        node_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        if await registry.get(node_id) is not None:  # registered again: its rows and deletes are live again
            await redis.srem(GONE_KEY, node_id)
            continue
        lost = await _only_here(sessions, node_id)
        for key in lost:  # recorded before the rows go: a pass that dies between finds them again
            await record_debt(sessions, key, 0, replicas,
                              f"no copy left: the only one was on storage node {node_id}, which was forgotten; "
                              "its owner's upload of the same file restores it"[:500])
        rows = await _drop_locations(sessions, node_id)
        dropped = await _drop_pending(redis, pending_key, node_id)
        given_up += dropped
        if rows or dropped:
            logger.warning("storage node %s is gone for good: gave up %d pending deletes on it, removed %d object "
                           "locations%s", node_id, dropped, rows,
                           f"; {len(lost)} objects had no other copy (replica debts with have 0)" if lost else "")
        else:
            await redis.srem(GONE_KEY, node_id)
    return given_up


async def _only_here(sessions: async_sessionmaker[AsyncSession], node_id: str) -> list[str]:
    """Keys an image names whose every location row is on ``node_id``."""
    async with sessions(info={"primary": True}) as s:
        keys = list((await s.execute(select(ObjectLocation.key).where(ObjectLocation.node_id == node_id))).scalars())
        lost: list[str] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            elsewhere = set((await s.execute(select(ObjectLocation.key).where(
                ObjectLocation.key.in_(chunk), ObjectLocation.node_id != node_id))).scalars())
            orphans = [k for k in chunk if k not in elsewhere]
            if orphans:
                named = set((await s.execute(select(Image.original_key).where(Image.original_key.in_(orphans))))
                            .scalars())
                named |= set((await s.execute(select(Variant.key).where(Variant.key.in_(orphans)))).scalars())
                lost += [k for k in orphans if k in named]
    return lost


async def _drop_locations(sessions: async_sessionmaker[AsyncSession], node_id: str) -> int:
    """Delete ``node_id``'s location rows; returns how many went."""
    async with sessions(info={"primary": True}) as s:
        res = await s.execute(delete(ObjectLocation).where(ObjectLocation.node_id == node_id))
        await s.commit()
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


async def _drop_pending(redis: aioredis.Redis, pending_key: str, node_id: str) -> int:
    """Remove ``node_id``'s members from the pending-deletes set; returns how many went."""
    mine = [m async for m in redis.sscan_iter(pending_key, match=f"{node_id} *", count=1000)]
    mine = [m for m in mine if (m.decode() if isinstance(m, bytes) else str(m)).partition(" ")[0] == node_id]
    if not mine:
        return 0
    gone = int(await redis.srem(pending_key, *mine))
    GIVEN_UP.inc(gone)
    return gone
