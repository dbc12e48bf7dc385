"""Tasks started and not awaited: kept referenced until they end, and their errors logged."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine
from typing import Any


class Background:
    """The background tasks of one owner (a manager component, a node).

    The event loop keeps only weak references to tasks, so a task nobody holds may be collected
    before it ends; :meth:`start` holds each one until it is done. A task that raises is logged on
    ``logger`` at ERROR with its traceback (nothing else would see it); a cancelled one is not.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background (needs a running loop); ``what`` names it in the log
        ("deferred deletes of ab12..."). Returns the task."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._done, what))
        return task

    def __len__(self) -> int:
        """How many tasks are still running."""
        return len(self._tasks)

    def _done(self, what: str, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._logger.error("background task failed: %s: %s", what, exc, exc_info=exc)
