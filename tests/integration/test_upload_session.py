"""An upload node's writer (:class:`nodes.upload.service.Session`) against the cluster's real Redis.

A stream that is cancelled while its chunk waits for a thread must not close the staged
file's descriptor under that thread: the write would land in whatever file reuses the
descriptor number next (another upload's staged bytes).
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from ulid import ULID

from nodes.upload.service import Receiver
from pixelfox import tickets
from pixelfox.config import LimitsSettings
from pixelfox.uploadstate import UploadStates

KEY = b"k" * 32


async def _cancelled_write(redis_url: str, staging: Path) -> tuple[bool, bool, bytes, bytes]:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=2))
    redis = aioredis.from_url(redis_url)
    try:
        rx = Receiver("upload-test", staging, LimitsSettings(), KEY, place=None,  # type: ignore[arg-type]
                      secret="", max_concurrent=4, states=UploadStates(redis),
                      complete=None)  # type: ignore[arg-type]
        upload_id, size = str(ULID()), 1 << 20
        await rx.states.create(upload_id, size, "user-1")
        token = tickets.sign(KEY, upload_id, "user-1", size, "image/jpeg", 60)
        session = await rx.open(token, upload_id, size)
        staged_fd = session.fd

        gate, started = threading.Event(), threading.Event()

        def slow_write() -> None:  # file work that is running when its stream is cancelled
            started.set()
            gate.wait()
            os.pwrite(staged_fd, b"late bytes", 0)

        work = asyncio.create_task(session._in_thread(slow_write))
        await asyncio.to_thread(started.wait)  # on the pool's second thread
        work.cancel()
        await session.close()
        open_after_close = _is_open(staged_fd)
        other = staging / "other-upload.part"  # the next file opened gets the lowest free fd number
        other_fd = os.open(other, os.O_RDWR | os.O_CREAT, 0o600)
        gate.set()
        await asyncio.sleep(0.2)
        closed_after_work = not _is_open(staged_fd) or staged_fd == other_fd
        os.close(other_fd)
        return open_after_close, closed_after_work, other.read_bytes(), rx.path(upload_id).read_bytes()
    finally:
        await redis.aclose()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_cancelled_file_work_keeps_its_fd_until_done(cluster: Any, tmp_path: Path) -> None:
    open_after_close, closed_after_work, other, staged = asyncio.run(_cancelled_write(cluster.redis_url, tmp_path))
    assert open_after_close  # close() left the fd to the thread still using it
    assert other == b""  # so the late write did not land in the file opened next
    assert staged == b"late bytes"  # it went to its own staged file
    assert closed_after_work  # and the fd was closed once the thread was done
