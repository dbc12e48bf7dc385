"""Uploads and the SQLite write lock, on a real SQLite file and a real redis-server (the manager's
``Uploads``, ``Registry``, ``ImageViews`` and job queue, in this process).

* ``CreateUpload`` with a sha256 used to take the write lock (``BEGIN IMMEDIATE``) before its dedup
  lookup and hold it across that lookup's Redis round trips: with Redis slow, every other write of the
  cluster (each completion, each edit) waited for it. The candidates are now read without the lock,
  which is taken only to confirm the one found.

A failpoint pause (``pixelfox.failpoints``) holds the step open long enough to land in it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nodes.manager.uploads import Uploads
from pixelfox import failpoints
from pixelfox.db.models import User
from tests.ops.uploadrig import add_upload, add_user, uploads_on

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

