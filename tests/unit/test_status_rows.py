"""The node rows of ``pixelfox status`` (:func:`pixelfox.cli.main.node_row`, :func:`health_text`): ``ready``
of a stopped or frozen node, and the health column of a node in maintenance."""

from __future__ import annotations

import pytest

from pixelfox.cli.main import LOW_FREE_BYTES, full_disks, health_text, node_row
from pixelfox.v1 import common_pb2

S = common_pb2


def node(status: int, healthy: bool = False, not_ready: bool = False) -> common_pb2.Node:
    return S.Node(node_id="storage1", role=S.NODE_ROLE_STORAGE, grpc_address="127.0.0.1:1", status=status,
                  healthy=healthy, not_ready=not_ready)


@pytest.mark.parametrize(("status", "healthy", "not_ready", "ready", "text"), [
    (S.NODE_STATUS_ACTIVE, True, False, True, "healthy"),
    (S.NODE_STATUS_ACTIVE, False, True, False, "unhealthy (not ready)"),
    (S.NODE_STATUS_STOPPED, False, False, False, "unhealthy"),  # SIGTERMed: its last heartbeat said ready
    (S.NODE_STATUS_INACTIVE, False, False, False, "unhealthy"),  # SIGSTOPped: heartbeats stopped
    (S.NODE_STATUS_MAINTENANCE, False, False, True, "maintenance"),
    (S.NODE_STATUS_MAINTENANCE, False, True, False, "maintenance"),
])
def test_ready_and_health_text(status: int, healthy: bool, not_ready: bool, ready: bool, text: str) -> None:
    row = node_row(node(status, healthy, not_ready))
    assert (row["ready"], row["health"], row["status"]) == (ready, "healthy" if healthy else "unhealthy",
                                                            common_pb2.NodeStatus.Name(status)[12:].lower())
    assert health_text(row) == text


def test_a_storage_node_short_of_space_is_named() -> None:
    """A full disk showed in status only as under-replicated objects."""
    frees = [12 * 1024 * 1024, LOW_FREE_BYTES, 0]
    rows = [node_row(S.Node(node_id=f"storage{i}", role=S.NODE_ROLE_STORAGE, status=S.NODE_STATUS_ACTIVE,
                            healthy=True, free_bytes=free)) for i, free in enumerate(frees, 1)]
    rows.append(node_row(S.Node(node_id="proc1", role=S.NODE_ROLE_PROC, status=S.NODE_STATUS_ACTIVE,
                                healthy=True, free_bytes=0)))  # free bytes of a processing node mean nothing
    rows.append(node_row(S.Node(node_id="storage9", role=S.NODE_ROLE_STORAGE, status=S.NODE_STATUS_STOPPED,
                                free_bytes=0)))  # stopped: status says so already
    assert full_disks(rows) == [
        "warning: storage1 has 12.0 MiB free: it gets no object larger than that (other storage nodes take "
        "them; with none left, uploads are refused as storage full); make room on its disk or add a storage node",
        "warning: storage3's disk is full (0 B free): it gets no new object (other storage nodes take them; with "
        "none left, uploads are refused as storage full); make room on its disk or add a storage node",
    ]
