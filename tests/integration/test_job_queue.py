"""JobQueue on a real redis-server: lanes, back-off, delayed set, dead letters, known set (issue 7)."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from pixelfox.cli.launcher import free_port
from pixelfox.queue import JobQueue
from pixelfox.queue.streams import backoff_s


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", ""],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait()


@pytest.fixture
async def q(redis_url: str) -> AsyncIterator[JobQueue]:
    r = aioredis.from_url(redis_url)
    await r.flushdb()
    queue = JobQueue(r, "m1", lease_s=0.5, max_attempts=3, max_lost=2, backoff_base_s=0.1, backoff_cap_s=0.4)
    await queue.ensure_group()
    yield queue
    await r.aclose()


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(1)
    for attempt in range(8):
        d = min(60.0, 1.0 * 2**attempt)
        samples = [backoff_s(attempt, 1.0, 60.0, rng) for _ in range(200)]
        assert all(d / 2 <= s <= d for s in samples)
        assert max(samples) - min(samples) > d / 10  # spread, not one value


async def test_interactive_lane_goes_first_and_known_tracks_jobs(q: JobQueue) -> None:
    await q.enqueue("batch-1", lane="batch", kind="reprocess_image", recipe=2)
    await q.enqueue("upload-1")
    assert await q.known(["batch-1", "upload-1", "other"]) == [True, True, False]
    first, second = (await q.take(1, 0))[0], (await q.take(1, 0))[0]
    assert (first.image_id, first.lane) == ("upload-1", "interactive")
    assert (second.image_id, second.lane, second.kind, second.recipe) == ("batch-1", "batch", "reprocess_image", 2)
    await q.ack(first)
    assert await q.known(["upload-1", "batch-1"]) == [False, True]
    assert await q.take(1, 0) == []


async def test_retry_waits_in_the_delayed_set_then_dead_letters(q: JobQueue) -> None:
    await q.enqueue("img", gpu=True, cpu=2.5)
    job = (await q.take(1, 0))[0]
    delays = []
    for _ in range(2):
        delay = await q.retry(job, "boom")
        assert delay is not None
        delays.append(delay)
        assert await q.take(1, 0) == []  # not before it is due
        assert len(await q.delayed()) == 1
        await asyncio.sleep(delay + 0.05)
        assert await q.promote_due() == 1
        job = (await q.take(1, 0))[0]
        assert job.gpu and job.cpu == 2.5 and job.reason == "boom"
    assert job.attempt == 2 and 0.05 <= delays[0] <= 0.1 and 0.1 <= delays[1] <= 0.2
    assert await q.retry(job, "boom again") is None  # third failure: dead
    dead = await q.dead()
    assert [(d.image_id, d.attempt, d.reason) for d in dead] == [("img", 3, "boom again")]
    assert await q.known(["img"]) == [False]
    revived = await q.revive(dead[0].entry_id)
    assert revived is not None and revived.attempt == 0
    assert await q.dead_count() == 0
    again = (await q.take(1, 0))[0]
    assert again.image_id == "img" and again.attempt == 0


async def test_lost_runs_are_counted_and_a_manager_lease_is_retaken(q: JobQueue, redis_url: str) -> None:
    await q.enqueue("poison")
    job = (await q.take(1, 0))[0]
    assert await q.requeue(job, lost=True)
    job = (await q.take(1, 0))[0]
    assert job.lost == 1
    # this manager "dies" holding the job: another manager takes it after lease_s
    other = JobQueue(q.redis, "m2", lease_s=0.5, max_lost=2)
    assert await other.take(1, 0) == []
    await asyncio.sleep(0.6)
    taken = await other.take(1, 0)
    assert [j.entry_id for j in taken] == [job.entry_id]
    assert not await other.requeue(taken[0], lost=True)  # second lost run: dead letter (max_lost=2)
    assert (await q.dead())[0].reason.startswith("lost 2 times")


async def test_enqueue_if_idle_queues_an_image_once_however_many_ask_at_once(q: JobQueue) -> None:
    """Overlapping `reprocess --all` runs checked the known set, then queued: 4 runs queued one
    image up to 4 times. The check and the add are one Lua step now."""
    await q.enqueue("busy-1")  # an upload job already live for this one
    ids = await asyncio.gather(*(q.enqueue_if_idle(image, recipe=4)
                                 for image in ["idle-1"] * 20 + ["busy-1"] * 5 + ["idle-2"] * 3))
    assert [i is not None for i in ids[:20]].count(True) == 1
    assert all(i is None for i in ids[20:25]) and [i is not None for i in ids[25:]].count(True) == 1
    jobs = await q.take(count=50, block_ms=0)
    assert sorted((j.image_id, j.kind, j.lane) for j in jobs) == [
        ("busy-1", "process_image", "interactive"), ("idle-1", "reprocess_image", "batch"),
        ("idle-2", "reprocess_image", "batch")]
    assert next(j for j in jobs if j.image_id == "idle-1").recipe == 4
    assert await q.known(["idle-1", "idle-2", "busy-1"]) == [True, True, True]


async def test_a_restarted_consumer_takes_its_dead_selfs_entries_back_at_once(redis_url: str) -> None:
    """A manager that dies holding jobs and comes back under its node id gets them back at its
    first take, long before the 600 s lease; another manager does not; a job the new life took
    itself is not handed out twice."""
    r = aioredis.from_url(redis_url)
    await r.flushdb()
    try:
        dead = JobQueue(r, "m1", lease_s=600)
        await dead.ensure_group()
        await dead.enqueue("held-1")
        await dead.enqueue("held-2", lane="batch", kind="reprocess_image")
        held = await dead.take(2, 0)
        assert sorted(j.image_id for j in held) == ["held-1", "held-2"]
        await dead.enqueue("fresh")
        other = JobQueue(r, "m2", lease_s=600)
        assert [j.image_id for j in await other.take(5, 0)] == ["fresh"]  # not m1's held ones
        reborn = JobQueue(r, "m1", lease_s=600)
        first = await reborn.take(1, 0)
        second = await reborn.take(1, 0)
        assert [(j.entry_id, j.image_id, j.lane) for j in first + second] == sorted(
            (j.entry_id, j.image_id, j.lane) for j in held)
        assert await reborn.take(5, 0) == []  # each once, and nothing of m2's
        pending = await r.xpending_range("pixelfox:{jobs}:stream", "dispatchers", "-", "+", 10)
        assert sorted((p["consumer"].decode(), p["times_delivered"]) for p in pending) == [("m1", 2), ("m2", 1)]
    finally:
        await r.aclose()


async def test_an_orphan_another_manager_took_over_meanwhile_stays_with_it(redis_url: str) -> None:
    """The restarted consumer read its orphans, then another manager took one over (its lease ran out):
    that one stays with the other manager, not claimed back from under it."""
    r = aioredis.from_url(redis_url)
    await r.flushdb()
    try:
        dead = JobQueue(r, "m1", lease_s=600)
        await dead.ensure_group()
        await dead.enqueue("a")
        await dead.enqueue("b")
        assert len(await dead.take(2, 0)) == 2
        reborn = JobQueue(r, "m1", lease_s=600)
        first = await reborn.take(1, 0)  # reads both orphans, takes one
        await asyncio.sleep(0.3)
        await reborn.touch(first)  # the one it works on stays its own
        other = JobQueue(r, "m2", lease_s=0.2)
        taken = await other.take(5, 0)  # its lease is short: it takes the idle one over
        assert [j.image_id for j in taken] == [i for i in ("a", "b") if i != first[0].image_id]
        assert await reborn.take(5, 0) == []  # not claimed back
        pending = await r.xpending_range("pixelfox:{jobs}:stream", "dispatchers", "-", "+", 10)
        assert sorted(p["consumer"].decode() for p in pending) == ["m1", "m2"]
    finally:
        await r.aclose()
