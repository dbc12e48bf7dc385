"""An upload node's writer whose commit is refused because the upload closed under it, on a private
redis-server (so the commands counted are this test's only): the refusal says why, and the upload's
state is read once (the commit script answers the status and reason itself; the writer read the
state after the script, and read it again to decide whether to drop its staged bytes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from nodes.upload.service import Chunk
from pixelfox import errors
from tests.uploadnode import new_upload, receiver


async def _hgetall_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


async def _refused_commit(redis_url: str, staging: Path, status: str, error: errors.PixelfoxError | None
                          ) -> tuple[type[errors.PixelfoxError], str, int, bool]:
    """Write 1000 bytes, close the upload as ``status`` (with ``error``), write 1000 more and commit:
    ``(error class, message, HGETALLs the refusal took, staged file still there)``."""
    redis = aioredis.from_url(redis_url)
    try:
        rx = receiver(redis, staging)
        upload_id, ticket = await new_upload(rx)
        session = await rx.open(ticket, upload_id, 1 << 20)
        try:
            await session.write(Chunk(0, b"x" * 1000, None), commit=False)
            await session.commit()
            await rx.states.finish(upload_id, status, error=error)
            await session.write(Chunk(1000, b"y" * 1000, None), commit=False)
            before = await _hgetall_calls(redis)
            with pytest.raises(errors.PixelfoxError) as refused:
                await session.commit()
            reads = await _hgetall_calls(redis) - before
        finally:
            await session.close()
        return type(refused.value), str(refused.value), reads, rx.path(upload_id).exists()
    finally:
        await redis.aclose()


@pytest.mark.parametrize(("status", "error", "expected"), [
    ("abandoned", errors.InvalidTicket("the upload was cancelled by its owner"),
     (errors.InvalidTicket, "the upload was cancelled by its owner", False)),
    ("failed", errors.ChecksumMismatch("SHA-256 of the received bytes does not match the header"),
     (errors.ChecksumMismatch, "SHA-256 of the received bytes does not match the header (this upload failed; "
      "start a new one)", False)),
    ("complete", None, (errors.InvalidTicket, "upload ticket already used: the upload is complete", True)),
])
def test_a_commit_refused_because_the_upload_closed_says_why_and_reads_its_state_once(
        redis_url: str, tmp_path: Path, status: str, error: errors.PixelfoxError | None,
        expected: tuple[type[errors.PixelfoxError], str, bool]) -> None:
    cls, message, reads, staged = asyncio.run(_refused_commit(redis_url, tmp_path, status, error))
    assert (cls, message, staged) == expected
    assert reads == 1  # the writer's check for bytes to drop; the commit script answered the rest
