"""tus 1.0 on the upload nodes, driven by the real ``tuspy`` client and by raw requests.

Tickets come from the manager's ``CreateUpload`` (gRPC); its ``upload_url`` is
``<upload node http_url>/tus/<id>``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from pathlib import Path

import grpc
import pytest
import redis
import requests
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.uploadstate import open_uploads_key, state_key
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc
from tests.conftest import ClusterHandle
from tests.e2e.uploadkit import ThreadedProxy, big_png, create, new_user_key, raw_request, wait_ready

pytestmark = pytest.mark.e2e

TUS = {"Tus-Resumable": "1.0.0"}


def ticket_for(cluster: ClusterHandle, size: int) -> manager_pb2.CreateUploadResponse:
    """A ticket for a ``size``-byte upload. While the session cluster's upload nodes are "inactive" (their
    heartbeats late: a full run saw both so for a moment, on a loaded 2-core box) it asks again for up to
    15 s, as ``pixelfox put`` does (its no-node wait); any other refusal is raised at once."""
    deadline = time.monotonic() + 15
    while True:
        try:
            t = asyncio.run(create(cluster.manager_address, cluster.admin_api_key, size))
            break
        except grpc.aio.AioRpcError as exc:
            if (exc.code() != grpc.StatusCode.UNAVAILABLE or "inactive" not in (exc.details() or "")
                    or time.monotonic() > deadline):
                raise
            time.sleep(0.5)
    assert t.upload_url.endswith(f"/tus/{t.upload_id}")
    return t


def auth(t: manager_pb2.CreateUploadResponse) -> dict[str, str]:
    return {"Authorization": f"Bearer {t.ticket}", **TUS}


def ready(cluster: ClusterHandle, slug: str) -> common_pb2.Image:
    return asyncio.run(wait_ready(cluster.manager_address, cluster.admin_api_key, slug))


def test_tuspy_upload_with_creation_and_checksums(cluster: ClusterHandle, corpus: Path) -> None:
    path = corpus / "photos" / "painting_rgb.png"
    t = ticket_for(cluster, path.stat().st_size)
    creation = t.upload_url.rsplit("/", 1)[0] + "/"
    c = tus_client.TusClient(creation, headers={"Authorization": f"Bearer {t.ticket}"})
    with path.open("rb") as f:
        up = c.uploader(file_stream=f, chunk_size=256 * 1024, upload_checksum=True, metadata={"filename": "p.png"})
        up.upload()
    assert up.url == t.upload_url  # creation answered with the ticket's upload
    head = requests.head(t.upload_url, headers=auth(t), timeout=10)
    assert head.headers["Upload-Offset"] == str(path.stat().st_size)
    img = ready(cluster, head.headers["Pixelfox-Image-Slug"])
    assert img.status == common_pb2.IMAGE_STATUS_READY
    assert img.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_tuspy_resumes_after_a_cut(cluster: ClusterHandle, tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    sha = big_png(path, 1200)
    size = path.stat().st_size
    t = ticket_for(cluster, size)
    node = t.upload_url.split("/tus/")[0].removeprefix("http://")
    proxy = ThreadedProxy(node)
    url = f"http://{proxy.address}/tus/{t.upload_id}"
    try:
        proxy.proxy.cut_after = size // 2  # mid-PATCH: the whole file goes in one PATCH
        c = tus_client.TusClient(url, headers={"Authorization": f"Bearer {t.ticket}"})
        with path.open("rb") as f, pytest.raises(TusCommunicationError):
            c.uploader(file_stream=f, url=url, chunk_size=size).upload()
        kept = 0
        for _ in range(50):  # the node finishes the cut PATCH's bytes a moment after the client sees the cut
            kept = int(requests.head(url, headers=auth(t), timeout=10).headers["Upload-Offset"])
            if kept:
                break
            time.sleep(0.1)
        assert 0 < kept < size, "nothing was kept from the cut PATCH"
        with path.open("rb") as f:
            again = c.uploader(file_stream=f, url=url, chunk_size=size, retries=10, retry_delay=1)
            assert again.offset >= kept  # resumes where the node stopped, not at 0
            again.upload()
    finally:
        proxy.close()
    head = requests.head(t.upload_url, headers=auth(t), timeout=10)
    img = ready(cluster, head.headers["Pixelfox-Image-Slug"])
    assert img.status == common_pb2.IMAGE_STATUS_READY and img.sha256 == sha


def test_tus_ticket_is_good_for_one_upload(cluster: ClusterHandle, corpus: Path) -> None:
    data = (corpus / "photos" / "blackbug_alpha.png").read_bytes()
    t = ticket_for(cluster, len(data))
    create = {**auth(t), "Upload-Length": str(len(data))}
    base = t.upload_url.rsplit("/", 1)[0] + "/"
    assert requests.post(base, headers=create, timeout=10).status_code == 201
    r = requests.patch(t.upload_url, data=data, timeout=30,
                       headers={**auth(t), "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert r.status_code == 204 and r.headers["Pixelfox-Image-Slug"]
    for endpoint in (base, base.rstrip("/")):  # the creation URL with or without its slash
        again = requests.post(endpoint, headers=create, timeout=10)  # the used ticket creates nothing new
        assert again.status_code == 401 and "already used" in again.json()["error"]["message"], again.text
    # a PATCH after completion, whatever its size, hears that the upload is complete and its image
    for body, offset in [(data, "0"), (b"more", str(len(data)))]:
        late = requests.patch(t.upload_url, data=body, timeout=30, headers={
            **auth(t), "Content-Type": "application/offset+octet-stream", "Upload-Offset": offset})
        assert late.status_code == 401, late.text
        assert late.json()["error"]["message"] == ("upload ticket already used: the upload is complete "
                                                   f"(image {r.headers['Pixelfox-Image-Slug']})")


def test_x_http_method_override_patch_and_delete(cluster: ClusterHandle, corpus: Path) -> None:
    """CORS advertised X-HTTP-Method-Override, but a POST with it was a 405, so tus-js-client's
    overridePatchMethod (for proxies that drop PATCH) failed; tus 1.0.0 says to honour it."""
    data = (corpus / "photos" / "blackbug_alpha.png").read_bytes()
    t = ticket_for(cluster, len(data))
    half = len(data) // 2
    patch = {**auth(t), "Content-Type": "application/offset+octet-stream", "X-HTTP-Method-Override": "PATCH"}
    r = requests.post(t.upload_url, data=data[:half], headers={**patch, "Upload-Offset": "0"}, timeout=30)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(half), r.text
    r = requests.post(t.upload_url, data=data[half:], headers={**patch, "Upload-Offset": str(half)}, timeout=30)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data)), r.text
    img = ready(cluster, r.headers["Pixelfox-Image-Slug"])
    assert img.status == common_pb2.IMAGE_STATUS_READY and img.sha256 == hashlib.sha256(data).hexdigest()

    other = ticket_for(cluster, 1000)
    plain = requests.post(other.upload_url, data=b"x", headers=auth(other), timeout=10)
    assert plain.status_code == 405 and "X-HTTP-Method-Override" in plain.json()["error"]["message"], plain.text
    gone = requests.post(other.upload_url, headers={**auth(other), "X-HTTP-Method-Override": "DELETE"}, timeout=10)
    assert gone.status_code == 204, gone.text
    assert requests.head(other.upload_url, headers=auth(other), timeout=10).status_code == 404


def test_an_upload_length_past_tus_max_size_is_413_however_long(cluster: ClusterHandle) -> None:
    """An Upload-Length of more digits than an int64 has is over Tus-Max-Size like any other (it got 400
    "must be a non-negative integer of at most 18 digits"); a malformed one is still a 400."""
    t = ticket_for(cluster, 1000)
    base = t.upload_url.rsplit("/", 1)[0] + "/"
    most = requests.options(base, timeout=10).headers["Tus-Max-Size"]
    for length in (str(int(most) + 1), "999999999999999999", "9223372036854775808", "99999999999999999999",
                   "1" * 1000):
        r = requests.post(base, headers={**auth(t), "Upload-Length": length}, timeout=10)
        assert r.status_code == 413, (length, r.text)
        assert r.json()["error"] == {"code": "payload-too-large",
                                     "message": f"Upload-Length {length} is over Tus-Max-Size {most}"}
    for bad in ("-1", "1e30", "\u00b2".encode().decode("latin-1"), "0" * 30 + "1000"):  # not 18 digits or fewer
        r = requests.post(base, headers={**auth(t), "Upload-Length": bad}, timeout=10)
        assert r.status_code == 400 and "Upload-Length must be a non-negative integer" in r.text, (bad, r.text)
    assert requests.post(base, headers={**auth(t), "Upload-Length": "1000"}, timeout=10).status_code == 201


def test_tus_protocol_rules(cluster: ClusterHandle, corpus: Path) -> None:
    data = (corpus / "photos" / "painting_rgb.png").read_bytes()
    t = ticket_for(cluster, len(data))
    url = t.upload_url
    opt = requests.options(url, headers={"Origin": "https://example.org",
                                         "Access-Control-Request-Method": "PATCH"}, timeout=10)
    assert opt.status_code == 204
    assert opt.headers["Tus-Version"] == "1.0.0"
    assert set(opt.headers["Tus-Extension"].split(",")) >= {"creation", "termination", "checksum", "expiration"}
    assert "Upload-Offset" in opt.headers["Access-Control-Expose-Headers"]
    assert "Upload-Offset" in opt.headers["Access-Control-Allow-Headers"]
    assert opt.headers["Access-Control-Allow-Origin"] == "*"

    assert requests.head(url, headers={"Authorization": f"Bearer {t.ticket}"}, timeout=10).status_code == 412
    no_auth = requests.head(url, headers=TUS, timeout=10)
    assert no_auth.status_code == 401
    h = requests.head(url, headers=auth(t), timeout=10)
    assert h.status_code == 200 and h.headers["Upload-Offset"] == "0" and h.headers["Upload-Length"] == str(len(data))
    assert h.headers["Cache-Control"] == "no-store" and "GMT" in h.headers["Upload-Expires"]
    # when nothing can resume it: the ticket's end (exp + 30 s), not the state's hour
    from email.utils import parsedate_to_datetime

    from pixelfox import tickets

    end = tickets.verify(tickets.derive_key(cluster.secret), t.ticket).expires_at + tickets.LEEWAY_S
    assert abs(parsedate_to_datetime(h.headers["Upload-Expires"]).timestamp() - end) <= 1, h.headers

    patch = {**auth(t), "Content-Type": "application/offset+octet-stream"}
    first = data[:100_000]
    r = requests.patch(url, data=first, headers={**patch, "Upload-Offset": "0"}, timeout=10)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "100000"
    r = requests.patch(url, data=first, headers={**patch, "Upload-Offset": "0"}, timeout=10)
    assert r.status_code == 409 and "committed offset is 100000" in r.json()["error"]["message"]
    r = requests.patch(url, data=b"x", headers={**patch, "Upload-Offset": "\u00b2".encode().decode("latin-1")},
                       timeout=10)  # a Unicode digit: a bad header, not a crash
    assert r.status_code == 400 and "non-negative integer" in r.json()["error"]["message"]
    r = requests.patch(url, data=b"x", headers={**auth(t), "Upload-Offset": "100000",
                                                "Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported-media-type"
    r = requests.put(url, data=b"x", headers=auth(t), timeout=10)  # not a tus method
    assert (r.status_code, r.json()["error"]["code"]) == (405, "method-not-allowed")
    assert "PATCH" in r.headers["Allow"] and r.headers["Tus-Resumable"] == "1.0.0"
    bad = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    r = requests.patch(url, data=data[100_000:200_000], timeout=10,
                       headers={**patch, "Upload-Offset": "100000", "Upload-Checksum": f"sha1 {bad}"})
    assert r.status_code == 460
    assert requests.head(url, headers=auth(t), timeout=10).headers["Upload-Offset"] == "100000"
    short = base64.b64encode(b"\0" * 8).decode()
    for value in ("sha1", "sha1 ", f"sha1 {short}", "md5 not-base64!"):  # malformed headers: 400, never 460
        r = requests.patch(url, data=data[100_000:200_000], timeout=10,
                           headers={**patch, "Upload-Offset": "100000", "Upload-Checksum": value})
        assert r.status_code == 400 and "Upload-Checksum" in r.json()["error"]["message"], (value, r.text)
    # a body that would run past Upload-Length is refused before a byte of it is kept
    r = requests.patch(url, data=data[100_000:] + b"extra", timeout=10, headers={**patch, "Upload-Offset": "100000"})
    assert r.status_code == 413 and "past Upload-Length" in r.json()["error"]["message"], r.text
    assert requests.head(url, headers=auth(t), timeout=10).headers["Upload-Offset"] == "100000"

    other = ticket_for(cluster, len(data))
    assert requests.head(url, headers=auth(other), timeout=10).status_code == 401
    r = requests.patch(url, data=b"x", headers={**patch, **auth(other), "Upload-Offset": "100000"}, timeout=10)
    assert r.status_code == 401 and "another upload" in r.json()["error"]["message"]

    assert requests.delete(url, headers=auth(t), timeout=10).status_code == 204
    assert requests.head(url, headers=auth(t), timeout=10).status_code == 404
    staged = cluster.root / ".pixelfox" / "data" / "staging" / f"{t.upload_id}.part"
    assert not staged.exists()


def test_a_chunked_body_past_upload_length_keeps_the_upload_resumable(cluster: ClusterHandle, tmp_path: Path) -> None:
    """A chunked PATCH (no Content-Length) that runs past Upload-Length gets 413; the piece that
    crossed it is not kept, what came before stays (as after a cut), and the client finishes
    from HEAD's offset with the right bytes. (Where the server's reads split the body decides
    whether the last file bytes share a piece with the extra ones: both cases are handled.)"""
    big_png(tmp_path / "over.png", 700)
    data = (tmp_path / "over.png").read_bytes()
    t = ticket_for(cluster, len(data))
    patch = {**auth(t), "Content-Type": "application/offset+octet-stream"}

    def pieces():  # type: ignore[no-untyped-def]  # a generator: requests sends it chunked
        for i in range(0, len(data), 100_000):
            yield data[i:i + 100_000]
        yield b"one too many"

    r = requests.patch(t.upload_url, data=pieces(), headers={**patch, "Upload-Offset": "0"}, timeout=60)
    assert r.status_code == 413 and "past Upload-Length" in r.json()["error"]["message"], r.text
    kept = int(requests.head(t.upload_url, headers=auth(t), timeout=10).headers["Upload-Offset"])
    # what arrived before the crossing piece is kept: all of the file when the extra bytes came in a
    # read of their own (then the empty PATCH below completes it), else less
    assert 0 <= kept <= len(data) and r.headers["Upload-Offset"] == str(kept)  # the 413 says what is kept
    done = requests.patch(t.upload_url, data=data[kept:], headers={**patch, "Upload-Offset": str(kept)}, timeout=60)
    assert done.status_code == 204 and done.headers["Upload-Offset"] == str(len(data)), done.text
    img = ready(cluster, done.headers["Pixelfox-Image-Slug"])
    assert img.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [1000, 300_000, 600_000])  # under one piece, between one and two, over two
def test_a_non_image_is_refused_as_one_whatever_its_size(cluster: ClusterHandle, size: int) -> None:
    """The piece that failed the probe used to be written again after the refusal: a 256-512 KiB
    non-image got 413 "more bytes than the declared N" instead of 415."""
    data = (b"plain text, not an image at all\n" * (size // 32 + 1))[:size]
    t = ticket_for(cluster, size)
    r = requests.patch(t.upload_url, data=data, timeout=30, headers={
        **auth(t), "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported-format", r.text
    head = requests.head(t.upload_url, headers=auth(t), timeout=10)
    assert head.status_code == 415
    progress = requests.get(f"{cluster.web_url}/api/v1/uploads/{t.upload_id}", timeout=10,
                            headers={"Authorization": f"Bearer {cluster.admin_api_key}"}).json()
    assert progress["status"] == "failed" and progress["error"]["code"] == "unsupported-format", progress


def test_a_short_non_image_is_taken_until_complete_then_refused_and_leaves_nothing(cluster: ClusterHandle) -> None:
    """26 text bytes of a 100-byte upload are taken (204): the header is probed once ``probe_bytes``
    (256 KiB) or the whole file arrived, and 26 bytes are neither. The PATCH that completes the
    upload gets 415; nothing is stored, the staged bytes go, the upload reads "failed" with the
    reason, a resume hears the same 415, and it leaves its user's open uploads at once."""
    key = asyncio.run(new_user_key(cluster.local, f"tus_text_{os.urandom(4).hex()}"))
    web = {"Authorization": f"Bearer {key}"}
    up = requests.post(f"{cluster.web_url}/api/v1/uploads", json={"filename": "notes.txt", "size": 100},
                       headers=web, timeout=10).json()
    patch = {"Authorization": f"Bearer {up['ticket']}", **TUS, "Content-Type": "application/offset+octet-stream"}
    progress = f"{cluster.web_url}/api/v1/uploads/{up['id']}"
    store = redis.Redis.from_url(cluster.redis_url)
    try:
        user = store.hget(state_key(up["id"]), "user").decode()
        r = requests.patch(up["upload_url"], data=b"abcdefghijklmnopqrstuvwxyz", timeout=10,
                           headers={**patch, "Upload-Offset": "0"})
        assert (r.status_code, r.headers["Upload-Offset"]) == (204, "26"), r.text
        p = requests.get(progress, headers=web, timeout=10).json()
        assert (p["status"], p["offset"], p["error"]) == ("open", 26, None), p
        assert store.zscore(open_uploads_key(user), up["id"]) is not None  # counted as unfinished

        r = requests.patch(up["upload_url"], data=b"x" * 74, timeout=30, headers={**patch, "Upload-Offset": "26"})
        assert r.status_code == 415, r.text
        assert r.json()["error"] == {"code": "unsupported-format", "message": "not an image (text)"}
        failed = {"code": "unsupported-format", "message": "not an image (text) (this upload failed; start a new one)"}
        again = requests.patch(up["upload_url"], data=b"x" * 74, timeout=30, headers={**patch, "Upload-Offset": "26"})
        assert (again.status_code, again.json()["error"]) == (415, failed)
        assert requests.head(up["upload_url"], headers=patch, timeout=10).status_code == 415
        p = requests.get(progress, headers=web, timeout=10).json()
        assert (p["status"], p["image"], p["error"]) == ("failed", None, failed), p
        assert store.zscore(open_uploads_key(user), up["id"]) is None  # no longer holds an open-upload slot
    finally:
        store.close()
    assert not (cluster.root / ".pixelfox" / "data" / "staging" / f"{up['id']}.part").exists()
    listed = asyncio.run(_list_images(cluster.manager_address, key))
    assert listed == [], listed  # nothing was stored for the user


async def _list_images(address: str, key: str) -> list[str]:
    async with grpc.aio.insecure_channel(address.split(",")[0]) as ch:
        reply = await manager_pb2_grpc.ManagerServiceStub(ch).ListImages(
            manager_pb2.ListImagesRequest(limit=10), metadata=api_key_metadata(key), timeout=10)
    return [i.slug for i in reply.images]


def test_a_checked_chunked_body_past_upload_length_keeps_nothing(cluster: ClusterHandle, tmp_path: Path) -> None:
    """With Upload-Checksum nothing of the body is kept unless it checks out: the 413 of a chunked
    body that runs past Upload-Length says offset 0, as HEAD does."""
    big_png(tmp_path / "checked.png", 700)
    data = (tmp_path / "checked.png").read_bytes()
    t = ticket_for(cluster, len(data))
    digest = base64.b64encode(hashlib.sha1(data).digest()).decode()

    def pieces():  # type: ignore[no-untyped-def]  # a generator: requests sends it chunked
        for i in range(0, len(data), 100_000):
            yield data[i:i + 100_000]
        yield b"ten more.."

    r = requests.patch(t.upload_url, data=pieces(), timeout=60, headers={
        **auth(t), "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
        "Upload-Checksum": f"sha1 {digest}"})
    assert r.status_code == 413 and r.headers["Upload-Offset"] == "0", (r.headers, r.text)
    assert "0 bytes are kept" in r.json()["error"]["message"], r.text
    assert requests.head(t.upload_url, headers=auth(t), timeout=10).headers["Upload-Offset"] == "0"


def test_tus_reads_headers_as_clients_write_them(cluster: ClusterHandle, corpus: Path) -> None:
    """Header forms real clients send: the auth scheme in any case (RFC 9110: ``bearer`` was a 401),
    a tab after it, an upper-case checksum name; a PATCH at the wrong offset is a 409 that names the
    committed offset even when its body would run past the end (it was a 413); a malformed
    ``Upload-Checksum`` says the form it needs, without echoing junk."""
    data = (corpus / "photos" / "painting_rgb.png").read_bytes()
    t = ticket_for(cluster, len(data))
    for scheme in ("bearer ", "BEARER ", "Bearer\t", "Bearer   "):
        h = requests.head(t.upload_url, headers={**TUS, "Authorization": f"{scheme}{t.ticket}"}, timeout=10)
        assert (h.status_code, h.headers.get("Upload-Offset")) == (200, "0"), (scheme, h.text)
    for value in ("Bearer", "Bearer ", "Basic abc", "Token " + t.ticket):
        h = requests.head(t.upload_url, headers={**TUS, "Authorization": value}, timeout=10)
        assert h.status_code == 401, value
    for junk in (t.ticket + " x", t.ticket[:-3], "abc"):  # our words, not PyJWT's ("Invalid crypto padding")
        p = requests.patch(t.upload_url, data=b"x", timeout=10, headers={
            **TUS, "Authorization": f"Bearer {junk}", "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0"})
        said = p.json()["error"]["message"]
        assert p.status_code == 401 and ("malformed" in said or "signature" in said), (junk, said)
        assert "padding" not in said and "segments" not in said.lower(), said

    patch = {"Authorization": f"bearer {t.ticket}", **TUS, "Content-Type": "application/offset+octet-stream"}
    r = requests.patch(t.upload_url, data=data[:50_000], headers={**patch, "Upload-Offset": "0"}, timeout=10)
    assert (r.status_code, r.headers["Upload-Offset"]) == (204, "50000"), r.text
    r = requests.patch(t.upload_url, data=data[50_000:], headers={**patch, "Upload-Offset": "60000"}, timeout=10)
    assert r.status_code == 409 and "committed offset is 50000" in r.json()["error"]["message"], r.text

    for value in ("garbage", "garbage " + "A" * 4000, "x" * 300):
        r = requests.patch(t.upload_url, data=data[50_000:60_000], timeout=10,
                           headers={**patch, "Upload-Offset": "50000", "Upload-Checksum": value})
        msg = r.json()["error"]["message"]
        assert r.status_code == 400 and "'<algorithm> <base64 digest>'" in msg and "sha256" in msg, r.text
        assert len(msg) < 200 and "AAAA" not in msg and "xxxx" not in msg
    assert "(got 'garbage')" in requests.patch(t.upload_url, data=b"x", timeout=10, headers={
        **patch, "Upload-Offset": "50000", "Upload-Checksum": "garbage"}).json()["error"]["message"]

    rest = data[50_000:]
    digest = base64.b64encode(hashlib.sha1(rest).digest()).decode()
    r = requests.patch(t.upload_url, data=rest, timeout=30,
                       headers={**patch, "Upload-Offset": "50000", "Upload-Checksum": f"SHA1 {digest}"})
    assert (r.status_code, r.headers["Upload-Offset"]) == (204, str(len(data))), r.text
    assert ready(cluster, r.headers["Pixelfox-Image-Slug"]).sha256 == hashlib.sha256(data).hexdigest()


def test_a_patch_upload_length_other_than_the_uploads_is_refused(cluster: ClusterHandle, corpus: Path) -> None:
    """tus 1.0: ``Upload-Length`` on a PATCH only sets a deferred length (which creation refuses);
    one that differs from the upload's was taken and ignored. It is a 400 now, nothing of the body
    kept; the upload's own length is harmless."""
    data = (corpus / "photos" / "painting_rgb.png").read_bytes()
    t = ticket_for(cluster, len(data))
    patch = {**auth(t), "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    for length in (str(len(data) + 1), str(len(data) - 1), "0"):
        r = requests.patch(t.upload_url, data=data[:1000], headers={**patch, "Upload-Length": length}, timeout=10)
        assert r.status_code == 400, (length, r.text)
        assert r.json()["error"]["message"] == (f"Upload-Length {length} differs from the upload's {len(data)} "
                                                "bytes: the length is fixed at creation")
    r = requests.patch(t.upload_url, data=data[:1000], headers={**patch, "Upload-Length": "x"}, timeout=10)
    assert r.status_code == 400 and "Upload-Length must be a non-negative integer" in r.text, r.text
    assert requests.head(t.upload_url, headers=auth(t), timeout=10).headers["Upload-Offset"] == "0"
    r = requests.patch(t.upload_url, data=data[:1000], headers={**patch, "Upload-Length": str(len(data))},
                       timeout=10)
    assert (r.status_code, r.headers["Upload-Offset"]) == (204, "1000"), r.text


def test_a_repeated_tus_header_is_refused_naming_it(cluster: ClusterHandle, corpus: Path) -> None:
    """Two ``Upload-Offset`` (or ``Upload-Length``, ``Upload-Checksum``, ``Tus-Resumable``,
    ``Authorization``) headers: the first was taken silently; which one the client meant is
    unknown, so it is a 400 that names the header, and nothing is kept."""
    data = (corpus / "photos" / "painting_rgb.png").read_bytes()
    t = ticket_for(cluster, len(data))
    body = data[:1000]
    digest = base64.b64encode(hashlib.sha1(body).digest()).decode()
    other = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    base = [("Authorization", f"Bearer {t.ticket}"), ("Tus-Resumable", "1.0.0"),
            ("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", "0")]
    for name, extra in (("Upload-Offset", [("Upload-Offset", "5")]),
                        ("Upload-Length", [("Upload-Length", str(len(data))), ("Upload-Length", "7")]),
                        ("Upload-Checksum", [("Upload-Checksum", f"sha1 {digest}"),
                                             ("Upload-Checksum", f"sha1 {other}")]),
                        ("Tus-Resumable", [("Tus-Resumable", "1.0.0")]),
                        ("Authorization", [("Authorization", "Bearer someone-else")])):
        status, said = raw_request(t.upload_url, "PATCH", [*base, *extra], body)
        assert status == 400, (name, status, said)
        assert said["error"] == {"code": "bad-request", "message": f"{name} was sent more than once: send it once"}
    status, said = raw_request(t.upload_url, "HEAD", [*base[:2], ("Authorization", f"Bearer {t.ticket}")])
    assert status == 400, status  # HEAD has no body to name it in, but is refused alike
    creation = t.upload_url.rsplit("/", 1)[0] + "/"
    status, said = raw_request(creation, "POST", [*base[:2], ("Upload-Length", str(len(data))), ("Upload-Length", "1")])
    assert (status, said["error"]["message"]) == (400, "Upload-Length was sent more than once: send it once")
    assert requests.head(t.upload_url, headers=auth(t), timeout=10).headers["Upload-Offset"] == "0"
    status, _ = raw_request(t.upload_url, "PATCH", base, body)  # each header once: taken
    assert status == 204



def test_a_malformed_upload_metadata_is_a_400_naming_the_key(cluster: ClusterHandle, corpus: Path) -> None:
    """``Upload-Metadata`` that breaks tus 1.0.0 (a value not base64, a key with a space, an empty key, a key
    sent twice) was taken at creation silently; it is a 400 that names the fault and the key, escaped and cut.
    What tuspy and tus-js-client send (an empty header, a key with an empty value) still creates."""
    data = (corpus / "photos" / "blackbug_alpha.png").read_bytes()
    t = ticket_for(cluster, len(data))
    base = t.upload_url.rsplit("/", 1)[0] + "/"
    create = {**auth(t), "Upload-Length": str(len(data))}
    name = base64.b64encode(b"p.png").decode()
    for metadata, says in [
            (f"filename {name},filetype not-base64!", "Upload-Metadata value of key 'filetype' is not base64"),
            (f"file name {name}", "Upload-Metadata pair of key 'file' has a second space"),
            (f"filename {name},,filetype {name}", "Upload-Metadata has an empty key"),
            (f"filename {name}, filename {name}", "Upload-Metadata key 'filename' is sent twice"),
            ("k\t" + "x" * 60 + " !", "Upload-Metadata value of key 'k\\t" + "x" * 38 + "'... is not base64")]:
        r = requests.post(base, headers={**create, "Upload-Metadata": metadata}, timeout=10)
        assert r.status_code == 400, (metadata, r.text)
        assert r.json()["error"]["code"] == "bad-request", (metadata, r.text)
        assert r.json()["error"]["message"].startswith(says), (metadata, r.text)
    # two headers are one comma-separated list (RFC 9110 5.3): a key in both is sent twice
    status, answer = raw_request(base, "POST", [*create.items(), ("Upload-Metadata", f"filename {name}"),
                                                ("Upload-Metadata", f"filename {name}")])
    assert status == 400 and "key 'filename' is sent twice" in answer["error"]["message"], answer
    for metadata in ("", f"filename {name},filetype ", "empty", f"filename {name.rstrip('=')}"):
        r = requests.post(base, headers={**create, "Upload-Metadata": metadata}, timeout=10)
        assert r.status_code == 201, (metadata, r.text)
    assert requests.head(t.upload_url, headers=auth(t), timeout=10).headers["Upload-Offset"] == "0"  # nothing sent
