"""``POST /api/v1/uploads`` and ``GET /api/v1/uploads/<id>`` on a real web node, with tus to the upload node."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
import uuid
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import grpc
import pytest
import redis
import requests

from pixelfox.config import LimitsSettings
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.uploadstate import state_key
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.conftest import ClusterHandle
from tests.e2e.uploadkit import big_png, chunk, create, header, new_user_key, raw_request, refused_stream

pytestmark = pytest.mark.e2e


def test_browser_style_upload_through_the_web_api(cluster: ClusterHandle, tmp_path: Path) -> None:
    big_png(tmp_path / "p.png", 400)  # new bytes: no dedup with earlier tests' uploads
    data = (tmp_path / "p.png").read_bytes()
    key = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    api = f"{cluster.web_url}/api/v1/uploads"
    assert requests.post(api, json={"filename": "a.png", "size": len(data)}, timeout=10).status_code == 401
    assert requests.post(api, json={"size": 0}, headers=key, timeout=10).status_code == 400
    r = requests.post(api, json={"filename": "p.png", "size": len(data), "content_type": "image/png"},
                      headers=key, timeout=10)
    assert r.status_code == 201, r.text
    up = r.json()
    assert set(up) >= {"id", "upload_url", "ticket", "expires_at", "chunk_size"}
    assert up["upload_url"].endswith(f"/tus/{up['id']}") and up["expires_at"].endswith("Z")
    assert up["chunk_size"] == 256 * 1024

    tus = {"Authorization": f"Bearer {up['ticket']}", "Tus-Resumable": "1.0.0",
           "Content-Type": "application/offset+octet-stream"}
    half = len(data) // 2
    assert requests.patch(up["upload_url"], data=data[:half], headers={**tus, "Upload-Offset": "0"},
                          timeout=30).status_code == 204
    p = requests.get(f"{api}/{up['id']}", headers=key, timeout=10).json()
    assert (p["status"], p["offset"], p["size"], p["image"]) == ("open", half, len(data), None)
    # one ticket deadline, whoever says it: the answer to POST, GET's ticket_expires_at, and tus Upload-Expires;
    # GET's expires_at is the state's end (upload_ttl_s after the last chunk): its owner renews the ticket till then
    assert 0.49 < p["progress"] < 0.51 and p["ticket_expires_at"] == up["expires_at"]
    assert abs(datetime.fromisoformat(p["expires_at"].replace("Z", "+00:00")).timestamp() - (time.time() + 3600)) < 5
    head = requests.head(up["upload_url"], headers=tus, timeout=10)
    assert head.status_code == 200 and parsedate_to_datetime(head.headers["Upload-Expires"]) == \
        datetime.fromisoformat(up["expires_at"].replace("Z", "+00:00"))

    r = requests.patch(up["upload_url"], data=data[half:], headers={**tus, "Upload-Offset": str(half)}, timeout=60)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data))
    deadline = time.monotonic() + 120
    while True:
        p = requests.get(f"{api}/{up['id']}", headers=key, timeout=10).json()
        if p["image"]["status"] != "processing" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert p["status"] == "complete" and p["offset"] == len(data)
    assert p["image"]["status"] == "ready" and p["image"]["filename"] == "p.png"
    assert p["image"]["url"].startswith(cluster.web_url)
    assert requests.get(f"{api}/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=key, timeout=10).status_code == 404


def test_a_users_completed_upload_gives_them_its_deletion_link(cluster: ClusterHandle, tmp_path: Path) -> None:
    """``GET /api/v1/uploads/<id>`` of a complete upload gives its owner the image's ``deletion_url``, as
    ``POST /api/v1/images`` does (the upload page shows it, labelled, for a signed-in user's tus upload,
    which showed none); an admin reading another user's upload gets none. The link deletes the image."""
    big_png(tmp_path / "d.png", 40)  # new bytes: no dedup with earlier tests' uploads
    data = (tmp_path / "d.png").read_bytes()
    owner = asyncio.run(new_user_key(cluster.local, f"delowner_{uuid.uuid4().hex[:8]}"))
    mine = {"X-API-Key": owner}
    me = requests.get(f"{cluster.web_url}/api/v1/me", headers=mine, timeout=10).json()["id"]
    up = requests.post(f"{cluster.web_url}/api/v1/uploads", json={"filename": "d.png", "size": len(data)},
                       headers=mine, timeout=10).json()
    done = requests.patch(up["upload_url"], data=data, timeout=60, headers={
        "Authorization": f"Bearer {up['ticket']}", "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert done.status_code == 204, done.text
    slug = done.headers["Pixelfox-Image-Slug"]
    progress = f"{cluster.web_url}/api/v1/uploads/{up['id']}"
    image = requests.get(progress, headers=mine, timeout=10).json()["image"]
    assert image["deletion_url"].startswith(f"{cluster.web_url}/api/v1/delete/{slug}/{me}/"), image
    admin = requests.get(progress, headers={"X-API-Key": cluster.admin_api_key}, timeout=10).json()["image"]
    assert (admin["id"], admin["deletion_url"]) == (slug, "")
    deleted = requests.post(image["deletion_url"], headers={"Accept": "application/json"}, timeout=120)
    assert deleted.status_code == 200 and deleted.json() == {"deleted": True, "id": slug}, deleted.text
    assert requests.get(f"{cluster.web_url}/api/v1/images/{slug}", headers=mine, timeout=10).status_code == 404


def test_new_upload_fields_are_typed_strictly(cluster: ClusterHandle) -> None:
    """JSON ``"size": "100"`` or ``true`` is a 400 naming the field, not a silent 100 or 1 bytes."""
    key = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    api = f"{cluster.web_url}/api/v1/uploads"
    for body in ({"filename": "a.png", "size": "100"}, {"filename": "a.png", "size": True},
                 {"filename": "a.png", "size": 100.5}, {"filename": 7, "size": 100}):
        r = requests.post(api, json=body, headers=key, timeout=10)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["message"].split(":")[0] in ("size", "filename"), r.text
    # a field this route does not take is refused, not dropped (an "expiration" here never expired)
    r = requests.post(api, json={"filename": "a.png", "size": 100, "expiration": "PT5M"}, headers=key, timeout=10)
    assert (r.status_code, r.json()["error"]["message"]) == (400, "expiration: Extra inputs are not permitted"), r.text
    made = requests.post(api, json={"filename": "a.png", "size": 100}, headers=key, timeout=10).json()
    r = requests.post(f"{api}/{made['id']}/ticket", json={"exclude_addres": "x"}, headers=key, timeout=10)
    assert (r.status_code, r.json()["error"]["message"]) == (400, "exclude_addres: Extra inputs are not permitted")


def test_a_size_past_the_upload_limit_is_413_however_large(cluster: ClusterHandle) -> None:
    """A size past int64 is refused like any size over the limit (it got pydantic's "less than or equal
    to 9223372036854775807", a 400), and no upload is created."""
    key = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    api = f"{cluster.web_url}/api/v1/uploads"
    limit = LimitsSettings().max_upload_bytes  # the cluster runs with the default
    for size in (limit + 1, 2**63 - 1, 2**63, 99999999999999999999, 10**39):
        r = requests.post(api, json={"filename": "a.png", "size": size}, headers=key, timeout=10)
        assert r.status_code == 413, (size, r.text)
        assert r.json()["error"] == {"code": "payload-too-large",
                                     "message": f"file is {size} bytes; the limit is {limit} bytes"}
    assert requests.post(api, json={"filename": "a.png", "size": limit}, headers=key, timeout=10).status_code == 201


def test_a_cancelled_upload_reads_as_abandoned(cluster: ClusterHandle) -> None:
    """tus DELETE (the client cancelled): the upload's status is "abandoned", not "expired"."""
    key = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    api = f"{cluster.web_url}/api/v1/uploads"
    up = requests.post(api, json={"filename": "c.png", "size": 5000}, headers=key, timeout=10).json()
    tus = {"Authorization": f"Bearer {up['ticket']}", "Tus-Resumable": "1.0.0"}
    assert requests.delete(up["upload_url"], headers=tus, timeout=10).status_code == 204
    p = requests.get(f"{api}/{up['id']}", headers=key, timeout=10).json()
    assert (p["status"], p["offset"], p["image"]) == ("abandoned", 0, None), p


def test_a_failed_upload_keeps_its_reason_after_its_state_expired(cluster: ClusterHandle, tmp_path: Path) -> None:
    """A failed upload's reason lived only in its Redis state: once that expired (``upload_ttl_s``) the
    upload read ``expired`` with no error. The upload node now tells the manager, which keeps it: a
    non-image over tus (415) and a whole-file SHA-256 mismatch over gRPC still read ``failed`` with the
    code and message the uploader was told, over the web API and the progress RPC."""
    key = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    api = f"{cluster.web_url}/api/v1/uploads"
    up = requests.post(api, json={"filename": "notes.txt", "size": 1000}, headers=key, timeout=10).json()
    r = requests.patch(up["upload_url"], data=b"plain text, not an image\n" * 40, timeout=30, headers={
        "Authorization": f"Bearer {up['ticket']}", "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert r.status_code == 415, r.text

    big_png(tmp_path / "m.png", 100)
    data = (tmp_path / "m.png").read_bytes()
    t = asyncio.run(create(cluster.manager_address.split(",")[0], cluster.admin_api_key, len(data)))
    refused = asyncio.run(refused_stream(t.upload_address, [header(t, len(data), "0" * 64), chunk(0, data)]))
    assert refused.code() == grpc.StatusCode.DATA_LOSS, refused.details()

    store = redis.Redis.from_url(cluster.redis_url)
    try:
        before = [requests.get(f"{api}/{u}", headers=key, timeout=10).json() for u in (up["id"], t.upload_id)]
        store.delete(state_key(up["id"]), state_key(t.upload_id))  # as its TTL would
    finally:
        store.close()
    after = [requests.get(f"{api}/{u}", headers=key, timeout=10).json() for u in (up["id"], t.upload_id)]
    assert [(p["status"], p["error"]) for p in after] == [(p["status"], p["error"]) for p in before], after
    assert [p["status"] for p in after] == ["failed", "failed"]
    assert after[0]["error"] == {"code": "unsupported-format",
                                 "message": "not an image (text) (this upload failed; start a new one)"}
    assert after[1]["error"]["code"] == "checksum-mismatch", after[1]
    progress = asyncio.run(_progress(cluster, t.upload_id))
    assert (progress.status, progress.error_code) == ("failed", "checksum-mismatch")


def test_bytes_that_do_not_have_the_declared_sha256_fail_the_upload(cluster: ClusterHandle, tmp_path: Path) -> None:
    """``POST /api/v1/uploads``' ``sha256`` is used for dedup, but the bytes that then came over tus were
    stored whatever their hash, so a client could declare a hash its file does not have. The PATCH that
    completes such an upload now gets tus' 460 ``checksum-mismatch`` (gRPC: DATA_LOSS, as for a stream
    header's mismatch, also with no hash in the header): the staged bytes go, no image is made, the upload
    reads ``failed`` with the reason, a resume hears it again, and the upload node goes on taking uploads
    (the same file declared with its own hash is stored)."""
    key = asyncio.run(new_user_key(cluster.local, f"declared_{uuid.uuid4().hex[:8]}"))
    mine = {"Authorization": f"Bearer {key}"}
    api = f"{cluster.web_url}/api/v1/uploads"
    real = big_png(tmp_path / "d.png", 300)
    data = (tmp_path / "d.png").read_bytes()
    wrong = hashlib.sha256(os.urandom(16)).hexdigest()
    r = requests.post(api, json={"filename": "d.png", "size": len(data), "content_type": "image/png",
                                 "sha256": wrong}, headers=mine, timeout=10)
    assert r.status_code == 201, r.text
    up = r.json()
    tus = {"Authorization": f"Bearer {up['ticket']}", "Tus-Resumable": "1.0.0",
           "Content-Type": "application/offset+octet-stream"}
    half = len(data) // 2
    first = requests.patch(up["upload_url"], data=data[:half], headers={**tus, "Upload-Offset": "0"}, timeout=30)
    assert first.status_code == 204, first.text
    last = requests.patch(up["upload_url"], data=data[half:], headers={**tus, "Upload-Offset": str(half)}, timeout=60)
    assert last.status_code == 460, (last.status_code, last.headers, last.text)
    said = "SHA-256 of the received bytes does not match the sha256 declared when the upload was created"
    assert last.json()["error"] == {"code": "checksum-mismatch", "message": said}
    assert "Pixelfox-Image-Slug" not in last.headers
    failed = {"code": "checksum-mismatch", "message": f"{said} (this upload failed; start a new one)"}
    again = requests.patch(up["upload_url"], data=data[half:], headers={**tus, "Upload-Offset": str(half)}, timeout=30)
    assert (again.status_code, again.json()["error"]) == (460, failed)
    assert requests.head(up["upload_url"], headers=tus, timeout=10).status_code == 460
    p = requests.get(f"{api}/{up['id']}", headers=mine, timeout=10).json()
    assert (p["status"], p["image"], p["error"]) == ("failed", None, failed), p
    assert not (cluster.root / ".pixelfox" / "data" / "staging" / f"{up['id']}.part").exists()

    # gRPC: the hash declared at CreateUpload holds for a stream whose header names none
    async def grpc_create(sha256: str) -> manager_pb2.CreateUploadResponse:
        async with grpc.aio.insecure_channel(cluster.manager_address.split(",")[0]) as ch:
            return await manager_pb2_grpc.ManagerServiceStub(ch).CreateUpload(manager_pb2.CreateUploadRequest(
                filename="d.png", size=len(data), content_type="image/png", sha256=sha256),
                metadata=api_key_metadata(key), timeout=10)
    t = asyncio.run(grpc_create(wrong))
    refused = asyncio.run(refused_stream(t.upload_address, [header(t, len(data)), chunk(0, data)]))
    assert refused.code() == grpc.StatusCode.DATA_LOSS, refused.details()
    assert refused.details() == said
    assert asyncio.run(_images_of(cluster, key)) == []  # nothing was stored for the user

    # nothing else is lost: the same bytes declared with their own hash are stored, and the node is ready
    r = requests.post(api, json={"filename": "d.png", "size": len(data), "content_type": "image/png",
                                 "sha256": real}, headers=mine, timeout=10)
    assert r.status_code == 201, r.text
    ok = r.json()
    done = requests.patch(ok["upload_url"], data=data, timeout=60, headers={
        "Authorization": f"Bearer {ok['ticket']}", "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert done.status_code == 204 and done.headers["Pixelfox-Deduplicated"] == "false", done.text
    assert asyncio.run(_images_of(cluster, key)) == [done.headers["Pixelfox-Image-Slug"]]
    node = up["upload_url"].split("/tus/")[0]
    assert requests.get(f"{node}/readyz", timeout=10).status_code == 200


async def _images_of(cluster: ClusterHandle, key: str) -> list[str]:
    async with grpc.aio.insecure_channel(cluster.manager_address.split(",")[0]) as ch:
        reply = await manager_pb2_grpc.ManagerServiceStub(ch).ListImages(
            manager_pb2.ListImagesRequest(limit=10), metadata=api_key_metadata(key), timeout=10)
    return [i.slug for i in reply.images]


async def _progress(cluster: ClusterHandle, upload_id: str) -> manager_pb2.UploadProgress:
    async with grpc.aio.insecure_channel(cluster.manager_address.split(",")[0]) as ch:
        return await manager_pb2_grpc.ManagerServiceStub(ch).GetUpload(
            manager_pb2.GetUploadRequest(upload_id=upload_id), metadata=api_key_metadata(cluster.admin_api_key),
            timeout=10)


def test_a_user_lists_their_open_uploads_newest_first(cluster: ClusterHandle, tmp_path: Path) -> None:
    """A script that lost its upload ids, or a browser user who closed the tab, could not learn them
    (``GET /api/v1/uploads`` was a 405), so the 429 "too many open uploads" left them stuck until their
    tickets ended. The list holds exactly the caller's open uploads, newest first, each as
    ``GET /api/v1/uploads/<id>`` answers it; a completed or failed one is not in it, a cancelled one
    leaves it."""
    name = f"lister_{uuid.uuid4().hex[:8]}"
    key = asyncio.run(new_user_key(cluster.local, name))
    other = asyncio.run(new_user_key(cluster.local, f"other_{uuid.uuid4().hex[:8]}"))
    mine = {"Authorization": f"Bearer {key}"}
    api = f"{cluster.web_url}/api/v1/uploads"
    big_png(tmp_path / "done.png", 300)  # new bytes: no dedup with earlier tests' uploads
    big_png(tmp_path / "first.png", 400)
    data, partial = (tmp_path / "done.png").read_bytes(), (tmp_path / "first.png").read_bytes()

    def start(filename: str, size: int) -> dict[str, str]:
        r = requests.post(api, json={"filename": filename, "size": size, "content_type": "image/png"},
                          headers=mine, timeout=10)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def patch(up: dict[str, str], body: bytes) -> int:
        return requests.patch(up["upload_url"], data=body, timeout=60, headers={
            "Authorization": f"Bearer {up['ticket']}", "Tus-Resumable": "1.0.0",
            "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}).status_code

    first, done = start("first.png", len(partial)), start("done.png", len(data))
    bad, last = start("bad.png", 5000), start("last.png", 5000)
    assert patch(first, partial[:100_000]) == 204  # part of the file: stays open at 100000 bytes
    assert patch(done, data) == 204  # the whole file: complete, not open
    assert patch(bad, os.urandom(5000)) == 415  # not an image: failed (its row stays "open"), not open either
    listed = requests.get(api, headers=mine, timeout=10)
    assert listed.status_code == 200 and listed.headers["Cache-Control"] == "no-store", listed.text
    uploads = listed.json()["uploads"]
    assert [(u["id"], u["filename"], u["status"], u["offset"], u["size"]) for u in uploads] == [
        (last["id"], "last.png", "open", 0, 5000), (first["id"], "first.png", "open", 100_000, len(partial))]
    assert uploads == [requests.get(f"{api}/{u['id']}", headers=mine, timeout=10).json() for u in uploads]
    assert requests.get(f"{api}/{done['id']}", headers=mine, timeout=10).json()["status"] == "complete"

    assert requests.get(api, headers={"X-API-Key": other}, timeout=10).json() == {"uploads": []}
    admin = requests.get(api, headers={"Authorization": f"Bearer {cluster.admin_api_key}"}, timeout=10)
    assert admin.status_code == 200 and not {u["id"] for u in admin.json()["uploads"]} & {first["id"], last["id"]}
    anonymous = requests.get(api, timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthenticated", anonymous.text
    with requests.Session() as browser:  # a signed-in browser sees the same list
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', browser.get(f"{cluster.web_url}/login", timeout=10).text)
        assert csrf, "no CSRF token on /login"
        login = browser.post(f"{cluster.web_url}/login", allow_redirects=False, timeout=10,
                             data={"csrf_token": csrf.group(1), "name": name, "password": "pw " + name * 2})
        assert login.status_code == 303, login.text
        assert [u["id"] for u in browser.get(api, timeout=10).json()["uploads"]] == [last["id"], first["id"]]

    assert requests.delete(f"{api}/{last['id']}", headers=mine, timeout=10).status_code == 204
    assert [u["id"] for u in requests.get(api, headers=mine, timeout=10).json()["uploads"]] == [first["id"]]


def test_pixelfox_uploads_lists_and_cancels_the_callers_open_uploads(cluster: ClusterHandle) -> None:
    """``pixelfox uploads`` lists the local admin's open uploads and ``pixelfox uploads cancel ID``
    cancels one (ids in any case); cancelling it again says why not."""
    api = f"{cluster.web_url}/api/v1/uploads"
    r = requests.post(api, json={"filename": "cli.png", "size": 4321},
                      headers={"Authorization": f"Bearer {cluster.admin_api_key}"}, timeout=10)
    assert r.status_code == 201, r.text
    upload_id = r.json()["id"]
    listed = cluster.pixelfox("uploads", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {u["id"]: u for u in json.loads(listed.stdout)["uploads"]}
    assert {k: rows[upload_id][k] for k in ("filename", "offset", "size", "status", "progress")} == {
        "filename": "cli.png", "offset": 0, "size": 4321, "status": "open", "progress": 0.0}
    web = requests.get(f"{api}/{upload_id}", headers={"Authorization": f"Bearer {cluster.admin_api_key}"}, timeout=10)
    assert rows[upload_id] == web.json()  # one shape for the CLI and the web
    gone = cluster.pixelfox("uploads", "cancel", upload_id.lower())
    assert (gone.returncode, gone.stdout.strip()) == (0, f"cancelled upload {upload_id}"), gone.stderr
    assert upload_id not in cluster.pixelfox("uploads", "--json").stdout
    again = cluster.pixelfox("uploads", "cancel", upload_id)
    assert again.returncode == 2 and "nothing to cancel: the upload was already cancelled" in again.stderr, again.stderr


def test_a_repeated_credential_header_on_the_web_api_is_refused(cluster: ClusterHandle) -> None:
    """``POST /api/v1/uploads`` (and every API call that reads the caller's key) with two
    ``Authorization`` or ``X-API-Key`` headers took the first; a 400 naming the header now."""
    api = f"{cluster.web_url}/api/v1/uploads"
    body = json.dumps({"filename": "a.png", "size": 1000}).encode()
    key = cluster.admin_api_key
    json_type = ("Content-Type", "application/json")
    for name, value in (("Authorization", f"Bearer {key}"), ("X-API-Key", key)):
        status, said = raw_request(api, "POST", [json_type, (name, value), (name, "junk")], body)
        assert (status, said["error"]) == (400, {"code": "bad-request",
                                                 "message": f"{name} was sent more than once: send it once"})
    # two different keys, one in each header: which one would count? (X-API-Key was ignored)
    status, said = raw_request(api, "POST", [json_type, ("Authorization", f"Bearer {key}"), ("X-API-Key", "other")],
                               body)
    assert (status, said["error"]["code"]) == (400, "bad-request"), said
    assert said["error"]["message"].startswith("two different API keys"), said
    # the Chevereto endpoint reads X-API-Key itself (its error shape: status_code and error.message)
    status, said = raw_request(f"{cluster.web_url}/api/1/upload", "POST",
                               [("Content-Type", "application/x-www-form-urlencoded"), ("X-API-Key", key),
                                ("X-API-Key", "junk")], b"source=aGk%3D")
    assert (status, said["error"]["message"]) == (400, "X-API-Key was sent more than once: send it once"), said
    status, said = raw_request(api, "POST", [json_type, ("Authorization", f"Bearer {key}")], body)
    assert status == 201, said
    gone = requests.delete(f"{api}/{said['id']}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert gone.status_code == 204, gone.text  # its open-upload slot is not left to other tests
