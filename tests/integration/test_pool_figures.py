"""The storage pools' figures the manager answers ``ListNodes(with_pools)`` with
(:func:`nodes.manager.pools.pool_figures`), on a real SQLite database: nodes and serving nodes per pool, the
bytes their heartbeats report, open replica debts per pool of their copies, and lost objects."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis.asyncio as aioredis

from nodes.manager.pools import PoolFigures, pool_figures
from nodes.manager.registry import STOPPED, NodeRecord, Registry
from pixelfox.db.models import ObjectLocation, ReplicaDebt
from pixelfox.v1 import common_pb2
from tests.dbkit import open_db

STORAGE, UPLOAD = common_pb2.NODE_ROLE_STORAGE, common_pb2.NODE_ROLE_UPLOAD


def node(node_id: str, *caps: str, used: int = 0, free: int = 0, age_s: float = 0.0, role: int = STORAGE,
         status: int = common_pb2.NODE_STATUS_ACTIVE) -> NodeRecord:
    return NodeRecord(node_id=node_id, role=role, grpc_address=f"127.0.0.1:{len(node_id)}", in_use=used,
                      free_bytes=free, capabilities=list(caps), last_heartbeat=time.time() - age_s, status=status)


async def _figures(db: Path, recs: list[NodeRecord],
                   locations: dict[str, list[str]], debts: dict[str, int]) -> tuple[list[PoolFigures], int]:
    async with open_db(db) as (_, sessions):
        async with sessions() as s:
            for key, holders in locations.items():
                s.add_all(ObjectLocation(key=key, node_id=n, size=10) for n in holders)
            s.add_all(ReplicaDebt(key=key, have=have, want=2) for key, have in debts.items())
            await s.commit()
        # the registry's health rules only: the records are given, Redis is never asked
        registry = Registry(aioredis.Redis(), node_timeout_s=5.0)
        return await pool_figures(sessions, registry, recs, replicas=2)


def test_figures_per_pool_and_lost_objects(tmp_path: Path) -> None:
    recs = [
        node("s1", "pool:hot", "fs:h:1", used=100, free=1000),
        node("s2", "fs:h:1", used=50, free=990),  # no pool capability: hot; shares s1's disk (free counted once)
        node("s3", "pool:cold", used=70, free=5000, age_s=60),  # down: counted, not serving
        node("s4", "pool:cold", used=30, free=400, status=STOPPED),
        node("up1", role=UPLOAD, free=99),
    ]
    locations = {"k1": ["s1", "s2"], "k2": ["s1"], "k3": ["s1", "s3"], "k6": ["s1", "s2"], "k5": ["gone9"]}
    debts = {"k2": 1, "k3": 2, "k6": 2, "k4": 0, "k5": 1}  # k4: no copy at all; k5: only on an unknown node
    pools, lost = asyncio.run(_figures(tmp_path / "db.sqlite", recs, locations, debts))
    assert pools == [
        PoolFigures("cold", 2, nodes=2, serving=0, used_bytes=0, free_bytes=0, under_replicated=1),
        PoolFigures("hot", 2, nodes=2, serving=2, used_bytes=150, free_bytes=1000, under_replicated=3),
    ]
    assert lost == 2
    proto = pools[1].to_proto()
    assert (proto.name, proto.replicas, proto.nodes, proto.serving, proto.used_bytes, proto.free_bytes,
            proto.under_replicated) == ("hot", 2, 2, 2, 150, 1000, 3)


def test_no_storage_node_every_debt_is_lost(tmp_path: Path) -> None:
    pools, lost = asyncio.run(_figures(tmp_path / "db.sqlite", [node("up1", role=UPLOAD)],
                                       {"k1": ["s1"]}, {"k1": 1, "k2": 0}))
    assert pools == [] and lost == 2
