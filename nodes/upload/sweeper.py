"""Background removal of staged bytes no upload can use: their Redis state expired, or says the
upload was cancelled or failed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nodes.upload.service import Receiver

logger = logging.getLogger(__name__)


async def sweep_forever(receiver: Receiver, interval_s: float, ttl_s: int, stop: asyncio.Event) -> None:
    """Every ``min(interval_s, ttl_s / 3)`` seconds remove staged files whose upload has no state, was
    cancelled or failed (:meth:`Receiver.sweep`).

    A file with no state must also be untouched for ``min(ttl_s, 30)`` seconds, so a stream that is
    just creating its file is never raced; a cancelled or failed upload's file goes once no writer
    holds its lock. Any upload node may sweep; removals are idempotent.
    """
    every = max(0.5, min(interval_s, ttl_s / 3))
    while not stop.is_set():
        try:
            await receiver.sweep(min_age_s=min(float(ttl_s), 30.0))
        except Exception as exc:
            logger.warning("staging sweep failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
