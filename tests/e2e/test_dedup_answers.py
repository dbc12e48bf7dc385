"""A re-upload of bytes the caller already has (dedup) says so in every upload answer, and the
first upload's title stays: ``POST /api/v1/images``, Chevereto's ``POST /api/1/upload``, tus with
``GET /api/v1/uploads/<id>``, and the gRPC receipt."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
import redis
import requests

from pixelfox.client.uploader import _lost_receipt, upload_file
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.uploadstate import state_key
from pixelfox.v1 import manager_pb2, manager_pb2_grpc, upload_pb2
from tests.conftest import ClusterHandle
from tests.e2e.uploadkit import big_png, chunk, header, upload_stub

pytestmark = pytest.mark.e2e

DEDUPLICATED = "image already uploaded: the existing image is returned unchanged (its title too)"


def _png(tmp_path: Path, name: str) -> bytes:
    big_png(tmp_path / name, 48)  # new bytes: no dedup with other tests' uploads
    return (tmp_path / name).read_bytes()


def test_web_upload_answers_say_deduplicated_and_keep_the_first_title(cluster: ClusterHandle, tmp_path: Path) -> None:
    data = _png(tmp_path, "same.png")
    key = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    images = f"{cluster.web_url}/api/v1/images?wait=0"
    first = requests.post(images, headers=key, files={"file": ("a.png", data, "image/png")},
                          data={"title": "Title A"}, timeout=60)
    assert first.status_code == 201, first.text
    a = first.json()
    assert (a["title"], a["deduplicated"]) == ("Title A", False)
    again = requests.post(images, headers=key, files={"file": ("b.png", data, "image/png")},
                          data={"title": "Title B"}, timeout=60)
    assert again.status_code == 201, again.text
    b = again.json()
    assert (b["id"], b["title"], b["deduplicated"]) == (a["id"], "Title A", True)

    chevereto = f"{cluster.web_url}/api/1/upload"
    hdr = {"X-API-Key": cluster.admin_api_key}
    c = requests.post(chevereto, headers=hdr, files={"source": ("c.png", data, "image/png")},
                      data={"title": "Title C"}, timeout=60)
    assert c.status_code == 200, c.text
    img = c.json()["image"]
    assert (img["id_encoded"], img["title"], img["deduplicated"]) == (a["id"], "Title A", True)
    assert c.json()["data"]["deduplicated"] is True and c.json()["success"]["message"] == DEDUPLICATED
    new = requests.post(chevereto, headers=hdr, files={"source": ("n.png", _png(tmp_path, "new.png"), "image/png")},
                        data={"title": "New"}, timeout=60)
    assert new.status_code == 200, new.text
    assert (new.json()["image"]["title"], new.json()["image"]["deduplicated"]) == ("New", False)
    assert new.json()["success"]["message"] == "image uploaded"
    stored = requests.get(f"{cluster.web_url}/api/v1/images/{a['id']}", headers=key, timeout=10).json()
    assert stored["title"] == "Title A"


def _tus(cluster: ClusterHandle, data: bytes, title: str) -> tuple[str, requests.Response]:
    """A resumable upload of ``data`` titled ``title`` in one PATCH: (upload id, the completing PATCH's answer)."""
    r = requests.post(f"{cluster.web_url}/api/v1/uploads", headers={"Authorization": f"Bearer {cluster.admin_api_key}"},
                      json={"filename": "t.png", "size": len(data), "content_type": "image/png", "title": title},
                      timeout=10)
    assert r.status_code == 201, r.text
    up = r.json()
    done = requests.patch(up["upload_url"], data=data, timeout=60, headers={
        "Authorization": f"Bearer {up['ticket']}", "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert done.status_code == 204, done.text
    return up["id"], done


def test_tus_answers_and_upload_progress_say_deduplicated(cluster: ClusterHandle, tmp_path: Path) -> None:
    data = _png(tmp_path, "tus.png")
    key = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    first_id, first = _tus(cluster, data, "T1")
    again_id, again = _tus(cluster, data, "T2")
    slug = first.headers["Pixelfox-Image-Slug"]
    assert (first.headers["Pixelfox-Deduplicated"], again.headers["Pixelfox-Deduplicated"]) == ("false", "true")
    assert again.headers["Pixelfox-Image-Slug"] == slug
    assert "Pixelfox-Deduplicated" in again.headers["Access-Control-Expose-Headers"]  # readable by browsers
    progress = [requests.get(f"{cluster.web_url}/api/v1/uploads/{i}", headers=key, timeout=10).json()
                for i in (first_id, again_id)]
    assert [(p["status"], p["deduplicated"], p["image"]["id"], p["image"]["title"]) for p in progress] == [
        ("complete", False, slug, "T1"), ("complete", True, slug, "T1")]

    # once the upload's Redis state is gone (upload_ttl_s, an hour), the answer stays the same: the
    # database keeps which image it became (it said "expired", with no image)
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        assert r.delete(state_key(again_id)) == 1
    finally:
        r.close()
    later = requests.get(f"{cluster.web_url}/api/v1/uploads/{again_id}", headers=key, timeout=10).json()
    assert (later["status"], later["deduplicated"], later["image"]["id"]) == ("complete", True, slug), later


async def test_grpc_receipts_say_deduplicated(cluster: ClusterHandle, tmp_path: Path) -> None:
    path = tmp_path / "grpc.png"
    big_png(path, 48)
    md = api_key_metadata(cluster.admin_api_key)
    async with grpc.aio.insecure_channel(cluster.manager_address) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        first = await upload_file(stub, md, path, title="G1")
        again = await upload_file(stub, md, path, title="G2")
        assert (first.deduplicated, first.image.title) == (False, "G1")
        assert (again.deduplicated, again.image.slug, again.image.title) == (True, first.image.slug, "G1")
        assert again.upload_id == ""  # answered by CreateUpload (the declared sha256): no upload was made
        # a client that declares no sha256 (an older one) uploads, and the stream's receipt says it
        data = path.read_bytes()
        t = await stub.CreateUpload(manager_pb2.CreateUploadRequest(filename="g.png", size=len(data)), metadata=md,
                                    timeout=10)
        assert t.ticket and not t.deduplicated
        uch, ustub = upload_stub(t.upload_address)
        try:
            streamed = await ustub.Upload(iter([header(t, len(data)), chunk(0, data)]), timeout=60)
        finally:
            await uch.close()
        assert (streamed.deduplicated, streamed.image.slug, streamed.image.title) == (True, first.image.slug, "G1")
        # the receipt of a stream whose answer was lost comes from GetUpload, which says it too
        for sent in (first, streamed):
            lost = await _lost_receipt(stub, md, upload_pb2.UploadHeader(upload_id=sent.upload_id, size=sent.size))
            assert (lost.upload_id, lost.deduplicated, lost.image.slug) == (sent.upload_id, sent.deduplicated,
                                                                            first.image.slug)


def _upload_node_bytes(cluster: ClusterHandle) -> float:
    """Bytes every upload node received (``pixelfox_upload_bytes_total``), summed."""
    from tests.ops.test_metrics import scrape, total

    nodes = json.loads(cluster.pixelfox("status", "--json").stdout)["nodes"]
    urls = [n["metrics_url"] for n in nodes if n["role"] == "upload"]
    assert urls
    return sum(total(scrape(u), "pixelfox_upload_bytes_total") for u in urls)


def test_put_of_a_file_the_user_has_sends_no_byte(cluster: ClusterHandle, tmp_path: Path) -> None:
    """``pixelfox put`` declares the file's SHA-256 at CreateUpload: a file the user already has is
    answered with that image at once, and the upload nodes receive nothing (they got the whole file
    again, and dedup happened only after it was stored)."""
    path = tmp_path / "twice.png"
    big_png(path, 300)  # ~270 KB of new bytes
    first = cluster.pixelfox("put", "--json", str(path), timeout=120)
    assert first.returncode == 0, first.stderr
    a = json.loads(first.stdout)
    assert a["deduplicated"] is False
    before = _upload_node_bytes(cluster)
    again = cluster.pixelfox("put", "--json", str(path), timeout=120)
    assert again.returncode == 0, again.stderr
    b = json.loads(again.stdout)
    assert (b["deduplicated"], b["id"], b["url"]) == (True, a["id"], a["url"])
    assert _upload_node_bytes(cluster) == before  # not one byte of the file went to an upload node
    plain = cluster.pixelfox("put", str(path), timeout=120)  # printed as a deduplicated upload always was
    assert plain.returncode == 0 and plain.stdout == f"{a['url']}\n", (plain.stdout, plain.stderr)
    assert "(already uploaded: the existing image, unchanged)" in plain.stderr, plain.stderr
