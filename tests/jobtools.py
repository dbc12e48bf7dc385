"""Helpers for the job-reliability tests (tests/e2e/test_jobs.py, tests/chaos/test_chaos.py).

Everything goes through public faces: the ``pixelfox`` CLI and the manager's gRPC API with the
local admin's API key; logs are read only for figures and for knowing *when* to strike.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from PIL import Image

from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.client.images import image_to_json
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.conftest import start_local


def make_photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """Write a photo-like JPEG (gradient + soft noise, unique per ``seed``) of ``width`` x ``height`` px."""
    base = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((max(1, width // 4), max(1, height // 4)), 40 + seed % 50).resize((width, height))
    third = Image.radial_gradient("L").resize((width, height)).point(lambda v, s=seed: (v + s * 7) % 256)
    buf = io.BytesIO()
    Image.merge("RGB", (base, noise, third)).save(buf, "JPEG", quality=88)
    path.write_bytes(buf.getvalue())
    return path


def start_cluster(root: Path, counts: Counts, role_env: dict[str, dict[str, str]] | None = None,
                  appendfsync: str = "everysec") -> tuple[LocalCluster, str]:
    """Start a LocalCluster in ``root``; returns it and the local admin's API key."""
    local = LocalCluster(root, counts, role_env=role_env or {}, redis_appendfsync=appendfsync)
    return local, start_local(local, timeout_s=120, grace_s=5)


def start_with_proc(root: Path, workers: int, proc_env: dict[str, str] | None = None) -> tuple[LocalCluster, str, int]:
    """A LocalCluster in ``root`` (1 manager, 1 upload node, 1 storage node, no web node) with one
    processing node ``proc1`` of ``workers`` slots and ``proc_env`` on top of its usual environment
    (``start()`` would give it cores / nodes slots). Returns the cluster, the local admin's API key
    and the processing node's pid."""
    local = LocalCluster(root, Counts(upload=1, proc=0, storage=1, web=0), role_env={"proc": dict(proc_env or {})})

    def add_proc(local: LocalCluster) -> None:
        local.add_proc("proc1", workers)
        local.counts.proc = 1  # wait_ready waits for it too
        asyncio.run(local.wait_ready(90))

    key = start_local(local, grace_s=5, then=add_proc)
    return local, key, local.child("proc1").proc.pid


def cli(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``pixelfox`` CLI in the cluster folder."""
    return subprocess.run([sys.executable, "-m", "pixelfox", *args], cwd=root, capture_output=True, text=True,
                          timeout=timeout, check=False)


def put_json(root: Path, *files: Path, timeout: float = 300) -> list[dict[str, Any]]:
    """``pixelfox put --json FILE...`` -> its JSON lines (one per file)."""
    r = cli(root, "put", "--json", *map(str, files), timeout=timeout)
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def put_retrying(root: Path, file: Path, tries: int = 5, timeout: float = 300) -> dict[str, Any]:
    """Upload one file like a patient client: again (after a pause) while the cluster answers UNAVAILABLE.

    Returns the last ``put --json`` object; an upload that was rejected for another reason is returned as is.
    """
    out: dict[str, Any] = {}
    for i in range(tries):
        [out] = put_json(root, file, timeout=timeout) or [{"status": "rejected", "error": {"code": "no-output"}}]
        if out["status"] not in ("rejected", "paused") or out.get("error", {}).get("code") not in (
                "unavailable", "no-output", "no-node-available", "internal"):
            return out
        time.sleep(1 + i)
    return out


async def _get(address: str, key: str, slug: str) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(address.split(",")[0]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        img = await stub.GetImage(manager_pb2.GetImageRequest(slug=slug), metadata=api_key_metadata(key), timeout=10)
        return image_to_json(img)


def get_image(local: LocalCluster, key: str, slug: str) -> dict[str, Any]:
    """The image as the public API serves it (``GetImage`` -> the ``put --json`` shape)."""
    return asyncio.run(_get(local.manager_address, key, slug))


def wait_final(local: LocalCluster, key: str, slug: str, timeout_s: float = 120) -> dict[str, Any]:
    """Poll GetImage until the image is ready or failed (the last answer on timeout)."""
    deadline = time.monotonic() + timeout_s
    img: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            img = get_image(local, key, slug)
            if img["status"] in ("ready", "failed"):
                return img
        except grpc.aio.AioRpcError:
            pass  # manager restarting
        time.sleep(0.5)
    return img


async def _newest(address: str, key: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` images, page by page (the manager answers at most 200 per call)."""
    out: list[dict[str, Any]] = []
    async with grpc.aio.insecure_channel(address.split(",")[0]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        before = ""
        while len(out) < limit:
            reply = await stub.ListImages(manager_pb2.ListImagesRequest(limit=min(200, limit - len(out)),
                                                                        before=before),
                                          metadata=api_key_metadata(key), timeout=10)
            out += [image_to_json(i) for i in reply.images]
            if not reply.images:
                break
            before = reply.images[-1].slug
    return out


def newest_images(local: LocalCluster, key: str, limit: int = 50) -> list[dict[str, Any]]:
    """The admin user's newest images (``ListImages``), newest first."""
    return asyncio.run(_newest(local.manager_address, key, limit))


def log_text(local: LocalCluster, name: str) -> str:
    path = local.state / "logs" / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_log(local: LocalCluster, name: str, pattern: str, timeout_s: float = 60, after: int = 0) -> re.Match[str]:
    """Wait until ``pattern`` (regex) appears in node ``name``'s log past offset ``after``."""
    deadline = time.monotonic() + timeout_s
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        m = rx.search(log_text(local, name), after)
        if m:
            return m
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not in {name}.log after {timeout_s} s")


def variant_set_ok(img: dict[str, Any]) -> bool:
    """Exactly one variant per (name, format), and at least one."""
    pairs = [(v["name"], v["format"]) for v in img["variants"]]
    return bool(pairs) and len(pairs) == len(set(pairs))


def variant_objects(root: Path, sha256: str) -> dict[str, list[str]]:
    """Storage node -> sorted variant object files of the original ``sha256`` (sidecars, temp files excluded)."""
    out: dict[str, list[str]] = {}
    for node in sorted((root / ".pixelfox" / "data").glob("storage*")):
        files = [p for p in node.rglob("*") if p.is_file() and f"/{sha256}/r" in str(p)
                 and not p.name.endswith(".meta") and ".tmp-" not in p.name]
        out[node.name] = sorted(str(p.relative_to(node)) for p in files)
    return out


def status_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of process ``pid`` from ``/proc/PID/status``, in MB (MiB): ``VmRSS`` (resident
    now) or ``VmHWM`` (the resident peak). FileNotFoundError when the process is gone, KeyError for an
    unknown field."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0]) / 1024  # "123456 kB"
    raise KeyError(field)
