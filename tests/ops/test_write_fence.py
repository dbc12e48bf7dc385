"""The write fence of content-addressed objects (pixelfox.storage.fence) on a real redis-server, and the
manager's deletes through it (nodes.manager.objects.Objects on SQLite, storage deletes recorded).

A writer stores bytes before the rows naming them exist; a delete of another image of the same bytes
must then wait (its keys deferred), a writer must wait for a delete under way, and a writer that died
(its lease ended) must not hold deletes back for ever.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from sqlalchemy import delete, select
from ulid import ULID

from nodes.manager import objects as objects_module
from nodes.manager.dispatch import Dispatcher, DispatchPolicy, Worker
from nodes.manager.objects import DEFERRED, DELETER_WAIT_S, PENDING, Objects
from nodes.manager.registry import NodeRecord
from pixelfox.db.models import Image, ObjectLocation, Upload, Variant
from pixelfox.db.replicas import routing_sessions
from pixelfox.queue import QueuedJob
from pixelfox.storage.fence import DeleteInProgress, WriteFence, deleting_key, fence_sha, job_token, writing_key
from pixelfox.storage.keys import original_key, private_key, variant_key
from pixelfox.v1 import manager_pb2
from tests.dbkit import open_db
from tests.ops.registrykit import FakeRegistry
from tests.uploadnode import receiver


def _sha() -> str:
    return hashlib.sha256(os.urandom(16)).hexdigest()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.from_url(redis_url)
    try:
        yield r
    finally:
        await r.aclose()


def test_every_key_of_an_image_is_fenced_by_its_source_hash() -> None:
    sha = _sha()
    assert fence_sha(original_key(sha, "png")) == sha
    assert fence_sha(variant_key(sha, 3, "thumb", "webp")) == sha
    assert fence_sha(private_key(variant_key(sha, 1, "medium", "avif"), "ab" * 16)) == sha


async def test_a_live_writer_makes_the_deleter_back_off_and_a_flag_makes_the_writer_wait(
        redis: aioredis.Redis) -> None:
    fence, sha = WriteFence(redis), _sha()
    assert await fence.try_enter(sha, "w1", 60)
    assert await fence.writers(sha) == ["w1"]
    ttl = await redis.ttl(writing_key(sha))
    assert 0 < ttl <= 62  # the set goes with its last lease: a writer that died leaves no key behind
    assert await fence.begin_delete(sha) == ""  # a writer is live: not now
    assert await redis.get(deleting_key(sha)) is None  # and the flag was dropped again
    await fence.leave(sha, "w1")
    token = await fence.begin_delete(sha)
    assert token
    assert await fence.begin_delete(sha) == ""  # one deleter at a time
    assert not await fence.try_enter(sha, "w2", 60)  # a delete is under way: not now, and not registered
    assert await fence.writers(sha) == []
    waiting = asyncio.create_task(fence.enter(sha, "w3", 60))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # waits while the delete runs ...
    assert await fence.writers(sha) == ["w3"]  # ... registered, so that later deleters back off
    await fence.end_delete(sha, token)
    await asyncio.wait_for(waiting, 2)
    await fence.leave(sha, "w3")
    assert await redis.zcard(writing_key(sha)) == 0


async def test_a_writer_gives_up_after_its_bound_and_withdraws(redis: aioredis.Redis) -> None:
    fence, sha = WriteFence(redis, max_wait_s=0.3), _sha()
    token = await WriteFence(redis).begin_delete(sha)
    assert token
    with pytest.raises(DeleteInProgress):
        await fence.enter(sha, "w", 60)
    assert await fence.writers(sha) == []
    await fence.end_delete(sha, "someone else's")  # only the holder drops the flag
    assert await redis.get(deleting_key(sha)) is not None
    await fence.end_delete(sha, token)
    assert await redis.get(deleting_key(sha)) is None


async def test_an_expired_writer_no_longer_holds_deletes_back_and_renewing_keeps_one(redis: aioredis.Redis) -> None:
    fence, sha = WriteFence(redis), _sha()
    assert await fence.try_enter(sha, "dead", 0.2)
    assert await fence.try_enter(sha, "alive", 0.2)
    await asyncio.sleep(0.1)
    assert await fence.renew(sha, "alive", 60)
    await asyncio.sleep(0.3)
    assert await fence.begin_delete(sha) == ""  # "alive" renewed its lease
    await fence.leave(sha, "alive")
    assert not await fence.renew(sha, "alive", 60)  # gone: a renew does not bring it back
    token = await fence.begin_delete(sha)
    assert token  # "dead" expired: dropped, the delete goes ahead
    assert await redis.zcard(writing_key(sha)) == 0
    await fence.end_delete(sha, token)


async def test_writers_and_deleters_never_proceed_together(redis: aioredis.Redis) -> None:
    """Many writers and deleters of one hash with random pauses between Redis calls: whoever proceeds
    never overlaps the other kind."""
    sha, rng = _sha(), random.Random(7)
    inside = {"w": 0, "d": 0}
    overlaps: list[str] = []

    async def writer(i: int) -> None:
        fence = WriteFence(redis, poll_s=0.002)
        for n in range(15):
            token = f"w{i}-{n}"
            await fence.enter(sha, token, 30)
            inside["w"] += 1
            if inside["d"]:
                overlaps.append(f"writer {token} with a deleter")
            await asyncio.sleep(rng.random() / 200)
            inside["w"] -= 1
            await fence.leave(sha, token)
            await asyncio.sleep(rng.random() / 200)

    async def deleter() -> None:
        fence = WriteFence(redis)
        for _ in range(40):
            if token := await fence.begin_delete(sha):
                inside["d"] += 1
                if inside["w"]:
                    overlaps.append("deleter with a writer")
                await asyncio.sleep(rng.random() / 200)
                inside["d"] -= 1
                await fence.end_delete(sha, token)
            await asyncio.sleep(rng.random() / 300)

    await asyncio.gather(*(writer(i) for i in range(4)), deleter(), deleter())
    assert overlaps == []


# ---- the manager's deletes through the fence ------------------------------------------------------


class RecordingObjects(Objects):
    """Objects whose storage deletes are recorded instead of sent (``down`` nodes fail them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deleted: list[tuple[str, str]] = []
        self.down: set[str] = set()

    async def _delete_one(self, rec: NodeRecord, key: str) -> bool:
        if rec.node_id in self.down:
            return False
        self.deleted.append((rec.node_id, key))
        return True


@pytest.fixture
async def objects(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[RecordingObjects]:
    async with open_db(tmp_path / "fence.db") as (_, sessions):
        await redis.delete(PENDING, DEFERRED)
        yield RecordingObjects(sessions, FakeRegistry(redis), redis, "", replicas=2)  # type: ignore[arg-type]


async def _stored(objects: Objects, key: str) -> None:
    """``key`` has a replica on s1 and s2 (as an upload's CompleteUpload, or an earlier image, left it)."""
    async with objects.sessions() as s:
        for node in ("s1", "s2"):
            await s.merge(ObjectLocation(key=key, node_id=node, size=10))
        await s.commit()


async def _record_image(objects: Objects, sha: str, key: str) -> None:
    """What CompleteUpload commits for an upload of these bytes: its upload row and image row."""
    async with objects.sessions() as s:
        upload = Upload(id=str(ULID()), size=10, expires_at=datetime.now(UTC) + timedelta(minutes=15))
        s.add(upload)
        await s.flush()
        s.add(Image(id=str(ULID()), slug=str(ULID())[-10:], upload_id=upload.id, sha256=sha, bytes=10,
                    format="png", mime="image/png", width=1, height=1, original_key=key))
        await s.commit()


async def _locations(objects: Objects, key: str) -> list[str]:
    async with objects.sessions() as s:
        return sorted((await s.execute(select(ObjectLocation.node_id).where(ObjectLocation.key == key))).scalars())


async def test_a_delete_during_an_upload_of_the_same_bytes_waits_and_keeps_them(objects: RecordingObjects) -> None:
    sha = _sha()
    key = original_key(sha, "png")
    await _stored(objects, key)  # the deleted image's original; the other upload stored the same key again
    assert await objects.fence.try_enter(sha, "upload:b", 900)
    deleted, pending = await objects.delete_unreferenced([key, variant_key(sha, 1, "thumb", "webp")])
    assert (deleted, pending) == (0, 2)
    assert objects.deleted == []
    assert await _locations(objects, key) == ["s1", "s2"]  # untouched while the writer is live
    assert await objects.pending_count() == 2
    await objects.retry_pending()  # the background pass also leaves it alone
    assert REGISTRY.get_sample_value("pixelfox_objects_pending_deletes", {"state": "deferred"}) == 2
    assert objects.deleted == []
    await _record_image(objects, sha, key)  # CompleteUpload commits the new image ...
    await objects.fence.leave(sha, "upload:b")  # ... leaves the fence ...
    await objects.written(sha)  # ... and the deletes that waited are decided again
    assert objects.deleted == []  # the original is named again: kept, with its locations
    assert await _locations(objects, key) == ["s1", "s2"]
    assert await objects.pending_count() == 0


async def test_a_writer_that_recorded_nothing_lets_the_deferred_delete_go(objects: RecordingObjects) -> None:
    sha = _sha()
    key = original_key(sha, "png")
    await _stored(objects, key)
    assert await objects.fence.try_enter(sha, "upload:c", 900)
    assert await objects.delete_unreferenced([key]) == (0, 1)
    await objects.fence.leave(sha, "upload:c")  # CompleteUpload refused it (cancelled): no image
    assert await objects.retry_pending() == 0  # the next pass deletes it
    assert sorted(objects.deleted) == [("s1", key), ("s2", key)]
    assert await _locations(objects, key) == []


async def test_an_expired_writer_does_not_keep_the_bytes(objects: RecordingObjects) -> None:
    sha = _sha()
    key = original_key(sha, "png")
    await _stored(objects, key)
    assert await objects.fence.try_enter(sha, "upload:died", 0.2)  # its upload node died before completing
    await asyncio.sleep(0.4)
    assert await objects.delete_unreferenced([key]) == (2, 0)
    assert sorted(objects.deleted) == [("s1", key), ("s2", key)]


async def test_a_delete_that_meets_another_deleter_of_the_same_bytes_goes_once_that_one_is_done(
        objects: RecordingObjects, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image deleted while its job ran: the job's variants and the image's deferred original are two
    deletes of one hash at once. The second found the first's flag and left its keys to the next GC pass
    (10 s later, or more); it now waits for the flag to drop and goes at once."""
    sha = _sha()
    key = variant_key(sha, 1, "thumb", "webp")
    await _stored(objects, key)
    other = await objects.fence.begin_delete(sha)  # the first deleter, at work on the same bytes
    assert other

    async def first_done() -> None:
        await asyncio.sleep(0.5)
        await objects.fence.end_delete(sha, other)

    started = time.monotonic()
    _, (deleted, pending) = await asyncio.gather(first_done(), objects.delete_unreferenced([key]))
    assert (deleted, pending) == (2, 0)  # not (0, 1): deferred to the next pass
    assert 0.4 < time.monotonic() - started < DELETER_WAIT_S
    assert sorted(objects.deleted) == [("s1", key), ("s2", key)]
    assert await objects.pending_count() == 0
    # a flag that stays past the wait leaves the keys deferred, counted once
    await _stored(objects, key)
    held = await objects.fence.begin_delete(sha)
    assert held
    monkeypatch.setattr(objects_module, "DELETER_WAIT_S", 0.3)
    assert await objects.delete_unreferenced([key]) == (0, 1)
    assert await objects.pending_count() == 1
    await objects.fence.end_delete(sha, held)


async def test_a_pending_replica_is_not_deleted_while_a_writer_of_its_bytes_is_live(
        objects: RecordingObjects) -> None:
    sha = _sha()
    key = original_key(sha, "png")
    await _stored(objects, key)
    objects.down = {"s2"}
    assert await objects.delete_unreferenced([key]) == (1, 1)  # s2's replica stays pending
    objects.down = set()
    assert await objects.fence.try_enter(sha, "upload:d", 900)  # a new upload stores the same bytes on s2
    assert await objects.retry_pending() == 1
    assert objects.deleted == [("s1", key)]  # not now
    assert REGISTRY.get_sample_value("pixelfox_objects_pending_deletes", {"state": "pending"}) == 1
    assert REGISTRY.get_sample_value("pixelfox_objects_pending_deletes", {"state": "deferred"}) == 0
    await _record_image(objects, sha, key)
    await _located(objects, key, "s2")  # CompleteUpload records the copy it stored on s2
    await objects.fence.leave(sha, "upload:d")
    assert await objects.retry_pending() == 0  # named again: the pending delete is dropped, bytes kept
    assert objects.deleted == [("s1", key)]
    assert REGISTRY.get_sample_value("pixelfox_objects_pending_deletes", {"state": "pending"}) == 0


async def test_a_pending_copy_on_a_node_no_row_names_is_deleted_even_when_the_key_is_named_again(
        objects: RecordingObjects) -> None:
    """A's delete leaves s1's copy pending (s1 hung); B uploads the same bytes to s2 only. The key is
    named again, but no row names s1's copy: it must go, or it stays for ever once B is deleted too."""
    sha = _sha()
    key = original_key(sha, "png")
    await _stored(objects, key)
    objects.down = {"s1"}
    assert await objects.delete_unreferenced([key]) == (1, 1)  # s2 deleted, s1 pending
    assert await objects.fence.try_enter(sha, "upload:b", 900)  # B stores the same bytes on s2 ...
    await _record_image(objects, sha, key)
    await _located(objects, key, "s2")  # ... and records that copy
    await objects.fence.leave(sha, "upload:b")
    objects.down = set()
    assert await objects.retry_pending() == 0
    assert sorted(objects.deleted) == [("s1", key), ("s2", key)]  # s1's unrecorded copy went
    assert await _locations(objects, key) == ["s2"]  # B's copy is kept
    async with objects.sessions() as s:  # B is deleted too: nothing of these bytes is left anywhere
        await s.execute(delete(Image).where(Image.original_key == key))
        await s.commit()
    assert await objects.delete_unreferenced([key]) == (1, 0)
    assert sorted(objects.deleted) == [("s1", key), ("s2", key), ("s2", key)]
    assert await _locations(objects, key) == [] and await objects.pending_count() == 0


async def _located(objects: Objects, key: str, node: str) -> None:
    async with objects.sessions() as s:
        await s.merge(ObjectLocation(key=key, node_id=node, size=10))
        await s.commit()


async def test_a_deletion_under_way_makes_an_upload_wait_until_it_is_over(objects: RecordingObjects) -> None:
    sha = _sha()
    key = original_key(sha, "png")
    await _stored(objects, key)
    gate = asyncio.Event()
    order: list[str] = []
    delete_one = objects._delete_one

    async def slow_delete(rec: NodeRecord, k: str) -> bool:
        await gate.wait()
        order.append(f"delete {rec.node_id}")
        return await delete_one(rec, k)

    objects._delete_one = slow_delete  # type: ignore[method-assign]
    deleting = asyncio.create_task(objects.delete_unreferenced([key]))
    await asyncio.sleep(0.2)  # flag taken, deletes in flight

    async def upload() -> None:
        await WriteFence(objects.redis, poll_s=0.01).enter(sha, "upload:e", 900)
        order.append("write")

    writing = asyncio.create_task(upload())
    await asyncio.sleep(0.2)
    assert not writing.done()
    gate.set()
    assert await deleting == (2, 0)
    await asyncio.wait_for(writing, 2)
    assert order == ["delete s1", "delete s2", "write"] or order == ["delete s2", "delete s1", "write"]


async def test_the_re_check_under_the_flag_reads_the_primary_not_a_lagging_replica(
        redis: aioredis.Redis, tmp_path: Path) -> None:
    """With read replicas, the "still unreferenced?" reads that decide a delete go to the primary: a
    replica that has not yet got B's image row must not make the deleter remove B's bytes."""
    await redis.delete(PENDING, DEFERRED)
    async with open_db(tmp_path / "primary.db") as primary, open_db(tmp_path / "replica.db") as lagging:
        sha = _sha()
        key = original_key(sha, "png")
        other = variant_key(sha, 1, "thumb", "webp")
        on_primary = RecordingObjects(primary.sessions, FakeRegistry(redis), redis, "", replicas=2)  # type: ignore[arg-type]
        on_replica = RecordingObjects(lagging.sessions, FakeRegistry(redis), redis, "", replicas=2)  # type: ignore[arg-type]
        for objs in (on_primary, on_replica):  # A's original on s1 and s2, as both databases know
            await _stored(objs, key)
        await _record_image(on_primary, sha, key)  # B's image of the same bytes: on the primary only (yet)
        await _record_variant(on_primary, key, other)  # and B's variant, stored on s2 (primary only)
        await _located(on_primary, other, "s2")
        await redis.sadd(PENDING, f"s2 {other}")  # an older pending delete of that variant's copy on s2

        routed = routing_sessions(primary.engine, [lagging.engine])
        objs = RecordingObjects(routed, FakeRegistry(redis), redis, "", replicas=2)  # type: ignore[arg-type]
        assert await objs.delete_unreferenced([key]) == (0, 0)
        assert await objs.retry_pending() == 0
        assert objs.deleted == []  # the primary names both: nothing deleted
        assert await _locations(on_primary, key) == ["s1", "s2"]


async def _record_variant(objects: Objects, original: str, key: str) -> None:
    """A variant row naming ``key`` for the image whose original is ``original``."""
    async with objects.sessions() as s:
        img = (await s.execute(select(Image).where(Image.original_key == original))).scalars().one()
        s.add(Variant(image_id=img.id, name="thumb", recipe_version=1, format="webp", key=key,
                      width=1, height=1, bytes=10))
        await s.commit()


async def test_a_hung_node_holds_the_pending_retry_and_its_flags_no_longer_than_the_timeouts(
        objects: RecordingObjects, monkeypatch: pytest.MonkeyPatch) -> None:
    """A storage node that still heartbeats but never answers a delete: each pending delete on it is
    bounded, the other node's deletes go on, and the fence flags are dropped well within the budget."""
    monkeypatch.setattr("nodes.manager.objects.DELETE_TIMEOUT_S", 0.3)
    shas = [_sha() for _ in range(5)]
    keys = [original_key(sha, "png") for sha in shas]
    for key in keys:
        await _stored(objects, key)
    objects.down = {"s1", "s2"}
    assert await objects.delete_unreferenced(keys) == (0, 10)  # every replica pending
    objects.down = set()
    delete_one = objects._delete_one

    async def hung_s1(rec: NodeRecord, key: str) -> bool:
        if rec.node_id == "s1":
            await asyncio.Event().wait()  # never answers
        return await delete_one(rec, key)

    objects._delete_one = hung_s1  # type: ignore[method-assign]
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(objects.retry_pending(), 10) == 5  # s1's five stay pending
    assert asyncio.get_running_loop().time() - started < 2  # one timeout on s1, not one per key (or for ever)
    assert sorted(objects.deleted) == sorted(("s2", k) for k in keys)
    for sha in shas:  # the flags are gone: an upload of these bytes does not wait
        assert not await objects.redis.exists(deleting_key(sha))


async def test_an_upload_node_renews_a_short_lease_and_a_crash_frees_the_fence_within_it(
        redis: aioredis.Redis, tmp_path: Path) -> None:
    """The upload node's writer lease is short and renewed while it waits for the fence, stores and
    completes; a node that dies between storing and CompleteUpload stops renewing, and the fence is free
    once its lease ends (the lease was a ticket's life, 900 s, never renewed)."""
    rx = receiver(redis, tmp_path, max_concurrent=1)
    rx.fence_lease_s, rx.fence_renew_s = 0.6, 0.1
    gate = asyncio.Event()

    async def put_original(*args: Any) -> str:
        await gate.wait()
        return "stored"

    rx._put_original = put_original  # type: ignore[assignment,method-assign]
    info = SimpleNamespace(format="png")
    sha = _sha()
    await redis.set(deleting_key(sha), "d:other", px=60_000)  # a delete of these bytes is under way
    storing = asyncio.create_task(rx.store(tmp_path / "x", SimpleNamespace(upload_id="a"), sha, info))  # type: ignore[arg-type]
    await asyncio.sleep(1.2)  # waiting for it, two leases long: still registered
    assert await rx.fence.writers(sha) == ["upload:a"]
    await redis.delete(deleting_key(sha))
    await asyncio.sleep(1.2)  # storing, two leases long: still registered
    assert await rx.fence.writers(sha) == ["upload:a"] and not await rx.fence.begin_delete(sha)
    gate.set()
    assert await storing == "stored"
    for task in getattr(rx, "_renewals", {}).values():  # the node dies before CompleteUpload: nothing renews
        task.cancel()
    await asyncio.sleep(0.8)
    assert await rx.fence.writers(sha) == []
    assert await rx.fence.begin_delete(sha)  # deletes of those bytes go on within a lease

    other = _sha()  # a node that lives: unfence stops the renewal and leaves
    assert await rx.store(tmp_path / "y", SimpleNamespace(upload_id="b"), other, info) == "stored"  # type: ignore[arg-type]
    await rx.unfence(other, "b")
    await asyncio.sleep(0.3)
    assert await rx.fence.writers(other) == [] and "b" not in rx._renewals


# ---- the dispatcher holds the fence for a job in flight ---------------------------------------------


class FakeQueue:
    def __init__(self) -> None:
        self.deferred: list[str] = []
        self.retried: list[str] = []

    async def defer(self, job: QueuedJob, delay_s: float, drop: QueuedJob | None = None) -> None:
        self.deferred.append(job.image_id)

    async def retry(self, job: QueuedJob, reason: str) -> float:
        self.retried.append(job.image_id)
        return 1.0


async def test_the_dispatcher_fences_a_job_from_dispatch_to_its_report(redis: aioredis.Redis) -> None:
    sha, queue = _sha(), FakeQueue()
    d = Dispatcher(None, FakeRegistry(redis), queue, replicas=1, lease_s=60,  # type: ignore[arg-type]
                   policy=DispatchPolicy(job_lease_s=5))
    written: list[str] = []

    async def on_written(s: str) -> None:
        written.append(s)

    d.on_written = on_written
    worker = Worker("p1", 2, [])
    d.workers = {"p1": worker}

    async def message(job: QueuedJob) -> manager_pb2.Job:
        return manager_pb2.Job(job_id=job.entry_id, lease_id=f"lease-{job.entry_id}", image_id=job.image_id,
                               sha256=sha)

    d._job_message = message  # type: ignore[method-assign]
    token = await d.fence.begin_delete(sha)
    await d._dispatch(QueuedJob("1-0", "img-a"))
    assert queue.deferred == ["img-a"] and worker.inflight == {}  # a delete runs: the job waits a second
    await d.fence.end_delete(sha, token)

    await d._dispatch(QueuedJob("2-0", "img-a"))
    assert list(worker.inflight) == ["2-0"]
    assert await d.fence.writers(sha) == [job_token("lease-2-0")]
    assert await d.fence.begin_delete(sha) == ""  # deletes of these bytes wait for the job
    await d._on_failure(worker, manager_pb2.JobFailure(job_id="2-0", lease_id="lease-2-0", message="x"))
    assert queue.retried == ["img-a"]
    assert await d.fence.writers(sha) == []  # its report ended the fence
    await asyncio.sleep(0.05)
    assert written == [sha]


# ---- a re-key's copies, journalled until its commit (Objects.copying) ---------------------------------


async def test_the_copies_of_a_change_that_did_not_commit_are_deleted_and_a_named_one_is_kept(
        objects: RecordingObjects) -> None:
    """A visibility change copied an image's original to its private key on s1 and s2, and its public key on
    s2 (another image of the same bytes holds that one), then its commit failed (the image was deleted):
    the private copies go at once, the copy a row names stays, and nothing is left pending."""
    sha = _sha()
    public, private = original_key(sha, "png"), private_key(original_key(sha, "png"), "cd" * 16)
    await _located(objects, public, "s2")
    with pytest.raises(RuntimeError, match="commit failed"):
        async with objects.copying() as made, objects.fence.writing(sha, 60):
            for node, key in (("s1", private), ("s2", private), ("s2", public)):
                await objects.journal_copy(made, node, key)
            assert await objects.pending_count() == 3
            assert await objects.retry_pending() == 3  # a pass meanwhile: the change's fence keeps them
            assert objects.deleted == []
            raise RuntimeError("commit failed")
    assert sorted(objects.deleted) == [("s1", private), ("s2", private)]
    assert await _locations(objects, public) == ["s2"] and await objects.pending_count() == 0


async def test_the_copies_of_a_committed_change_stay_and_leave_the_journal(objects: RecordingObjects) -> None:
    sha = _sha()
    private = private_key(original_key(sha, "png"), "ef" * 16)
    async with objects.copying() as made, objects.fence.writing(sha, 60):
        for node in ("s1", "s2"):
            await objects.journal_copy(made, node, private)
        for node in ("s1", "s2"):  # the commit records them
            await _located(objects, private, node)
    assert await objects.pending_count() == 0
    assert await objects.retry_pending() == 0 and objects.deleted == []
    assert await _locations(objects, private) == ["s1", "s2"]


async def test_the_copies_of_a_manager_that_died_mid_change_go_once_its_fence_lease_ends(
        objects: RecordingObjects) -> None:
    """The manager died between its copies and its commit: no undo ran, but the journal is in Redis; the
    retry pass leaves the copies while the change's fence lease lasts (its commit could still come), then
    deletes them."""
    sha = _sha()
    private = private_key(original_key(sha, "png"), "0a" * 16)
    assert await objects.fence.try_enter(sha, "rekey:died", 0.3)
    made: list[str] = []
    for node in ("s1", "s2"):
        await objects.journal_copy(made, node, private)
    assert await objects.retry_pending() == 2 and objects.deleted == []
    await asyncio.sleep(0.5)  # the lease ended: the change will not commit
    assert await objects.retry_pending() == 0
    assert sorted(objects.deleted) == [("s1", private), ("s2", private)]


async def test_a_deleted_keys_replica_debt_goes_with_its_rows(objects: RecordingObjects) -> None:
    """An object short of copies (a debt, have 1 of 2) that is deleted (no image names it any more: a visibility
    change's old keys): its debt went only at the repair's next pass, and `pixelfox status` counted the key as
    lost meanwhile (a debt with no copy); it goes in the delete's own transaction now."""
    from pixelfox.db.models import ReplicaDebt

    sha = _sha()
    key = original_key(sha, "png")
    await _located(objects, key, "s1")
    async with objects.sessions() as s:
        s.add(ReplicaDebt(key=key, image_id=str(ULID()), have=1, want=2, since=datetime.now(UTC), last_error=""))
        await s.commit()
    assert await objects.delete_unreferenced([key]) == (1, 0)
    async with objects.sessions() as s:
        assert (await s.execute(select(ReplicaDebt).where(ReplicaDebt.key == key))).scalars().all() == []
    assert await _locations(objects, key) == [] and objects.deleted == [("s1", key)]
