"""A re-upload of bytes the caller already has (dedup) says so in every upload answer, and the
first upload's title stays: ``POST /api/v1/images``, Chevereto's ``POST /api/1/upload``, tus with
``GET /api/v1/uploads/<id>``, and the gRPC receipt."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
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
from tests.e2e.uploadkit import big_png, chunk, header, new_user_key, send, upload_stub

pytestmark = pytest.mark.e2e

DEDUPLICATED = "image already uploaded: the existing image is returned unchanged (its title too)"
PRIVATE_NOTE = ("these bytes are already your image, and it is private: its links open only for you; "
                "make it public to share them")


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


def test_a_private_image_uploaded_again_says_its_links_are_private(cluster: ClusterHandle, tmp_path: Path) -> None:
    data = _png(tmp_path, "private.png")
    key = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    images = f"{cluster.web_url}/api/v1/images"  # waits for processing: visibility changes once it is ready
    first = requests.post(images, headers=key, files={"file": ("p.png", data, "image/png")}, timeout=60).json()
    assert (first["status"], first["visibility"], first["deduplicated"]) == ("ready", "public", False), first
    assert "note" not in first
    r = requests.patch(f"{cluster.web_url}/api/v1/images/{first['id']}", headers=key, json={"visibility": "private"},
                       timeout=30)
    assert r.status_code == 200, r.text
    again = requests.post(images, headers=key, files={"file": ("p.png", data, "image/png")}, timeout=60)
    assert again.status_code == 201, again.text
    body = again.json()
    assert (body["id"], body["visibility"], body["deduplicated"]) == (first["id"], "private", True)
    assert body["note"] == PRIVATE_NOTE
    assert requests.get(body["url"], timeout=10, allow_redirects=False).status_code == 404  # nobody else sees it

    chevereto = f"{cluster.web_url}/api/1/upload"
    hdr = {"X-API-Key": cluster.admin_api_key}
    c = requests.post(chevereto, headers=hdr, files={"source": ("p.png", data, "image/png")}, timeout=60).json()
    assert (c["image"]["visibility"], c["image"]["note"]) == ("private", PRIVATE_NOTE)
    assert c["success"]["message"] == f"{DEDUPLICATED}; {PRIVATE_NOTE}"
    txt = requests.post(chevereto, headers=hdr, files={"source": ("p.png", data, "image/png")},
                        data={"format": "txt"}, timeout=60)
    assert txt.status_code == 200 and txt.text == f"{body['url']}/original"
    assert txt.headers["Pixelfox-Note"] == PRIVATE_NOTE

    # tus: the completing PATCH says it in a header browsers may read, and so does the upload's JSON
    # after it (they said visibility, and no note)
    upload_id, done = _tus(cluster, data, "T")
    assert (done.headers["Pixelfox-Deduplicated"], done.headers["Pixelfox-Note"]) == ("true", PRIVATE_NOTE)
    assert "Pixelfox-Note" in done.headers["Access-Control-Expose-Headers"]
    p = requests.get(f"{cluster.web_url}/api/v1/uploads/{upload_id}", headers=key, timeout=10).json()
    assert (p["deduplicated"], p["image"]["visibility"], p["note"]) == (True, "private", PRIVATE_NOTE), p
    declared = requests.post(f"{cluster.web_url}/api/v1/uploads", headers=key, timeout=10, json={
        "filename": "p.png", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}).json()
    assert (declared["deduplicated"], declared["note"]) == (True, PRIVATE_NOTE), declared
    public = _png(tmp_path, "public.png")  # a public image uploaded again: no note
    _tus(cluster, public, "P")
    again_id, again_done = _tus(cluster, public, "P")
    assert again_done.headers["Pixelfox-Deduplicated"] == "true" and "Pixelfox-Note" not in again_done.headers
    assert "note" not in requests.get(f"{cluster.web_url}/api/v1/uploads/{again_id}", headers=key, timeout=10).json()


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


def test_a_malformed_declared_sha256_is_one_clear_400(cluster: ClusterHandle) -> None:
    """``POST /api/v1/uploads`` with a ``sha256`` that is not 64 hex digits: one message for every form,
    where null and 65 characters got pydantic's own words ("Input should be a valid string", "String
    should have at most 64 characters"); an empty one is no declaration. Upper case is no longer refused
    (the upload node always took it in a stream header): see the declared-upper-case test below."""
    api = f"{cluster.web_url}/api/v1/uploads"
    admin = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    sha = hashlib.sha256(b"x").hexdigest()
    for bad in (None, sha + "0", sha[:63], sha.upper()[:63] + "G", "z" * 64, 12, [sha]):
        r = requests.post(api, headers=admin, timeout=10, json={"filename": "b.png", "size": 10, "sha256": bad})
        assert (r.status_code, r.json()) == (400, {"error": {"code": "bad-request", "message": (
            "sha256 must be 64 hexadecimal characters (the file's SHA-256), or left out")}}), (bad, r.text)
    for none in ({"sha256": ""}, {}):
        r = requests.post(api, headers=admin, timeout=10, json={"filename": "b.png", "size": 10, **none})
        assert r.status_code == 201 and r.json()["deduplicated"] is False, r.text
        assert requests.delete(f"{api}/{r.json()['id']}", headers=admin, timeout=10).status_code == 204


def test_declared_sha256_on_the_web_api(cluster: ClusterHandle, tmp_path: Path) -> None:
    """``POST /api/v1/uploads`` with ``sha256``: the caller's own image of those bytes is a 200 with the
    image and no upload; a malformed hash is a 400; another user's hash (or the caller's with another
    size) is an ordinary 201 ticket, leaking nothing, and that upload stores its own bytes."""
    api = f"{cluster.web_url}/api/v1/uploads"
    admin = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    data = _png(tmp_path, "web-sha.png")
    sha = hashlib.sha256(data).hexdigest()
    first_id, done = _tus(cluster, data, "W1")
    slug = done.headers["Pixelfox-Image-Slug"]

    known = requests.post(api, headers=admin, timeout=10, json={
        "filename": "again.png", "size": len(data), "content_type": "image/png", "title": "W2", "sha256": sha})
    assert known.status_code == 200, known.text
    k = known.json()
    assert (k["id"], k["status"], k["deduplicated"]) == (None, "complete", True)
    assert (k["image"]["id"], k["image"]["title"], k["image"]["sha256"]) == (slug, "W1", sha)
    listed = requests.get(api, headers=admin, timeout=10).json()["uploads"]
    assert all(u["filename"] != "again.png" for u in listed)  # no upload was made

    # upper case is the same hash: the same image back, over the web API and gRPC alike
    upper = requests.post(api, headers=admin, timeout=10, json={
        "filename": "again.png", "size": len(data), "content_type": "image/png", "sha256": sha.upper()})
    assert upper.status_code == 200, upper.text
    assert (upper.json()["deduplicated"], upper.json()["image"]["id"]) == (True, slug)
    by_grpc = asyncio.run(_grpc_create(cluster, cluster.admin_api_key, len(data), sha.upper()))
    assert (by_grpc.deduplicated, by_grpc.image.slug) == (True, slug)

    for bad in (sha[:63], sha + "0", "z" * 64, 12):
        r = requests.post(api, headers=admin, timeout=10,
                          json={"filename": "b.png", "size": len(data), "sha256": bad})
        assert r.status_code == 400, (bad, r.text)
    with pytest.raises(grpc.RpcError) as refused:
        asyncio.run(_grpc_create(cluster, cluster.admin_api_key, len(data), sha[:-1] + "G"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # the same hash declared with another size is not that file: an ordinary ticket
    other_size = requests.post(api, headers=admin, timeout=10,
                               json={"filename": "o.png", "size": len(data) + 1, "sha256": sha})
    assert other_size.status_code == 201 and other_size.json()["deduplicated"] is False, other_size.text
    assert requests.delete(f"{api}/{other_size.json()['id']}", headers=admin, timeout=10).status_code == 204

    # another user declaring the admin's hash gets a ticket, not the admin's image, and uploads as usual
    bob = asyncio.run(new_user_key(cluster.local, f"shabob_{os.urandom(4).hex()}"))
    theirs = requests.post(api, headers={"Authorization": f"Bearer {bob}"}, timeout=10, json={
        "filename": "b.png", "size": len(data), "content_type": "image/png", "sha256": sha})
    assert theirs.status_code == 201, theirs.text
    up = theirs.json()
    assert (up["status"], up["deduplicated"]) == ("open", False) and up["ticket"] and "image" not in up
    r = requests.patch(up["upload_url"], data=data, timeout=60, headers={
        "Authorization": f"Bearer {up['ticket']}", "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert r.status_code == 204, r.text
    assert r.headers["Pixelfox-Deduplicated"] == "false" and r.headers["Pixelfox-Image-Slug"] != slug
    p = requests.get(f"{api}/{up['id']}", headers={"Authorization": f"Bearer {bob}"}, timeout=10).json()
    assert (p["status"], p["deduplicated"], p["image"]["sha256"]) == ("complete", False, sha)
    assert first_id != up["id"]


async def _grpc_create(cluster: ClusterHandle, key: str, size: int, sha: str) -> manager_pb2.CreateUploadResponse:
    async with grpc.aio.insecure_channel(cluster.manager_address) as ch:
        return await manager_pb2_grpc.ManagerServiceStub(ch).CreateUpload(
            manager_pb2.CreateUploadRequest(filename="x.png", size=size, sha256=sha),
            metadata=api_key_metadata(key), timeout=10)


def test_an_upper_case_sha256_is_taken_at_every_edge(cluster: ClusterHandle, tmp_path: Path) -> None:
    """A SHA-256 in upper case, declared at ``CreateUpload`` and again in the upload stream's header, is the
    file's hash: the upload completes and the image holds it in lower case (the manager refused it with
    INVALID_ARGUMENT while the upload node took it)."""
    data = _png(tmp_path, "upper.png")
    sha = hashlib.sha256(data).hexdigest()
    bob = asyncio.run(new_user_key(cluster.local, f"upperbob_{os.urandom(4).hex()}"))  # no image of these bytes
    ticket = asyncio.run(_grpc_create(cluster, bob, len(data), sha.upper()))
    assert not ticket.deduplicated and ticket.ticket

    async def go() -> upload_pb2.UploadReceipt:
        ch, stub = upload_stub(ticket.upload_address)
        async with ch:
            call = stub.Upload(timeout=60)
            await send(call, [header(ticket, len(data), sha.upper()), chunk(0, data)])
            return await call
    receipt = asyncio.run(go())
    assert receipt.sha256 == sha and receipt.size == len(data)


def test_the_openapi_sha256_pattern_is_what_the_api_takes(cluster: ClusterHandle) -> None:
    """``NewUpload.sha256``'s pattern in ``/api/v1/openapi.json`` takes exactly the values ``POST
    /api/v1/uploads`` takes (201) and refuses those it refuses (400): ``""`` is "not declared" (the schema
    refused it), either case is a hash."""
    doc = requests.get(f"{cluster.web_url}/api/v1/openapi.json", timeout=10).json()
    pattern = doc["components"]["schemas"]["NewUpload"]["properties"]["sha256"]["pattern"]
    api = f"{cluster.web_url}/api/v1/uploads"
    admin = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    sha = hashlib.sha256(b"schema").hexdigest()
    for value in ("", sha, sha.upper(), sha[:32] + sha[32:].upper(), sha[:63], sha + "0", "z" * 64):
        r = requests.post(api, headers=admin, timeout=10, json={"filename": "s.png", "size": 10, "sha256": value})
        assert r.status_code == (201 if re.search(pattern, value) else 400), (value, pattern, r.text)
        if r.status_code == 201:
            assert requests.delete(f"{api}/{r.json()['id']}", headers=admin, timeout=10).status_code == 204
