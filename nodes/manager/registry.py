"""The node registry: who is in the cluster, their load, and when they last spoke.

Live state is a Redis hash ``pixelfox:{registry}:nodes`` (node id -> JSON), shared by every
manager, so a manager restart forgets nothing. A node is *healthy* when its last heartbeat
is younger than ``node_timeout_s`` and its status is ACTIVE; inactive nodes get no uploads,
jobs or objects.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import redis.asyncio as aioredis

from pixelfox import errors
from pixelfox.v1 import common_pb2

KEY = "pixelfox:{registry}:nodes"


@dataclass
class NodeRecord:
    node_id: str
    role: int
    grpc_address: str
    http_url: str = ""
    metrics_url: str = ""
    capacity: int = 1
    in_use: int = 0
    free_bytes: int = 0
    status: int = common_pb2.NODE_STATUS_ACTIVE
    capabilities: list[str] = field(default_factory=list)
    version: str = ""
    last_heartbeat: float = 0.0  # unix seconds

    @property
    def load(self) -> float:
        return self.in_use / self.capacity if self.capacity > 0 else 1.0


class Registry:
    def __init__(self, redis: aioredis.Redis, node_timeout_s: float) -> None:
        self.redis = redis
        self.node_timeout_s = node_timeout_s

    async def upsert(self, rec: NodeRecord) -> None:
        rec.last_heartbeat = time.time()
        await self.redis.hset(KEY, rec.node_id, json.dumps(asdict(rec)))

    async def heartbeat(self, node_id: str, in_use: int, capacity: int, free_bytes: int, status: int) -> bool:
        """Update a node's load; False if the node is unknown (it must register again)."""
        rec = await self.get(node_id)
        if rec is None:
            return False
        rec.in_use, rec.capacity, rec.free_bytes = in_use, capacity or rec.capacity, free_bytes
        if status:
            rec.status = status
        await self.upsert(rec)
        return True

    async def get(self, node_id: str) -> NodeRecord | None:
        raw = await self.redis.hget(KEY, node_id)
        return NodeRecord(**json.loads(raw)) if raw else None

    async def all(self, role: int = 0) -> list[NodeRecord]:
        raw = await self.redis.hgetall(KEY)
        recs = [NodeRecord(**json.loads(v)) for v in raw.values()]
        return sorted((r for r in recs if not role or r.role == role), key=lambda r: (r.role, r.node_id))

    def healthy(self, rec: NodeRecord) -> bool:
        fresh = time.time() - rec.last_heartbeat < self.node_timeout_s
        return fresh and rec.status == common_pb2.NODE_STATUS_ACTIVE

    async def healthy_nodes(self, role: int) -> list[NodeRecord]:
        return [r for r in await self.all(role) if self.healthy(r)]

    async def pick_upload_node(self) -> NodeRecord:
        """The healthy upload node with the most headroom (lowest load, then most free bytes)."""
        nodes = await self.healthy_nodes(common_pb2.NODE_ROLE_UPLOAD)
        if not nodes:
            raise errors.NoNodeAvailable("no healthy upload node")
        return min(nodes, key=lambda r: (r.load, -r.free_bytes, r.node_id))

    async def place(self, replicas: int) -> list[NodeRecord]:
        """Storage nodes for a new object: the ``replicas`` healthy ones with most free space."""
        nodes = await self.healthy_nodes(common_pb2.NODE_ROLE_STORAGE)
        if not nodes:
            raise errors.NoNodeAvailable("no healthy storage node")
        nodes.sort(key=lambda r: (-r.free_bytes, r.node_id))
        return nodes[: max(1, replicas)]

    def to_proto(self, rec: NodeRecord) -> common_pb2.Node:
        return common_pb2.Node(
            node_id=rec.node_id,
            role=rec.role,  # type: ignore[arg-type]
            grpc_address=rec.grpc_address,
            http_url=rec.http_url,
            metrics_url=rec.metrics_url,
            status=rec.status if self.healthy(rec) or rec.status != common_pb2.NODE_STATUS_ACTIVE
            else common_pb2.NODE_STATUS_INACTIVE,  # type: ignore[arg-type]
            healthy=self.healthy(rec),
            load=rec.load,
            capacity=rec.capacity,
            in_use=rec.in_use,
            free_bytes=rec.free_bytes,
            last_heartbeat_age_s=max(0.0, time.time() - rec.last_heartbeat),
            capabilities=rec.capabilities,
            version=rec.version,
        )
