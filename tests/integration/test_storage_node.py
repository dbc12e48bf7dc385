"""The storage node as a real process: gRPC put/get/stat/delete, auth, and its HTTP origin.

The node runs as ``python -m nodes.storage`` on free loopback ports with a temp data dir and a
manager address where nothing listens, so these tests also show it serves without a manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
# The repo root is not on sys.path under plain `pytest` until pyproject sets pytest `pythonpath = ["."]`
# (or the package is installed); harmless once it is.
sys.path.insert(0, str(REPO))

from pixelfox import errors  # noqa: E402
from pixelfox.cli import launcher  # noqa: E402
from pixelfox.storage.client import StorageClient  # noqa: E402
from pixelfox.storage.keys import original_key, variant_key  # noqa: E402
from pixelfox.v1 import storage_pb2, storage_pb2_grpc  # noqa: E402
from tests.fulldisk import can_mount_tmpfs  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus"
PHOTOS = sorted((CORPUS / "photos").glob("*.jpg"))
SECRET = "test-cluster-secret"
SERVICE = "pixelfox.v1.StorageService"


def free_port() -> int:
    # not bind(0): the kernel hands out ports from its ephemeral range, where an outgoing
    # connection can take the port before the node binds it (see pixelfox.cli.launcher.PORT_RANGE)
    return launcher.free_port()


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    grpc_address: str
    http_port: int
    metrics_port: int
    data_dir: Path
    log: Path

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def client(self, secret: str = SECRET) -> StorageClient:
        return StorageClient(self.grpc_address, secret)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def wait_serving(node: Node, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(node.grpc_address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"storage node exited: {node.log.read_text()}")
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"storage node not SERVING in {timeout_s}s: {node.log.read_text()}")


def start_node(tmp: Path, data_dir: Path, wrap: list[str] | None = None, mount_cmd: str = "") -> Node:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    env = os.environ | {
        "PIXELFOX_NODE_ID": "storage-test",
        "PIXELFOX_CLUSTER__MANAGER": "127.0.0.1:1",
        "PIXELFOX_CLUSTER__SECRET": SECRET,
        "PIXELFOX_GRPC__HOST": "127.0.0.1",
        "PIXELFOX_GRPC__PORT": str(grpc_port),
        "PIXELFOX_HTTP__HOST": "127.0.0.1",
        "PIXELFOX_HTTP__PORT": str(http_port),
        "PIXELFOX_HTTP__PUBLIC_URL": f"http://127.0.0.1:{http_port}",
        "PIXELFOX_METRICS_PORT": str(metrics_port),
        "PIXELFOX_DATA_DIR": str(data_dir),
        "PIXELFOX_SIGN_ORIGINALS": "0",  # these tests are about HTTP semantics of any object
    }
    log = tmp / f"storage-{grpc_port}.log"
    cmd = [sys.executable, "-m", "nodes.storage"]
    if wrap:
        cmd = [*wrap, "sh", "-c", f'{mount_cmd} && exec "$0" "$@"', *cmd]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    node = Node(proc, f"127.0.0.1:{grpc_port}", http_port, metrics_port, data_dir, log)
    try:
        wait_serving(node)
    except BaseException:
        node.stop()
        raise
    return node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("storage")
    (tmp / "secret.jpg").write_bytes(b"outside the pool root")
    n = start_node(tmp, tmp / "pool")
    yield n
    assert n.stop() == 0, n.log.read_text()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def request(
    node: Node, method: str, path: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    """A raw request: ``path`` is sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=10)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    resp.body = resp.read()  # type: ignore[attr-defined]
    conn.close()
    return resp


def metric(node: Node, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def put_sync(node: Node, data: bytes, key: str) -> storage_pb2.PutResponse:
    async def go() -> storage_pb2.PutResponse:
        async with node.client() as c:
            return await c.put(key, data, content_type="image/jpeg")

    return asyncio.run(go())


@pytest.fixture(scope="module")
def stored(node: Node) -> tuple[str, bytes]:
    data = (CORPUS / "photos" / "samsung_j3_orient6.jpg").read_bytes()
    key = original_key(sha(data), "jpg")
    put_sync(node, data, key)
    return key, data


# -- gRPC --------------------------------------------------------------------------------------


async def test_round_trip_corpus_photos(node: Node, tmp_path: Path) -> None:
    assert len(PHOTOS) >= 5
    async with node.client() as c:
        for photo in PHOTOS:
            data = photo.read_bytes()
            key = original_key(sha(data), "jpg")
            reply = await c.put(key, photo, content_type="image/jpeg")  # streamed from the file
            assert (reply.key, reply.size, reply.sha256) == (key, len(data), sha(data))
            assert reply.etag == f'"{sha(data)}"'
            assert reply.url == f"{node.public_url}/o/{key}"
            assert (node.data_dir / key).read_bytes() == data

            st = await c.stat(key)
            assert (st.exists, st.size, st.content_type, st.sha256, st.etag) == (
                True,
                len(data),
                "image/jpeg",
                sha(data),
                f'"{sha(data)}"',
            )
            assert await c.get(key) == data
            assert await c.get(key, 1000, 5000) == data[1000:6000]
            out = tmp_path / photo.name
            assert await c.get_to(key, out) == len(data)
            assert out.read_bytes() == data

            again = await c.put(key, data, content_type="image/jpeg")  # idempotent
            assert again.sha256 == sha(data)

            assert await c.delete(key) is True
            assert await c.delete(key) is False
            assert (await c.stat(key)).exists is False
            with pytest.raises(errors.NotFound):
                await c.get(key)
    assert files_under(node.data_dir / "o") == [] if (node.data_dir / "o").exists() else True


async def test_variant_put_and_used_bytes_metric(node: Node) -> None:
    data = (CORPUS / "photos" / "unsplash_landscape_orient5.jpg").read_bytes()
    key = variant_key(sha(b"some source"), 1, "display_1280", "webp")
    before = metric(node, "pixelfox_storage_used_bytes")
    async with node.client() as c:
        reply = await c.put(key, data, content_type="image/webp")
        assert reply.url == f"{node.public_url}/o/{key}"
        assert metric(node, "pixelfox_storage_used_bytes") == before + len(data)
        assert await c.delete(key)
    assert metric(node, "pixelfox_storage_used_bytes") == before


async def test_checksum_mismatch_stores_nothing(node: Node) -> None:
    data = PHOTOS[0].read_bytes()
    key = variant_key(sha(b"src"), 1, "mismatch", "jpg")
    before = files_under(node.data_dir)
    async with node.client() as c:
        with pytest.raises(errors.ChecksumMismatch):
            await c.put(key, data, content_type="image/jpeg", sha256=sha(b"not these bytes"))
        assert (await c.stat(key)).exists is False
        # an original whose key does not carry its own hash is refused the same way
        with pytest.raises(errors.ChecksumMismatch):
            await c.put(original_key(sha(b"other"), "jpg"), data, content_type="image/jpeg")
    assert files_under(node.data_dir) == before
    assert request(node, "GET", f"/o/{key}").status == 404


async def test_bad_requests_map_to_errors(node: Node) -> None:
    data = PHOTOS[0].read_bytes()
    async with node.client() as c:
        with pytest.raises(errors.BadRequest):
            await c.put("o/../../etc/passwd", data, content_type="image/jpeg")
        with pytest.raises(errors.BadRequest):
            await c.put(original_key(sha(data), "jpg"), data, content_type="text/html")
        with pytest.raises(errors.BadRequest):
            await c.stat("../../etc/passwd")


async def refused_put(client: Any, key: str, data: bytes, tries: int = 5) -> None:
    """Assert that ``client.put`` is refused with ``Unauthenticated``. grpc-python's asyncio client
    may report a client-streaming call that the server ended before the last message as INTERNAL
    "Internal error from Core" instead of the server's status (grpc/grpc#36066, open): such an
    answer is tried again, up to ``tries`` times (it came about 1 time in 4 here)."""
    for _ in range(tries):
        try:
            await client.put(key, data, content_type="image/jpeg")
        except errors.Unauthenticated:
            return
        except errors.PixelfoxError as exc:
            if "Internal error from Core" not in exc.message:
                raise
        else:
            raise AssertionError(f"put of {key} without the right secret was accepted")
    raise AssertionError(f"{tries} puts ended INTERNAL (grpc/grpc#36066), none Unauthenticated")


async def test_calls_without_the_cluster_secret_are_refused(node: Node, stored: tuple[str, bytes]) -> None:
    key, data = stored
    for secret in ("", "wrong-secret"):
        async with node.client(secret) as c:
            with pytest.raises(errors.Unauthenticated):
                await c.stat(key)
            with pytest.raises(errors.Unauthenticated):
                await c.get(key)
            with pytest.raises(errors.Unauthenticated):
                await c.delete(key)
            await refused_put(c, variant_key(sha(b"x"), 1, "noauth", "jpg"), data)
    async with grpc.aio.insecure_channel(node.grpc_address) as ch:  # no metadata at all
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await storage_pb2_grpc.StorageServiceStub(ch).Stat(storage_pb2.StatRequest(key=key))
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (node.data_dir / key).read_bytes() == data  # the delete attempts did nothing


# -- HTTP --------------------------------------------------------------------------------------


def test_http_requests_and_bytes_are_counted(node: Node, stored: tuple[str, bytes]) -> None:
    key, data = stored
    assert request(node, "GET", f"/o/{key}").status == 200  # the series exists from the first request
    before = metric(node, 'pixelfox_storage_http_requests_total{code="200",method="GET"}')
    sent = metric(node, "pixelfox_storage_http_sent_bytes_total")
    for _ in range(3):
        assert request(node, "GET", f"/o/{key}").status == 200
    assert request(node, "DELETE", f"/o/{key}").status == 405
    assert metric(node, 'pixelfox_storage_http_requests_total{code="200",method="GET"}') == before + 3
    assert metric(node, 'pixelfox_storage_http_requests_total{code="405",method="other"}') >= 1
    assert metric(node, "pixelfox_storage_http_sent_bytes_total") == sent + 3 * len(data)


def test_http_get_headers(node: Node, stored: tuple[str, bytes]) -> None:
    key, data = stored
    r = request(node, "GET", f"/o/{key}")
    assert r.status == 200
    assert r.body == data  # type: ignore[attr-defined]
    assert r.getheader("Content-Type") == "image/jpeg"
    assert r.getheader("Content-Length") == str(len(data))
    assert r.getheader("ETag") == f'"{sha(data)}"'
    assert r.getheader("Cache-Control") == "public, max-age=31536000, immutable"
    assert r.getheader("X-Content-Type-Options") == "nosniff"
    assert r.getheader("Content-Security-Policy") == "sandbox"
    assert r.getheader("Accept-Ranges") == "bytes"
    mtime = int(os.stat(node.data_dir / key).st_mtime)  # whole seconds, never later than the file
    assert r.getheader("Last-Modified") == time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(mtime))
    assert (
        request(node, "GET", f"/o/{key}", {"If-Modified-Since": r.getheader("Last-Modified")}).status == 304
    )
    assert r.getheader("Content-Encoding") is None


def test_http_head(node: Node, stored: tuple[str, bytes]) -> None:
    key, data = stored
    r = request(node, "HEAD", f"/o/{key}")
    assert r.status == 200
    assert r.body == b""  # type: ignore[attr-defined]
    assert r.getheader("Content-Length") == str(len(data))
    assert r.getheader("Content-Type") == "image/jpeg"
    assert r.getheader("ETag") == f'"{sha(data)}"'


@pytest.mark.parametrize("inm", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
def test_http_if_none_match_304(node: Node, stored: tuple[str, bytes], inm: str) -> None:
    key, data = stored
    etag = f'"{sha(data)}"'
    r = request(node, "GET", f"/o/{key}", {"If-None-Match": inm.format(etag=etag)})
    assert r.status == 304
    assert r.body == b""  # type: ignore[attr-defined]
    assert r.getheader("ETag") == etag
    assert r.getheader("Cache-Control") == "public, max-age=31536000, immutable"
    assert request(node, "GET", f"/o/{key}", {"If-None-Match": '"other"'}).status == 200


@pytest.mark.parametrize(
    ("spec", "start", "stop"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=10-19", 10, 20),
        ("bytes=-100", -100, None),
        ("bytes=900000-", 900000, None),
    ],
)
def test_http_range_206(
    node: Node, stored: tuple[str, bytes], spec: str, start: int, stop: int | None
) -> None:
    key, data = stored
    r = request(node, "GET", f"/o/{key}", {"Range": spec})
    part = data[start:stop]
    first = start if start >= 0 else len(data) + start
    assert r.status == 206
    assert r.body == part  # type: ignore[attr-defined]
    assert r.getheader("Content-Range") == f"bytes {first}-{first + len(part) - 1}/{len(data)}"
    assert r.getheader("Content-Length") == str(len(part))
    assert r.getheader("ETag") == f'"{sha(data)}"'


def test_http_range_past_the_end_416(node: Node, stored: tuple[str, bytes]) -> None:
    key, data = stored
    for spec in (f"bytes={len(data)}-", f"bytes={len(data) + 10}-{len(data) + 20}"):
        r = request(node, "GET", f"/o/{key}", {"Range": spec})
        assert r.status == 416
        assert r.getheader("Content-Range") == f"bytes */{len(data)}"


def test_http_range_of_another_unit_or_several_ranges_is_ignored(node: Node, stored: tuple[str, bytes]) -> None:
    """RFC 9110 §14.2: an unknown unit MUST be ignored; several ranges may be (no multipart answers
    here). Both were a 416, which made clients give up on a file they could have had whole."""
    key, data = stored
    for spec in ("items=0-1", "bytes=0-1,5-6", "bytes=0-1, 100-"):
        r = request(node, "GET", f"/o/{key}", {"Range": spec})
        assert r.status == 200 and r.body == data, (spec, r.status)  # type: ignore[attr-defined]
        assert r.getheader("Content-Range") is None and r.getheader("Content-Length") == str(len(data))


def test_http_odd_numbers_are_refused_cleanly(node: Node, stored: tuple[str, bytes]) -> None:
    """Unicode digits pass ``str.isdigit()`` but not ``int()``: a malformed range, not a 500."""
    key, _ = stored
    for spec in ("bytes=\u00b2-", "bytes=-\u0663", "bytes=1-\u00b2", "bytes=-", "bytes=1-0"):
        r = request(node, "GET", f"/o/{key}", {"Range": spec.encode().decode("latin-1")})
        assert r.status == 416, (spec, r.status)
    signed = f"/o/p/{'a' * 32}/{key}?exp=%C2%B2&sig=x"  # a private key with a Unicode-digit expiry
    assert request(node, "GET", signed).status == 403


def test_http_if_range(node: Node, stored: tuple[str, bytes]) -> None:
    key, data = stored
    etag = f'"{sha(data)}"'
    assert request(node, "GET", f"/o/{key}", {"Range": "bytes=0-9", "If-Range": etag}).status == 206
    r = request(node, "GET", f"/o/{key}", {"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert (r.status, r.body) == (200, data)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "path",
    [
        "/o/../../etc/passwd",
        "/o/..%2f..%2fetc%2fpasswd",
        "/o/%2e%2e/%2e%2e/etc/passwd",
        "/o/%252e%252e/%252e%252e/etc/passwd",
        "/o/..\\..\\etc\\passwd",
        "/o//etc/passwd",
        "/o/%00",
        "/o/../secret.jpg",
        "/o/..%2fsecret.jpg",
        "/o/o/ab/cd/" + "ab" * 32 + ".jpg",
        "/o/" + "a" * 5000,
        "/etc/passwd",
        "/../../etc/passwd",
    ],
)
def test_http_traversal_is_refused(node: Node, path: str) -> None:
    r = request(node, "GET", path)
    assert r.status in (400, 404)
    body = r.body  # type: ignore[attr-defined]
    assert b"root:" not in body and b"outside the pool root" not in body
    assert json.loads(body)["error"]["code"] in ("not-found", "bad-request")


def test_http_unknown_key_is_json_404(node: Node) -> None:
    r = request(node, "GET", "/o/" + original_key(sha(b"never stored"), "png"))
    assert r.status == 404
    assert r.getheader("Content-Type").startswith("application/json")
    assert json.loads(r.body) == {"error": {"code": "not-found", "message": "not found"}}  # type: ignore[attr-defined]


def test_healthz_and_readyz_without_a_manager(node: Node) -> None:
    r = request(node, "GET", "/healthz")
    assert (r.status, json.loads(r.body)) == (200, {"status": "ok"})  # type: ignore[attr-defined]
    r = request(node, "GET", "/readyz")
    assert (r.status, json.loads(r.body)) == (200, {"status": "ready"})  # type: ignore[attr-defined]
    assert "manager not reachable" in node.log.read_text()


# -- disk full ---------------------------------------------------------------------------------


async def test_disk_full_is_storage_full_and_leaves_no_partial_object(tmp_path: Path) -> None:
    pool = tmp_path / "tiny"
    pool.mkdir()
    if not can_mount_tmpfs(pool):
        pytest.skip("cannot mount a tmpfs in a private mount namespace here")
    node = start_node(
        tmp_path, pool, wrap=["unshare", "-rm"], mount_cmd=f"mount -t tmpfs -o size=3m tmpfs {pool}"
    )
    try:
        big = (CORPUS / "photos" / "leica_t_16mp_orient8_gps.jpg").read_bytes()  # 3.2 MB > 3 MiB
        a = (CORPUS / "photos" / "nokia83_wide_9mp_gps.jpg").read_bytes()  # 2.2 MB
        b = (CORPUS / "photos" / "iphone5_orient3_gps.jpg").read_bytes()  # 2.4 MB
        async with node.client() as c:
            t0 = time.monotonic()
            with pytest.raises(errors.StorageFull):
                await c.put(original_key(sha(big), "jpg"), big, content_type="image/jpeg")
            assert time.monotonic() - t0 < 1.0
            keys = [original_key(sha(a), "jpg"), original_key(sha(b), "jpg")]
            results = await asyncio.gather(
                c.put(keys[0], a, content_type="image/jpeg"),
                c.put(keys[1], b, content_type="image/jpeg"),
                return_exceptions=True,
            )
            assert any(isinstance(r, errors.StorageFull) for r in results), results
            for key, data, result in zip(keys, (a, b), results, strict=True):
                st = await c.stat(key)
                assert st.exists is isinstance(result, storage_pb2.PutResponse)
                if st.exists:  # what is visible is whole
                    assert await c.get(key) == data
                    assert request(node, "GET", f"/o/{key}").body == data  # type: ignore[attr-defined]
            # the node keeps serving after ENOSPC
            assert request(node, "GET", "/readyz").status == 200
    finally:
        assert node.stop() == 0, node.log.read_text()
