"""An upload node's :class:`~nodes.upload.service.Receiver` in process, on a real Redis: for tests of
its writer sessions and tus handlers without the node's process (no storage nodes, no manager)."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis
from ulid import ULID

from nodes.upload.service import Receiver
from pixelfox import tickets
from pixelfox.config import LimitsSettings
from pixelfox.uploadstate import UploadStates

#: the ticket key of :func:`receiver` (32 bytes)
KEY = b"k" * 32


def receiver(redis: aioredis.Redis, staging: Path, max_concurrent: int = 4) -> Receiver:
    """A receiver staging in ``staging`` with default limits and :data:`KEY`; it can neither store an
    original (no placement) nor complete one (no manager)."""
    return Receiver("upload-test", staging, LimitsSettings(), KEY, place=None,  # type: ignore[arg-type]
                    secret="", max_concurrent=max_concurrent, states=UploadStates(redis),
                    complete=None)  # type: ignore[arg-type]


async def new_upload(rx: Receiver, size: int = 1 << 20, content_type: str = "image/jpeg") -> tuple[str, str]:
    """``(upload id, ticket)`` of a new upload of ``size`` bytes by ``user-1``, as the manager's
    ``CreateUpload`` records it (its Redis state at offset 0; the ticket valid for 60 s)."""
    upload_id = str(ULID())
    await rx.states.create(upload_id, size, "user-1")
    return upload_id, tickets.sign(KEY, upload_id, "user-1", size, content_type, 60)
