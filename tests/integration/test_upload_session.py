"""An upload node's writer (:class:`nodes.upload.service.Session`) against the cluster's real Redis.

A stream that is cancelled while its chunk is written in a thread must not close the staged
file's descriptor under that thread (the write would land in whatever file reuses the
descriptor number next: another upload's staged bytes), nor release the upload's lock before
the write ends (the next writer truncates the staged file to the committed offset).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from ulid import ULID

from nodes.upload.service import Chunk
from pixelfox import errors
from pixelfox.config import LimitsSettings
from tests.uploadnode import new_upload, receiver


async def _cancelled_write(redis_url: str, staging: Path) -> dict[str, Any]:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=2))
    redis = aioredis.from_url(redis_url)
    try:
        rx = receiver(redis, staging)
        size = 1 << 20
        upload_id, token = await new_upload(rx, size)
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
        closing = asyncio.create_task(session.close())
        await asyncio.sleep(0.2)
        seen: dict[str, Any] = {"closing_done": closing.done(), "fd_open_while_writing": _is_open(staged_fd),
                                "locked_while_writing": await rx.states.locked(upload_id)}
        other = staging / "other-upload.part"  # opened while the write runs: it must get another fd
        other_fd = os.open(other, os.O_RDWR | os.O_CREAT, 0o600)
        gate.set()
        await closing
        seen["locked_after"] = await rx.states.locked(upload_id)
        seen["fd_closed_after"] = not _is_open(staged_fd) or staged_fd == other_fd
        seen["fd_reused"] = staged_fd == other_fd
        os.close(other_fd)
        seen["other"], seen["staged"] = other.read_bytes(), rx.path(upload_id).read_bytes()
        return seen
    finally:
        await redis.aclose()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_cancelled_file_work_keeps_its_fd_and_lock_until_done(cluster: Any, tmp_path: Path) -> None:
    seen = asyncio.run(_cancelled_write(cluster.redis_url, tmp_path))
    assert seen["closing_done"] is False  # close() waits for the thread still writing...
    assert seen["fd_open_while_writing"] and seen["locked_while_writing"]  # ...with the fd and lock kept
    assert not seen["fd_reused"] and seen["other"] == b""  # the late write did not land in another file
    assert seen["staged"] == b"late bytes"  # it went to its own staged file
    assert seen["fd_closed_after"] and seen["locked_after"] is False  # then both were let go


async def _burst_of_opens(redis_url: str, staging: Path, cap: int, n: int) -> tuple[int, int, int]:
    redis = aioredis.from_url(redis_url)
    try:
        rx = receiver(redis, staging, max_concurrent=cap)
        tokens = []
        for _ in range(n):
            upload_id, token = await new_upload(rx)
            tokens.append((token, upload_id, 1 << 20))
        got = await asyncio.gather(*(rx.open(*t) for t in tokens), return_exceptions=True)
        sessions = [g for g in got if not isinstance(g, BaseException)]
        busy = sum(isinstance(g, errors.ResourceExhausted) for g in got)
        active = rx.active
        for s in sessions:
            await s.close()
        assert rx.active == 0
        return len(sessions), busy, active
    finally:
        await redis.aclose()


def test_a_burst_of_streams_never_exceeds_max_concurrent(cluster: Any, tmp_path: Path) -> None:
    """Streams that arrive together are all checked before any of them has done its Redis round trips:
    the slot is taken at the check, so the cap holds (it let 96 uploads into a node capped at 64)."""
    opened, busy, active = asyncio.run(_burst_of_opens(cluster.redis_url, tmp_path, cap=4, n=12))
    assert (opened, busy, active) == (4, 8, 4)


async def _flush_during_probe(redis_url: str, staging: Path, photo: bytes) -> tuple[int, int]:
    import nodes.upload.service as service

    redis = aioredis.from_url(redis_url)
    real_check = service.check_image
    probing = threading.Event()

    def slow_check(*args: Any) -> Any:  # the first-chunk probe, slow enough for a flush to land in it
        probing.set()
        threading.Event().wait(0.5)
        return real_check(*args)

    service.check_image = slow_check  # type: ignore[assignment]
    try:
        rx = receiver(redis, staging)
        size = len(photo)
        upload_id, token = await new_upload(rx, size)
        session = await rx.open(token, upload_id, size)
        try:
            piece = rx.limits.probe_bytes
            write = asyncio.create_task(session.write(service.Chunk(0, photo[:piece], None), commit=False))
            await asyncio.to_thread(probing.wait)
            await session.flush()  # what the idle flusher does every 0.5 s
            await write
            st = await rx.states.get(upload_id)
            assert st is not None
            return session.offset, st.offset
        finally:
            await session.close()
    finally:
        service.check_image = real_check  # type: ignore[assignment]
        await redis.aclose()


def test_bytes_held_for_a_checksum_are_not_recorded_by_a_flush_during_the_probe(cluster: Any, tmp_path: Path,
                                                                                 corpus: Path) -> None:
    """tus writes a checked PATCH body without recording it until the checksum matches. The offset
    used to move before the first piece's probe and the hold to start after it, so an idle flush in
    between recorded unverified bytes (a fresh user's 1-in-400 race: 460 'discarded', yet HEAD
    showed 262144)."""
    photo = (corpus / "photos" / "leica_t_16mp_orient8_gps.jpg").read_bytes()
    written, recorded = asyncio.run(_flush_during_probe(cluster.redis_url, tmp_path, photo))
    assert (written, recorded) == (LimitsSettings().probe_bytes, 0)


async def _commit_after_cancel(redis_url: str, staging: Path) -> tuple[bool, bool, str]:
    redis = aioredis.from_url(redis_url)
    try:
        rx = receiver(redis, staging)
        size = 1 << 20
        upload_id, token = await new_upload(rx, size)
        session = await rx.open(token, upload_id, size)
        try:
            await session.write(Chunk(0, b"x" * 1000, None), commit=False)
            await session.commit()
            staged_before = rx.path(upload_id).exists()
            # what Uploads.cancel does to the shared state (DELETE /api/v1/uploads/<id>)
            await rx.states.finish(upload_id, "abandoned",
                                   error=errors.InvalidTicket("the upload was cancelled by its owner"))
            await session.write(Chunk(1000, b"y" * 1000, None), commit=False)
            try:
                await session.commit()
                refused = ""
            except errors.PixelfoxError as exc:
                refused = str(exc)
        finally:
            await session.close()
        return staged_before, rx.path(upload_id).exists(), refused
    finally:
        await redis.aclose()


def test_a_writer_refused_because_its_upload_was_cancelled_removes_its_staged_file(
        cluster: Any, tmp_path: Path) -> None:
    """The cancelled upload's ``.part`` file stayed until its Redis state expired (an hour) and the
    sweeper took it; the writer that learns of the cancel at its commit now removes it."""
    before, after, refused = asyncio.run(_commit_after_cancel(cluster.redis_url, tmp_path))
    assert (before, after) == (True, False)
    assert refused == "the upload was cancelled by its owner"


async def _sweep(redis_url: str, staging: Path) -> tuple[int, set[str]]:
    redis = aioredis.from_url(redis_url)
    try:
        rx = receiver(redis, staging)
        names: dict[str, str] = {}
        for case in ("open", "abandoned", "abandoned-locked", "failed", "expired", "expired-fresh"):
            upload_id = str(ULID())
            names[upload_id] = case
            rx.path(upload_id).write_bytes(b"staged")
            if not case.startswith("expired"):
                await rx.states.create(upload_id, 100, "user-1")
            if case.startswith("abandoned"):
                await rx.states.finish(upload_id, "abandoned", error=errors.InvalidTicket("cancelled"))
            if case == "failed":
                await rx.states.finish(upload_id, "failed", error=errors.UnsupportedFormat("not an image"))
            if case == "abandoned-locked":  # a writer still holds it: it removes the file at its next commit
                await rx.states.lock(upload_id, "another-node")
            if case != "expired-fresh":  # untouched for a minute
                os.utime(rx.path(upload_id), (time.time() - 60, time.time() - 60))
        removed = await rx.sweep(min_age_s=30)
        return removed, {names[p.stem] for p in staging.glob("*.part")}
    finally:
        await redis.aclose()


def test_the_sweeper_removes_cancelled_and_failed_uploads_files_but_never_an_open_ones(
        cluster: Any, tmp_path: Path) -> None:
    """It removed only files whose state had expired, so a cancelled upload's bytes stayed for the
    state's whole TTL (an hour). A file whose writer holds the lock, an open upload's and a fresh
    one with no state stay."""
    removed, left = asyncio.run(_sweep(cluster.redis_url, tmp_path))
    assert left == {"open", "abandoned-locked", "expired-fresh"}
    assert removed == 3
