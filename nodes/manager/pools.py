"""Per-pool health for ``pixelfox status``: ``ListNodes`` with ``with_pools``.

A *pool* is the tier a storage node serves (its ``pool:<name>`` capability, "hot" without one:
:func:`nodes.manager.repair.pool_of`). For each pool a registered storage node serves this reads:

* ``nodes`` and ``serving``: its storage nodes in the registry, and those :meth:`Registry.healthy` (they
  take new copies). Fewer serving nodes than ``replicas`` (the manager's ``PIXELFOX_REPLICAS``) means new
  objects get fewer copies than wanted, and the repair cannot bring old ones back to the factor;
* ``used_bytes`` / ``free_bytes``: what the serving nodes' heartbeats report (a storage node sends its
  store's bytes as ``in_use`` and its filesystem's free bytes), free space counted once per filesystem
  (:meth:`Registry.free_bytes`);
* ``under_replicated``: open replica debts (:class:`~pixelfox.db.models.ReplicaDebt`, written by the repair
  and by :mod:`nodes.manager.gone`) whose key has a recorded copy on a node of the pool.

Beside the pools, ``lost_objects`` counts open debts whose key has no recorded copy on any storage node the
registry knows: the only holder was forgotten (``have`` 0), so nothing can serve or repair them.

Two database reads (counts grouped in SQL, pools told apart by a node-to-pool ``CASE``), whatever the number of
debts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.lostfind import held_on
from nodes.manager.registry import NodeRecord, Registry
from nodes.manager.repair import pool_of
from pixelfox.db.models import ObjectLocation, ReplicaDebt
from pixelfox.v1 import common_pb2, manager_pb2


@dataclass
class PoolFigures:
    """One pool's figures (see module doc): ``nodes`` and ``serving`` count storage nodes, bytes are bytes."""

    name: str
    replicas: int
    nodes: int = 0
    serving: int = 0
    used_bytes: int = 0
    free_bytes: int = 0
    under_replicated: int = 0

    def to_proto(self) -> manager_pb2.StoragePool:
        return manager_pb2.StoragePool(
            name=self.name, replicas=self.replicas, nodes=self.nodes, serving=self.serving,
            used_bytes=self.used_bytes, free_bytes=self.free_bytes, under_replicated=self.under_replicated)


def pool_members(recs: list[NodeRecord]) -> dict[str, list[NodeRecord]]:
    """The storage nodes among ``recs`` (any roles) by pool name, names sorted."""
    out: dict[str, list[NodeRecord]] = {}
    for r in recs:
        if r.role == common_pb2.NODE_ROLE_STORAGE:
            out.setdefault(pool_of(r), []).append(r)
    return dict(sorted(out.items()))


async def pool_figures(
    sessions: async_sessionmaker[AsyncSession], registry: Registry, recs: list[NodeRecord], replicas: int,
) -> tuple[list[PoolFigures], int]:
    """The figures of every pool a storage node among ``recs`` (the registry's records, as read now) serves,
    by name, and the count of lost objects (see module doc); ``replicas`` is the factor wanted. Raises what
    the database raises (SQLAlchemyError, OSError)."""
    members = pool_members(recs)
    pools = []
    for name, nodes in members.items():
        serving = [r for r in nodes if registry.healthy(r)]
        pools.append(PoolFigures(name, max(1, replicas), nodes=len(nodes), serving=len(serving),
                                 used_bytes=sum(r.in_use for r in serving), free_bytes=registry.free_bytes(serving)))
    node_pool = {r.node_id: name for name, nodes in members.items() for r in nodes}
    async with sessions() as s:
        debts: dict[str, int] = {}
        if node_pool:  # (pool, key) pairs first: a key on two nodes of a pool counts once; grouped by a column,
            # not by the CASE (PostgreSQL takes its bound parameters twice for two expressions)
            pairs = (select(case(node_pool, value=ObjectLocation.node_id).label("pool"), ReplicaDebt.key)
                     .join(ObjectLocation, ObjectLocation.key == ReplicaDebt.key)
                     .where(ObjectLocation.node_id.in_(list(node_pool))).distinct().subquery())
            debts = dict((await s.execute(select(pairs.c.pool, func.count()).group_by(pairs.c.pool))).all())
        lost = int(await s.scalar(select(func.count()).select_from(ReplicaDebt).where(~held_on(list(node_pool)))) or 0)
    for p in pools:
        p.under_replicated = int(debts.get(p.name, 0))
    return pools, lost
