"""``pixelfox migrate-store``: local pool -> S3 (a real SeaweedFS) and back, resumable and verified."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from pixelfox.storage.fs import FsStore
from pixelfox.storage.keys import content_type_for, original_key, variant_key
from pixelfox.storage.s3 import S3Store
from tests.seaweed import Seaweed

PHOTOS = sorted((Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "photos").glob("*.jpg"))[:4]


async def fill(store: FsStore, blobs: list[bytes]) -> dict[str, str]:
    out = {}
    for i, data in enumerate(blobs):
        sha = hashlib.sha256(data).hexdigest()
        key = original_key(sha, "jpg") if i % 2 == 0 else variant_key(sha, 1, "thumb", "jpeg")

        async def chunks(d: bytes = data) -> AsyncIterator[bytes]:
            yield d

        await store.put(key, chunks(), content_type=content_type_for(key), sha256=sha, size=len(data))
        out[key] = sha
    return out


def run(seaweed: Seaweed, *args: str) -> dict[str, int]:
    env = os.environ | seaweed.env()
    res = subprocess.run([sys.executable, "-m", "pixelfox", "migrate-store", "--json", *args], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


async def listing(store: FsStore | S3Store) -> dict[str, str]:
    out = {}
    async for key in store.list_keys():
        info = await store.stat(key)
        assert info is not None
        out[key] = info.sha256
    return out


def test_fs_to_s3_and_back_resumable(tmp_path: Path, seaweed: Seaweed) -> None:
    src = FsStore(tmp_path / "pool")
    blobs = [p.read_bytes() for p in PHOTOS]
    first = asyncio.run(fill(src, blobs[:3]))
    prefix = f"mig{secrets.token_hex(4)}"

    r1 = run(seaweed, "--from", f"fs:{src.root}", "--to", f"s3:{prefix}")
    assert (r1["copied"], r1["present"], r1["failed"]) == (3, 0, 0)
    assert r1["bytes_copied"] == sum(len(b) for b in blobs[:3])

    # online: a write lands in the source meanwhile; the next run copies only that one
    more = asyncio.run(fill(src, blobs[3:]))
    r2 = run(seaweed, "--from", f"fs:{src.root}", "--to", f"s3:{prefix}")
    assert (r2["copied"], r2["present"], r2["failed"]) == (len(more), 3, 0)

    async def in_s3() -> dict[str, str]:
        async with S3Store(seaweed.settings(prefix=prefix)) as s3:
            return await listing(s3)

    assert asyncio.run(in_s3()) == first | more  # every key, every SHA-256

    # and back to a fresh local pool, deleting from S3 as each object verifies
    back = tmp_path / "back"
    r3 = run(seaweed, "--from", f"s3:{prefix}", "--to", f"fs:{back}", "--delete-source")
    assert (r3["copied"], r3["deleted"], r3["failed"]) == (4, 4, 0)
    assert asyncio.run(listing(FsStore(back))) == first | more
    assert asyncio.run(in_s3()) == {}
    for key, sha in (first | more).items():  # the files themselves hash right
        assert hashlib.sha256((back / key).read_bytes()).hexdigest() == sha
