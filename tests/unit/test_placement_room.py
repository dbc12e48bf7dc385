"""Where a new object goes (:func:`nodes.manager.registry.choose_targets`) and what a write that no
storage node has room for raises (:func:`pixelfox.storage.replicate.write_all`).

A tester filled the only writable storage node: every upload's original was sent to it, refused
there ("107406 bytes do not fit (16384 free)"), reported as Unavailable, retried by the client, and
the upload ended "stalled: nothing went through for 60 s". Full nodes are now left out by their
heartbeat's free bytes, and when none has room the refusal is StorageFull (RESOURCE_EXHAUSTED),
which clients do not retry, naming the reason."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from nodes.manager.registry import NodeRecord, choose_targets
from pixelfox import errors
from pixelfox.storage.replicate import write_all
from pixelfox.v1 import common_pb2


def node(node_id: str, free: int, *caps: str) -> NodeRecord:
    return NodeRecord(node_id=node_id, role=common_pb2.NODE_ROLE_STORAGE, grpc_address=f"127.0.0.1:{len(node_id)}",
                      free_bytes=free, capabilities=list(caps), last_heartbeat=time.time())


def test_full_nodes_are_left_out_and_none_with_room_is_storage_full() -> None:
    nodes = [node("s1", 16_384), node("s2", 5_000_000), node("s3", 200_000), node("cold1", 10**12, "pool:cold")]
    assert [r.node_id for r in choose_targets(nodes, 2)] == ["s2", "s3"]  # hot tier, most free first
    assert [r.node_id for r in choose_targets(nodes, 2, size=107_406)] == ["s2", "s3"]
    assert [r.node_id for r in choose_targets(nodes, 2, size=300_000)] == ["s2"]  # s3 is too full: one copy
    with pytest.raises(errors.StorageFull, match=r"^no storage node has room for 6000000 bytes \(the most free: "
                                                 r"5000000 bytes, on s2\)"):
        choose_targets(nodes, 2, size=6_000_000)
    assert [r.node_id for r in choose_targets([node("c", 10**9, "pool:cold")], 2, size=10)] == ["c"]  # no hot tier
    with pytest.raises(errors.NoNodeAvailable):
        choose_targets([], 2, size=10)


@dataclass(frozen=True)
class Target:
    node_id: str


def test_a_write_every_node_refuses_for_room_is_storage_full_not_unavailable() -> None:
    async def full(t: Target) -> None:
        raise errors.StorageFull("107406 bytes do not fit (16384 free)")

    async def down(t: Target) -> None:
        raise errors.Unavailable("connection refused")

    with pytest.raises(errors.StorageFull, match=r"no storage node has room for the original: 107406 bytes do not fit"):
        asyncio.run(write_all([Target("s1"), Target("s2")], full, what="original", backoff_s=0))
    # one full, one down: the down one may come back, so that is still Unavailable (retried)
    with pytest.raises(errors.Unavailable):
        asyncio.run(write_all([Target("s1"), Target("s2")],
                              lambda t: full(t) if t.node_id == "s1" else down(t), what="original", backoff_s=0))
