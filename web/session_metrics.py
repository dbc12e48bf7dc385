"""Prometheus figures for the session store (Redis): operations by kind and result, and their time.

``pixelfox_session_store_operations_total{op,result}`` (op: load, save, delete; result: ok,
error) and ``pixelfox_session_store_duration_seconds{op}``. A rising ``result="error"`` rate
means the web nodes cannot reach Redis (the ``SessionStoreErrors`` alert in
``deploy/prometheus/alerts.yml``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram

SESSION_OPS = Counter(
    "pixelfox_session_store_operations_total", "session store operations by result", ["op", "result"]
)
SESSION_SECONDS = Histogram("pixelfox_session_store_duration_seconds", "session store operation time (s)", ["op"])

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def measured(op: str) -> Callable[[F], F]:
    """Decorate an async session-store method: count it as ``op`` and time it; exceptions pass through."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = "error"
            try:
                out = await fn(*args, **kwargs)
                result = "ok"
                return out
            finally:
                SESSION_OPS.labels(op, result).inc()
                SESSION_SECONDS.labels(op).observe(time.perf_counter() - start)

        return wrapper  # type: ignore[return-value]

    return deco


for _op in ("load", "save", "delete"):  # export zeros from the start, so rates exist before traffic
    for _result in ("ok", "error"):
        SESSION_OPS.labels(_op, _result)
