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

from pixelfox.cli.launcher import free_port
from pixelfox.storage.fs import FsStore
from pixelfox.storage.keys import content_type_for, original_key, variant_key
from pixelfox.storage.s3 import S3Store
from tests.conftest import ClusterHandle
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


def run_raw(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pixelfox", "migrate-store", *args], env=os.environ | (env or {}),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def test_same_or_overlapping_pools_are_refused_before_anything_moves(tmp_path: Path, seaweed: Seaweed) -> None:
    pool = tmp_path / "pool"
    keys = asyncio.run(fill(FsStore(pool), [p.read_bytes() for p in PHOTOS[:2]]))
    (tmp_path / "link").symlink_to(pool)
    (pool / "inner").mkdir()
    cases = [
        (f"fs:{pool}", f"fs:{pool}/", "same pool"),  # the tester's case: a trailing slash
        (f"fs:{pool}", f"fs:{tmp_path}/link", "same pool"),  # a symlink to it
        (f"fs:{pool}", f"fs:{pool}/../pool", "same pool"),
        (f"fs:{pool}", f"fs:{pool}/inner", "lies inside"),  # the target inside the source
        (f"fs:{pool}/inner", f"fs:{pool}", "lies inside"),  # the source inside the target
    ]
    for src, dst, why in cases:
        res = run_raw(["--from", src, "--to", dst, "--delete-source"])
        assert res.returncode == 2, (src, dst, res.stdout, res.stderr)
        assert why in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert res.stdout == ""
    assert asyncio.run(listing(FsStore(pool))) == keys  # every object still there

    prefix = f"same{secrets.token_hex(4)}"
    assert run(seaweed, "--from", f"fs:{pool}", "--to", f"s3:{prefix}")["copied"] == 2
    for src, dst in ((f"s3:{prefix}/", f"s3:{prefix}"), (f"s3:/{prefix}", f"s3:{prefix}/"), ("s3", f"s3:{prefix}")):
        res = run_raw(["--from", src, "--to", dst, "--delete-source"], env=seaweed.env())
        assert res.returncode == 2 and ("same pool" in res.stderr or "lies inside" in res.stderr), res.stderr

    async def in_s3() -> dict[str, str]:
        async with S3Store(seaweed.settings(prefix=prefix)) as s3:
            return await listing(s3)

    assert asyncio.run(in_s3()) == keys
    other = run_raw(["--from", f"s3:{prefix}", "--to", f"s3:{prefix}x", "--json"], env=seaweed.env())  # apart
    assert other.returncode == 0 and json.loads(other.stdout)["copied"] == 2, other.stderr


def test_missing_source_folder_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing, target = tmp_path / "nonexistent", tmp_path / "target"
    res = run_raw(["--from", f"fs:{missing}", "--to", f"fs:{target}"])
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"source pool fs:{missing}: no such folder" in res.stderr and "Traceback" not in res.stderr
    assert not missing.exists() and not target.exists()

    (tmp_path / "empty").mkdir()
    res = run_raw(["--from", f"fs:{tmp_path / 'empty'}", "--to", f"fs:{target}", "--json"])
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["copied"] == 0
    assert f"warning: the source pool fs:{tmp_path / 'empty'} holds no objects" in res.stderr


def test_concurrency_must_be_positive(tmp_path: Path) -> None:
    for bad in ("0", "-3", "x"):
        res = run_raw(["--from", f"fs:{tmp_path}", "--to", f"fs:{tmp_path / 'b'}", "--concurrency", bad])
        assert res.returncode == 2 and "--concurrency" in res.stderr, res.stderr
    assert not (tmp_path / "b").exists()


def test_unreachable_or_refused_s3_fails_once_up_front(tmp_path: Path, seaweed: Seaweed) -> None:
    pool = tmp_path / "pool"
    asyncio.run(fill(FsStore(pool), [p.read_bytes() for p in PHOTOS]))
    wrong = seaweed.env() | {"PIXELFOX_S3__SECRET_ACCESS_KEY": "not-the-secret"}
    res = run_raw(["--from", f"fs:{pool}", "--to", "s3:x"], env=wrong, timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "target pool s3:" in res.stderr and "SignatureDoesNotMatch" in res.stderr, res.stderr
    assert res.stdout == "" and "failed" not in res.stderr  # one error, no per-object failures

    dead = seaweed.env() | {"PIXELFOX_S3__ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    res = run_raw(["--from", "s3:x", "--to", f"fs:{tmp_path / 'back'}"], env=dead, timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "source pool s3:" in res.stderr and "not reachable" in res.stderr, res.stderr
    assert not (tmp_path / "back").exists()


def test_delete_source_refused_on_a_pool_the_running_cluster_serves(cluster: ClusterHandle, corpus: Path,
                                                                     tmp_path: Path) -> None:
    put = cluster.pixelfox("put", "--json", "--wait", str(corpus / "photos" / "painting_rgb.png"))
    assert put.returncode == 0, put.stderr
    state = json.loads((cluster.root / ".pixelfox" / "cluster.json").read_text())
    live = Path(state["pools"]["storage1"]["data_dir"])
    assert live == (cluster.root / ".pixelfox" / "data" / "storage1").resolve()
    before = asyncio.run(listing(FsStore(live)))
    assert before
    for src in (f"fs:{live}", f"fs:{live.parent}"):  # the pool itself, or a folder holding it
        res = run_raw(["--from", src, "--to", f"fs:{tmp_path / 'new'}", "--delete-source"], cwd=cluster.root)
        assert res.returncode == 2 and "storage1 of the running cluster" in res.stderr, res.stderr
    assert asyncio.run(listing(FsStore(live))) == before
    # copying without deleting stays allowed while it runs
    res = run_raw(["--from", f"fs:{live}", "--to", f"fs:{tmp_path / 'new'}", "--json"], cwd=cluster.root)
    assert res.returncode == 0 and json.loads(res.stdout)["copied"] == len(before), res.stderr
