"""Storage node serving from S3 (a real SeaweedFS) and behind a real nginx in X-Accel-Redirect mode."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from pixelfox import signing
from pixelfox.storage.keys import original_key, variant_key
from pixelfox.storage.s3 import S3Store
from tests.integration.test_storage_node import SECRET, Node, free_port, wait_serving
from tests.seaweed import Seaweed

REPO = Path(__file__).resolve().parents[2]
PHOTO = REPO.parent / "shared" / "corpus" / "photos" / "iphone5_orient3_gps.jpg"


def start(tmp: Path, extra: dict[str, str]) -> Node:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    data_dir = tmp / f"pool-{grpc_port}"
    env = os.environ | {
        "PIXELFOX_NODE_ID": "storage-serving", "PIXELFOX_CLUSTER__MANAGER": "127.0.0.1:1",
        "PIXELFOX_CLUSTER__SECRET": SECRET, "PIXELFOX_GRPC__PORT": str(grpc_port),
        "PIXELFOX_HTTP__PORT": str(http_port), "PIXELFOX_METRICS_PORT": str(metrics_port),
        "PIXELFOX_DATA_DIR": str(data_dir),
        "PIXELFOX_SIGN_ORIGINALS": "0",  # these tests are about HTTP semantics of any object
    } | extra
    log = tmp / f"storage-{grpc_port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nodes.storage"], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    node = Node(proc, f"127.0.0.1:{grpc_port}", http_port, metrics_port, data_dir, log)
    try:
        wait_serving(node)
    except BaseException:
        node.stop()
        raise
    return node


def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Message, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@pytest.fixture(scope="module")
def s3_node(tmp_path_factory: pytest.TempPathFactory, seaweed: Seaweed) -> Iterator[Node]:
    node = start(tmp_path_factory.mktemp("s3node"), seaweed.env(prefix="node1/"))
    yield node
    assert node.stop() == 0, node.log.read_text()


def check_http_contract(base: str, key: str, data: bytes) -> None:
    sha = hashlib.sha256(data).hexdigest()
    url = f"{base}/o/{key}"
    status, h, body = fetch(url)
    assert status == 200 and body == data
    assert h["ETag"] == f'"{sha}"' and h["Content-Type"] == "image/jpeg"
    assert h["Cache-Control"] == "public, max-age=31536000, immutable"
    assert h["Content-Length"] == str(len(data))
    assert fetch(url, {"If-None-Match": f'"{sha}"'})[0] == 304
    status, h, body = fetch(url, {"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200] and h["Content-Range"] == f"bytes 100-199/{len(data)}"
    status, h, body = fetch(url, {"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, h, _ = fetch(url, {"Range": f"bytes={len(data) + 5}-"})
    assert status == 416 and h["Content-Range"] == f"bytes */{len(data)}"
    status, h, body = fetch(url, method="HEAD")
    assert status == 200 and body == b"" and h["Content-Length"] == str(len(data)) and h["ETag"] == f'"{sha}"'
    assert fetch(f"{base}/o/{original_key('ab' * 32, 'jpg')}")[0] == 404


async def test_s3_backed_node_stores_in_the_bucket_and_serves_http(s3_node: Node, seaweed: Seaweed) -> None:
    data = PHOTO.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = original_key(sha, "jpg")
    async with s3_node.client() as client:
        reply = await client.put(key, data, content_type="image/jpeg")
        assert reply.etag == f'"{sha}"' and reply.url == f"{s3_node.public_url}/o/{key}"
        again = await client.put(key, data, content_type="image/jpeg")  # idempotent
        assert again.sha256 == sha
        assert await client.get(key, 10, 20) == data[10:30]
        st = await client.stat(key)
        assert st.exists and st.size == len(data)
    async with S3Store(seaweed.settings(prefix="node1/")) as bucket:  # the bytes really are in S3
        info = await bucket.stat(key)
        assert info is not None and info.sha256 == sha
    assert not any(p.is_file() for p in s3_node.data_dir.rglob("*")) if s3_node.data_dir.exists() else True
    check_http_contract(s3_node.public_url, key, data)
    assert fetch(f"{s3_node.public_url}/readyz")[0] == 200
    async with s3_node.client() as client:
        assert await client.delete(key) is True
    assert fetch(f"{s3_node.public_url}/o/{key}")[0] == 404


NGINX_CONF = """
daemon off;
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /o/ {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /_pool/ {{
            internal;
            alias {data_dir}/;
            etag off;
            add_header ETag $upstream_http_etag always;
            add_header X-Content-Type-Options nosniff always;
            add_header Content-Security-Policy sandbox always;
        }}
    }}
}}
"""


def test_x_accel_redirect_mode_behind_nginx(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed (Debian nginx-light)")
    node = start(tmp_path, {"PIXELFOX_ACCEL_REDIRECT": "/_pool/"})
    try:
        data = PHOTO.read_bytes()
        key = original_key(hashlib.sha256(data).hexdigest(), "jpg")

        async def put() -> None:
            async with node.client() as client:
                await client.put(key, data, content_type="image/jpeg")

        asyncio.run(put())
        # the node alone answers with an empty body and the redirect header
        status, h, body = fetch(f"{node.public_url}/o/{key}")
        assert status == 200 and body == b"" and h["X-Accel-Redirect"] == f"/_pool/{key}"
        port = free_port()
        conf = tmp_path / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""  # pytest tmp dirs are 0700
        conf.write_text(textwrap.dedent(NGINX_CONF.format(
            tmp=tmp_path, user=user, port=port, upstream=node.http_port, data_dir=node.data_dir.resolve())))
        proc = subprocess.Popen([nginx, "-c", str(conf), "-e", str(tmp_path / "nginx-error.log")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    fetch(f"http://127.0.0.1:{port}/o/x")
                    break
                except OSError:
                    time.sleep(0.1)
            check_http_contract(f"http://127.0.0.1:{port}", key, data)
            status, h, _ = fetch(f"http://127.0.0.1:{port}/o/{key}")
            assert "X-Accel-Redirect" not in h
            assert h["X-Content-Type-Options"] == "nosniff"
            # a signed download: nginx passes the node's Content-Disposition on with the file
            url = signing.download_url(f"http://127.0.0.1:{port}/o/{key}", "Été.jpg",
                                       signing.keys_from(SECRET)[0], int(time.time()) + 600)
            status, h, body = fetch(url)
            assert status == 200 and body == data and "X-Accel-Redirect" not in h
            assert h["Content-Disposition"] == "attachment; filename=\"_t_.jpg\"; filename*=UTF-8''%C3%89t%C3%A9.jpg"
            assert h["Cache-Control"] == "private, no-store"
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        assert node.stop() == 0, node.log.read_text()


async def test_fs_node_sends_large_objects_and_ranges(tmp_path: Path) -> None:
    """Local pools are sent without the chunked store path (sendfile, or direct reads under uvloop)."""
    node = start(tmp_path, {})
    try:
        data = os.urandom(1_500_000) + PHOTO.read_bytes()
        key = variant_key(hashlib.sha256(b"big").hexdigest(), 1, "big", "jpeg")
        async with node.client() as client:
            await client.put(key, data, content_type="image/jpeg")
        status, h, body = fetch(f"{node.public_url}/o/{key}")
        assert status == 200 and body == data and h["Content-Length"] == str(len(data))
        status, _, body = fetch(f"{node.public_url}/o/{key}", {"Range": "bytes=1000000-1400000"})
        assert status == 206 and body == data[1_000_000:1_400_001]
        small = await asyncio.to_thread(fetch, f"{node.public_url}/o/{key}", {"Range": "bytes=5-9"})
        assert small[0] == 206 and small[2] == data[5:10]
        async with node.client() as client:  # deleted: the origin's cache forgets it
            assert await client.delete(key) is True
        assert fetch(f"{node.public_url}/o/{key}")[0] == 404
    finally:
        assert node.stop() == 0, node.log.read_text()


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


async def test_http_workers_share_the_port_and_stop_with_the_node(tmp_path: Path) -> None:
    node = start(tmp_path, {"PIXELFOX_HTTP_WORKERS": "3"})
    try:
        data = PHOTO.read_bytes()
        key = original_key(hashlib.sha256(data).hexdigest(), "jpg")
        async with node.client() as client:
            await client.put(key, data, content_type="image/jpeg")
        kids = children(node.proc.pid)
        assert len(kids) == 2  # two extra HTTP processes
        results = await asyncio.gather(*(asyncio.to_thread(fetch, f"{node.public_url}/o/{key}") for _ in range(40)))
        assert all(r[0] == 200 and r[2] == data for r in results)
        check_http_contract(node.public_url, key, data)
    finally:
        assert node.stop() == 0, node.log.read_text()
    for pid in kids:  # gone with the node
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
