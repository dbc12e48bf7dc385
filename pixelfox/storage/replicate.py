"""Writing one object to every placement target (issue 6: acknowledged when every healthy target has it).

Upload and processing nodes write to all the nodes ``Registry.place`` returned (the healthy
storage nodes, at most the replication factor) at once. A target that fails with a
*transient* error (``Unavailable``, ``Timeout``: a connection refused, a node restarting) is
tried again, ``attempts`` times in all with doubling back-off, so a blip does not cost a
replica; but not a node that took no connection in time (``NotAnswering``: frozen), which made
every upload wait three connect timeouts for it. A target that still fails, or fails for good
(``StorageFull``, ...), is dropped: the write stands if at least one target has it, and the manager's repair loop
(``nodes/manager/repair.py``) records the object as under-replicated and copies it when a
node can take it. With no target at all the write fails with ``Unavailable``.

Errors that say the *bytes* are wrong (``ChecksumMismatch``, ``BadRequest``) are raised at
once: no other node would take them either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from pixelfox import errors

logger = logging.getLogger(__name__)

RETRYABLE = (errors.Unavailable, errors.Timeout)


class _HasNodeId(Protocol):
    @property
    def node_id(self) -> str: ...


N = TypeVar("N", bound=_HasNodeId)


async def write_all(
    nodes: Sequence[N],
    put: Callable[[N], Awaitable[object]],
    *,
    what: str = "object",
    attempts: int = 3,
    backoff_s: float = 0.2,
) -> list[str]:
    """Run ``put(node)`` on every node concurrently; the ids of those that succeeded, in ``nodes`` order.

    Transient failures are retried (``attempts`` tries per node, back-off ``backoff_s`` doubling).
    Raises the first ``BadRequest`` (includes ``ChecksumMismatch``) any node reported, ``StorageFull``
    when every node refused it for room, or ``Unavailable`` when no node took the write.
    """

    async def one(node: N) -> str:
        delay = backoff_s
        for attempt in range(1, max(1, attempts) + 1):
            try:
                await put(node)
                return node.node_id
            except RETRYABLE as exc:
                if attempt >= attempts or isinstance(exc, errors.NotAnswering):  # frozen: the same wait again
                    raise
                logger.info("writing %s to %s failed (%s); retrying in %.1f s", what, node.node_id, exc, delay)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    results = await asyncio.gather(*(one(n) for n in nodes), return_exceptions=True)
    ok = [r for r in results if isinstance(r, str)]
    for node, r in zip(nodes, results, strict=True):
        if isinstance(r, errors.BadRequest):
            raise r
        if isinstance(r, BaseException):
            logger.warning("writing %s to %s failed: %s (under-replicated until repaired)", what, node.node_id, r)
    if not ok:
        first = next((r for r in results if isinstance(r, BaseException)), None)
        if results and all(isinstance(r, errors.StorageFull) for r in results):  # final: no retry will fit it
            raise errors.StorageFull(f"no storage node has room for the {what}: {first}")
        raise errors.Unavailable(f"no storage node accepted the {what}: {first or 'no target'}")
    return ok
