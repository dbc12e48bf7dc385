"""Uploads and the SQLite write lock, on a real SQLite file and a real redis-server (the manager's
``Uploads``, ``Registry``, ``ImageViews`` and job queue, in this process).

* ``CreateUpload`` with a sha256 used to take the write lock (``BEGIN IMMEDIATE``) before its dedup
  lookup and hold it across that lookup's Redis round trips: with Redis slow, every other write of the
  cluster (each completion, each edit) waited for it. The candidates are now read without the lock,
  which is taken only to confirm the one found.
* A completion that made a new image read its answer after the commit: a delete landing in that
  instant made the upload node get NotFound for the image it had just created. The answer is now built
  in the transaction that creates the image.

Failpoint pauses (``pixelfox.failpoints``) hold each step open long enough to land in it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from nodes.manager.uploads import Uploads
from pixelfox import failpoints
from pixelfox.db.engine import begin_write
from pixelfox.db.models import Image, User
from pixelfox.v1 import common_pb2
from tests.ops.uploadrig import SITE, add_upload, add_user, uploads_on

#: how long the dedup lookup's Redis step is held (s); the other write starts LAND_S into it
SLOW_REDIS_S = 4.0
LAND_S = 1.0


@pytest.fixture
async def uploads(redis_url: str, tmp_path: Path) -> AsyncIterator[Uploads]:
    async with uploads_on(redis_url, tmp_path / "uploads.db") as up:
        yield up


def _sha() -> str:
    return hashlib.sha256(os.urandom(16)).hexdigest()


async def test_a_dedup_lookup_waiting_on_redis_blocks_no_other_write(uploads: Uploads,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    user = await add_user(uploads)
    sha = _sha()
    first = await uploads.complete(await add_upload(uploads, user, sha, ["s1"]))
    other = await add_upload(uploads, user, _sha(), ["s1"])  # another upload of the user's, about to complete
    monkeypatch.setitem(failpoints._sleeps, "dedup-expiry-read", SLOW_REDIS_S)
    owner = User(id=user, name="x", password_hash="x")
    lookup = asyncio.create_task(uploads.create(owner, "a.png", 10, "image/png", sha256=sha))
    await asyncio.sleep(LAND_S)  # the lookup waits on Redis now
    assert not lookup.done()
    t0 = time.monotonic()
    done = await uploads.complete(other)  # a write: it used to wait for the lookup's write lock
    took = time.monotonic() - t0
    answer = await lookup
    assert answer.deduplicated and answer.image.slug == first.image.slug and not answer.upload_id
    assert not done.deduplicated and done.image.sha256 == other.sha256
    # held SLOW_REDIS_S - LAND_S = 3 s behind the lock before; a loaded box still answers in well under 2 s
    assert took < SLOW_REDIS_S - LAND_S - 1.0, f"CompleteUpload waited {took:.2f} s for a dedup lookup"


async def test_a_completion_answers_the_image_it_made_even_if_deleted_at_once(
        uploads: Uploads, monkeypatch: pytest.MonkeyPatch) -> None:
    user = await add_user(uploads)
    c = await add_upload(uploads, user, _sha(), ["s1"])
    monkeypatch.setitem(failpoints._sleeps, "before-complete-answer", 1.0)
    completing = asyncio.create_task(uploads.complete(c))
    slug = ""
    while not slug:  # the image is committed: delete it while the completion has not answered yet
        await asyncio.sleep(0.05)
        async with uploads.sessions() as s:
            slug = await s.scalar(select(Image.slug).where(Image.upload_id == c.upload_id)) or ""
    async with uploads.sessions() as s:
        await begin_write(s)
        assert (await s.execute(delete(Image).where(Image.slug == slug))).rowcount == 1
        await s.commit()
    answer = await completing  # used to raise NotFound ("no such image")
    assert not answer.deduplicated and answer.image.slug == slug
    assert answer.image.status == common_pb2.IMAGE_STATUS_PROCESSING
    assert (answer.image.sha256, answer.image.bytes, answer.image.width, answer.image.height) == (c.sha256, 10, 3, 2)
    assert answer.image.url == f"{SITE}/i/{slug}" and answer.image.owner_id == user
    assert answer.image.owner == f"u{user}"[:30]  # the owner's name, read in the transaction
