"""Words for a role none of whose nodes takes new work, shared by ``pixelfox status`` (its ``warning:``
lines, :func:`pixelfox.cli.main.idle_roles`) and the manager's 503 answers (``put`` and
``POST /api/v1/images`` with every upload node in maintenance): both name each node with why it is idle."""

from __future__ import annotations

from pixelfox.v1 import common_pb2

#: NodeStatus value -> its lower-case name without the prefix ("active", "maintenance", ...)
STATUS_NAMES = {v: k.removeprefix("NODE_STATUS_").lower() for k, v in common_pb2.NodeStatus.items()}


def why_idle(status: str, health: str) -> str:
    """Why a node takes no new work: its ``status`` name unless "active", else its ``health`` ("unhealthy"),
    or "not ready" for an active node the manager counts healthy but that reports not ready."""
    if status != "active":
        return status
    return "not ready" if health == "healthy" else health


def none_takes(name: str, takes: str, idle: list[tuple[str, str]]) -> str:
    """``no upload node takes new uploads (upload1: maintenance, upload2: inactive)``: ``name`` the role's
    word, ``takes`` what its nodes take, ``idle`` each node's (id, :func:`why_idle`)."""
    said = ", ".join(f"{node_id}: {why}" for node_id, why in idle)
    return f"no {name} node {takes} ({said})"
