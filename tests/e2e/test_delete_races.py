"""Deleting an image races its processing job (issue 5): nothing the job writes may survive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from pixelfox.cli.launcher import Counts
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.jobtools import cli, make_photo, put_json, start_cluster, variant_objects, wait_log

pytestmark = pytest.mark.e2e


async def _delete(manager: str, key: str, slug: str) -> manager_pb2.DeleteImageResponse:
    async with grpc.aio.insecure_channel(manager) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        return await stub.DeleteImage(manager_pb2.DeleteImageRequest(slug=slug), metadata=api_key_metadata(key),
                                      timeout=30)


def test_image_deleted_while_processing_leaves_no_files(tmp_path: Path) -> None:
    # the job holds its node 3 s before decoding: the delete lands while it runs
    local, key = start_cluster(tmp_path / "cluster", Counts(upload=1, proc=1, storage=2, web=0),
                               {"proc": {"PIXELFOX_FAILPOINT": "before-process=sleep(3000)"}})
    try:
        photo = make_photo(tmp_path / "race.jpg", 900, 600, seed=11)
        [out] = put_json(local.root, photo)
        assert out["status"] == "processing", out
        wait_log(local, "manager1", r"dispatch: job \S+ image \S+", timeout_s=30)
        gone = asyncio.run(_delete(local.manager_address.split(",")[0], key, out["id"]))
        assert gone.deleted
        wait_log(local, "manager1", r"was deleted while it processed: deleting the (\d+) objects", timeout_s=60)
        def originals() -> list[Path]:
            return [p for p in (local.root / ".pixelfox" / "data").rglob(f"{out['sha256']}.*")
                    if not p.name.endswith(".meta")]

        # the variants' deletes follow the log line; the original's was deferred while the job wrote (its
        # fence) and goes when the job's writer ends, at about the same moment: wait for both
        deadline = time.monotonic() + 30
        while ((any((left := variant_objects(local.root, out["sha256"])).values()) or originals())
               and time.monotonic() < deadline):
            time.sleep(0.2)
        assert set(left) == {"storage1", "storage2"} and all(files == [] for files in left.values()), left
        assert originals() == []
    finally:
        local.stop(10)


def test_delete_with_a_hung_storage_node_clears_the_healthy_one_at_once(tmp_path: Path) -> None:
    local, key = start_cluster(tmp_path / "cluster", Counts(upload=1, proc=1, storage=2, web=0))
    hung = local.child("storage2").proc
    try:
        res = cli(local.root, "put", "--json", "--wait", str(make_photo(tmp_path / "hung.jpg", 900, 600, seed=12)))
        out = json.loads(res.stdout.splitlines()[0])
        assert out["status"] == "ready", out
        before = variant_objects(local.root, out["sha256"])
        assert before["storage1"] and before["storage2"]  # replicated
        os.kill(hung.pid, signal.SIGSTOP)  # alive to the registry, answers nothing
        started = time.monotonic()
        gone = asyncio.run(_delete(local.manager_address.split(",")[0], key, out["id"]))
        took = time.monotonic() - started
        assert gone.deleted and gone.objects_pending >= 1
        assert variant_objects(local.root, out["sha256"])["storage1"] == []  # not left to the retry loop
        assert took < 15, f"the delete waited {took:.1f} s on the hung node"
        os.kill(hung.pid, signal.SIGCONT)
        deadline = time.monotonic() + 60  # the background retry finishes on the woken node
        while variant_objects(local.root, out["sha256"])["storage2"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert variant_objects(local.root, out["sha256"])["storage2"] == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung.pid, signal.SIGCONT)
        local.stop(10)
