"""Helpers for the upload tests: a cuttable TCP proxy, big test images, raw upload streams."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import io
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import google_crc32c
import grpc
import redis
import requests
from PIL import Image

from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.grpcx.auth import api_key_metadata, node_metadata
from pixelfox.ratelimit import state_key
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc, upload_pb2, upload_pb2_grpc
from tests.conftest import start_local


class Proxy:
    """A TCP proxy on 127.0.0.1 to ``target`` (settable); :meth:`cut` aborts every open connection."""

    def __init__(self) -> None:
        self.target = ""
        self.conns: list[asyncio.Transport] = []
        self.bytes_up = 0
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.cut_after = 0  # > 0: cut every connection once this many bytes went upstream

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        host, port = self.target.rsplit(":", 1)
        try:
            ur, uw = await asyncio.open_connection(host, int(port))
        except OSError:
            w.close()
            return
        self.conns += [w.transport, uw.transport]  # type: ignore[list-item]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    if up:
                        self.bytes_up += len(data)
                        if self.cut_after and self.bytes_up >= self.cut_after:
                            self.cut_after = 0
                            self.cut()
                            return
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(r, uw, True), pipe(ur, w, False))

    def cut(self) -> None:
        """Abort every connection now (RST), like a dropped Wi-Fi link; new ones are still accepted."""
        for t in self.conns:
            t.abort()
        self.conns.clear()

    async def close(self) -> None:
        self.cut()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server:
            self.server.close()
            await self.server.wait_closed()


def big_png(path: Path, side: int) -> str:
    """Write an uncompressed ``side``x``side`` RGB PNG (about 3*side² bytes) that is cheap to process.

    A smooth gradient with a random corner (so every file is new to dedup); returns its sha256.
    """
    im = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    im.paste(Image.frombytes("RGB", (16, 16), os.urandom(16 * 16 * 3)), (0, 0))
    im.save(path, compress_level=0)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def chunk(offset: int, data: bytes) -> upload_pb2.UploadRequest:
    return upload_pb2.UploadRequest(
        chunk=upload_pb2.UploadChunk(offset=offset, data=data, crc32c=google_crc32c.value(data)))


def header(ticket: manager_pb2.CreateUploadResponse, size: int, sha: str = "") -> upload_pb2.UploadRequest:
    return upload_pb2.UploadRequest(header=upload_pb2.UploadHeader(
        ticket=ticket.ticket, upload_id=ticket.upload_id, size=size, sha256=sha, filename="x.png"))


async def create(manager: str, api_key: str, size: int) -> manager_pb2.CreateUploadResponse:
    async with grpc.aio.insecure_channel(manager) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        return await stub.CreateUpload(manager_pb2.CreateUploadRequest(filename="x.png", size=size,
                                                                       content_type="image/png"),
                                       metadata=api_key_metadata(api_key), timeout=10)


async def wait_ready(manager: str, api_key: str, slug: str, timeout_s: float = 120) -> common_pb2.Image:
    async with grpc.aio.insecure_channel(manager) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            img = await stub.GetImage(manager_pb2.GetImageRequest(slug=slug), metadata=api_key_metadata(api_key),
                                      timeout=10)
            if img.status != common_pb2.IMAGE_STATUS_PROCESSING or loop.time() > deadline:
                return img
            await asyncio.sleep(0.25)


def upload_stub(address: str) -> tuple[grpc.aio.Channel, upload_pb2_grpc.UploadServiceStub]:
    ch = grpc.aio.insecure_channel(address)
    return ch, upload_pb2_grpc.UploadServiceStub(ch)


@contextlib.contextmanager
def own_cluster(root: Path, upload: int = 2, web: int = 0, **env: str) -> Iterator[LocalCluster]:
    """A private LocalCluster (1 storage, 1 proc, ``upload`` upload nodes, ``web`` web nodes) with extra settings."""
    local = LocalCluster(root, Counts(upload=upload, proc=1, storage=1, web=web), extra_env=dict(env))
    start_local(local)
    try:
        yield local
    finally:
        local.stop()


class ThreadedProxy:
    """A :class:`Proxy` on its own event loop thread, for tests driving blocking clients (tuspy)."""

    def __init__(self, target: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxy = Proxy()
        self.proxy.target = target
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.address = asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def new_user_key(local: LocalCluster, name: str, admin: bool = False) -> str:
    """Create user ``name`` (an admin with ``admin``; cluster credential) and return a fresh API key for it."""
    md = node_metadata(local.secret)
    async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        await stub.CreateUser(manager_pb2.CreateUserRequest(name=name, password="pw " + name * 2, admin=admin),
                              metadata=md, timeout=10)
        reply = await stub.CreateApiKey(manager_pb2.CreateApiKeyRequest(user_name=name, label="t"), metadata=md,
                                        timeout=10)
    return reply.key


async def refused_stream(address: str, msgs: list[upload_pb2.UploadRequest]) -> grpc.RpcError:
    """Send ``msgs`` as one ``Upload`` stream and return the error the upload node ended it with.

    For a stream the server may end while messages are still being written: grpc.aio replaces the
    server's status with INTERNAL "Internal error from Core" when a write fails because the call
    has just ended (grpc/grpc#36066; a few percent of runs on a loaded machine), so the stream goes
    through the synchronous client, which stops writing and keeps the server's status.
    """
    def run() -> upload_pb2.UploadReceipt:
        with grpc.insecure_channel(address) as ch:
            return upload_pb2_grpc.UploadServiceStub(ch).Upload(iter(msgs), timeout=60)

    try:
        receipt = await asyncio.to_thread(run)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"the upload node accepted the stream: {receipt}")


async def send(call: grpc.aio.StreamUnaryCall, msgs: list[upload_pb2.UploadRequest]) -> None:  # type: ignore[type-arg]
    """Write ``msgs`` and half-close; stops quietly once the server ended the call (await the call for why).

    Only for streams whose writes all happen before the server can end the call (to check the
    server's status of one that may end mid-stream, use :func:`refused_stream`)."""
    try:
        for m in msgs:
            await call.write(m)
        await call.done_writing()
    except Exception:  # the call's own status says what happened
        return


def raw_request(url: str, method: str, headers: list[tuple[str, str]], body: bytes = b"") -> tuple[int, Any]:
    """``method url`` with ``headers`` exactly as listed (a name may repeat, which requests cannot send);
    the status and the JSON answer (``{}`` when there is none)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.netloc, timeout=10)
    try:
        conn.putrequest(method, u.path, skip_accept_encoding=True)
        for name, value in [*headers, ("Content-Length", str(len(body)))]:
            conn.putheader(name, value)
        conn.endheaders(body)
        r = conn.getresponse()
        text = r.read()
        return r.status, json.loads(text) if text else {}
    finally:
        conn.close()


def auth(key: str) -> dict[str, str]:
    """The bearer header of API key ``key``."""
    return {"Authorization": f"Bearer {key}"}


def until(check: Any, timeout_s: float, what: str) -> Any:
    """Call ``check()`` every 0.2 s until it is truthy and return that; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return found


def web_image(local: LocalCluster, key: str, slug: str) -> dict[str, Any]:
    """``GET /api/v1/images/<slug>`` on the first web node as ``key``'s user; asserts 200."""
    r = requests.get(f"{local.web_urls[0]}/api/v1/images/{slug}", headers=auth(key), timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def web_ready(local: LocalCluster, key: str, slug: str) -> dict[str, Any]:
    """Wait (90 s at most) until image ``slug`` is ready and return its API entry; a failed image fails the test."""
    def done() -> dict[str, Any] | None:
        img = web_image(local, key, slug)
        assert img["status"] != "failed", img["error"]
        return img if img["status"] == "ready" else None
    return dict(until(done, 90, f"image {slug} to be ready"))


def check_served(local: LocalCluster, key: str, slug: str, data: bytes) -> None:
    """Every variant of ``slug`` is served over HTTP with the size it claims, and its stored original is
    served byte for byte."""
    img = web_image(local, key, slug)
    assert img["variants"], img
    for v in img["variants"]:
        r = requests.get(v["url"], timeout=10)
        assert r.status_code == 200, (v, r.status_code)
        assert len(r.content) == v["bytes"], v
        assert Image.open(io.BytesIO(r.content)).size == (v["width"], v["height"]), v
    r = requests.patch(f"{local.web_urls[0]}/api/v1/images/{slug}", json={"keep_metadata": True},
                       headers=auth(key), timeout=10)  # original_url is then the stored original
    assert r.status_code == 200, r.text
    original = requests.get(web_image(local, key, slug)["original_url"], timeout=10)
    assert original.status_code == 200, original.status_code
    assert hashlib.sha256(original.content).hexdigest() == hashlib.sha256(data).hexdigest()


TUS = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}


def tus_patch(up: dict[str, str], data: bytes) -> requests.Response:
    """Send all of ``data`` in one tus PATCH to the upload ``up`` (the answer of ``POST /api/v1/uploads``)."""
    return requests.patch(up["upload_url"], data=data, timeout=60,
                          headers={**TUS, "Authorization": f"Bearer {up['ticket']}", "Upload-Offset": "0"})


def budget_held(r: redis.Redis, key: str) -> int:
    """The attempts the rate budget ``key`` (:mod:`pixelfox.ratelimit`) holds now, rounded up: those
    counted less what drained since (one per window / limit), so read it right after counting."""
    tat, step = r.hmget(state_key(key), "tat", "step")
    if tat is None or not step:
        return 0
    seconds, micros = r.time()
    return math.ceil(max(float(tat) - (seconds * 1_000_000 + micros), 0) / float(step))


def fill_budget(r: redis.Redis, key: str, n: int, limit: int, window_s: float = 60) -> None:
    """Make the rate budget ``key`` of ``limit`` attempts per ``window_s`` hold ``n`` attempts now, as if
    ``n`` had just been counted (:mod:`pixelfox.ratelimit`: TAT = now + n emission intervals)."""
    step = window_s * 1_000_000 / limit
    seconds, micros = r.time()
    tat = seconds * 1_000_000 + micros + n * step
    r.hset(state_key(key), mapping={"tat": f"{tat:.0f}", "step": f"{step:.0f}"})
    r.pexpire(state_key(key), math.ceil(n * step / 1000))


def forget_budget(r: redis.Redis, key: str) -> None:
    """Empty the rate budget ``key`` (:func:`pixelfox.ratelimit.forget`, for a sync client)."""
    r.delete(state_key(key))
