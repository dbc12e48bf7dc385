"""A stand-in for the manager's node registry in tests that run manager parts (Objects, Dispatcher, Library)
on a real database and Redis without node processes: the storage calls those parts make are recorded by the
test, so the registry only has to name nodes."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from nodes.manager.registry import NodeRecord
from pixelfox.v1 import common_pb2


@dataclass
class FakeRegistry:
    """The registry surface Objects, ImageViews and Dispatcher use: two storage nodes (``s1``, ``s2``), all
    healthy, none in maintenance."""

    redis: aioredis.Redis
    nodes: list[NodeRecord] = field(default_factory=lambda: [
        NodeRecord("s1", common_pb2.NODE_ROLE_STORAGE, "127.0.0.1:1"),
        NodeRecord("s2", common_pb2.NODE_ROLE_STORAGE, "127.0.0.1:2")])
    in_maintenance: set[str] = field(default_factory=set)

    async def all(self, role: int = 0) -> list[NodeRecord]:
        return [n for n in self.nodes if not role or n.role == role]

    async def healthy_nodes(self, role: int = 0) -> list[NodeRecord]:
        return await self.all(role)

    async def get(self, node_id: str) -> NodeRecord | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def healthy(self, rec: NodeRecord) -> bool:
        return True
