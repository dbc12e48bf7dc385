"""Download and the direct link against the shared running cluster: ``/i/<id>/download`` ends in an
attachment named as uploaded (RFC 6266 ``filename`` and ``filename*``), signed with the name;
``/i/<id>/original`` is the lasting direct link of an image whose owner keeps metadata."""

from __future__ import annotations

import io
import os
import re
import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import pytest
import requests
from PIL import Image

from pixelfox import signing

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


BOUNDARY = "pixelfox-download-test"


def small_jpeg() -> bytes:
    """A 48x32 JPEG with random pixels (a new image each call)."""
    buf = io.BytesIO()
    Image.frombytes("RGB", (48, 32), os.urandom(48 * 32 * 3)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def upload(cluster: Any, name: str, data: bytes | None = None) -> dict[str, Any]:
    """Upload as the admin (API key) and wait until ready; the API's image JSON."""
    hdr = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')  # escaped as curl sends it, UTF-8 as is
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + (data or small_jpeg()) + f"\r\n--{BOUNDARY}--\r\n".encode()
    r = requests.post(f"{cluster.web_url}/api/v1/images", data=body, timeout=120,
                      headers={**hdr, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert r.status_code == 201, r.text
    image = r.json()
    for _ in range(180):
        if image["status"] != "processing":
            break
        time.sleep(0.5)
        image = requests.get(f"{cluster.web_url}/api/v1/images/{image['id']}", headers=hdr, timeout=30).json()
    assert image["status"] == "ready", image
    return image


def follow_download(cluster: Any, slug: str) -> tuple[str, requests.Response]:
    """The Location ``/i/<slug>/download`` redirects to, and the storage node's answer to it."""
    r = requests.get(f"{cluster.web_url}/i/{slug}/download", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["Cache-Control"] == "private, no-store", r.text
    target = r.headers["Location"]
    return target, requests.get(target, timeout=30)


NAMES = [  # (uploaded as, filename="...", filename*=UTF-8''...)
    ("holiday.jpg", "holiday.jpg", "holiday.jpg"),
    ("Été à Zürich 日本.jpg", "_t_ _ Z_rich __.jpg", quote("Été à Zürich 日本.jpg")),
    ('say "cheese".jpg', "say cheese.jpg", "say%20cheese.jpg"),
    ("../../etc/x.jpg", "x.jpg", "x.jpg"),
    ("no extension", "no extension.jpg", "no%20extension.jpg"),
    ("photo.avif.JPEG", "photo.avif.JPEG", "photo.avif.JPEG"),
    ("a;b,c=d%41'e.jpg", "a;b,c=d%41'e.jpg", "a%3Bb%2Cc%3Dd%2541%27e.jpg"),
    ("L" * 300 + ".jpg", "L" * 251 + ".jpg", "L" * 251 + ".jpg"),
]


@pytest.mark.parametrize(("uploaded", "plain", "encoded"), NAMES, ids=range(len(NAMES)))
def test_download_is_an_attachment_named_as_uploaded(cluster: Any, uploaded: str, plain: str, encoded: str) -> None:
    image = upload(cluster, uploaded)
    _, got = follow_download(cluster, image["id"])
    served = requests.get(f"{cluster.web_url}/i/{image['id']}/original", timeout=30)
    assert served.status_code == got.status_code == 200 and got.content == served.content
    assert got.content[:2] == b"\xff\xd8" and "Content-Disposition" not in served.headers
    assert got.headers["Content-Disposition"] == f"attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}"
    assert got.headers["Cache-Control"] == "private, no-store"  # a signed, expiring answer: never cached
    assert re.fullmatch(r"[\x20-\x7e]+", got.headers["Content-Disposition"])  # one ASCII header line


def test_the_download_name_is_signed(cluster: Any) -> None:
    image = upload(cluster, "signed.jpg")
    target, got = follow_download(cluster, image["id"])
    assert got.status_code == 200
    base, _, query = target.partition("?")
    q = dict(parse_qsl(query))
    assert q["download"] == "signed.jpg" and set(q) == {"exp", "download", "sig"}
    for forged in ({**q, "download": "invoice.exe"}, {"exp": q["exp"], "download": "x.jpg"},
                   {"download": "signed.jpg"}):
        r = requests.get(f"{base}?{urlencode(forged)}", timeout=30)
        assert r.status_code == 403 and "Content-Disposition" not in r.headers, (forged, r.text)
    plain = requests.get(f"{base}?{urlencode({'exp': q['exp'], 'sig': q['sig']})}", timeout=30)
    assert plain.status_code == 200 and "Content-Disposition" not in plain.headers  # the public file, inline
    # a name that is not plain is refused even when signed (a header split, a path, a quote)
    key = signing.keys_from(cluster.secret)[0]
    for bad in ("a\r\nSet-Cookie: x=1", "../x.jpg", 'a".jpg', " x.jpg", "L" * 300, "a\u202egpj.exe"):
        url = signing.download_url(target, bad, key, int(q["exp"]))
        r = requests.get(url, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad-request", (bad, r.text)
        assert "Content-Disposition" not in r.headers and "Set-Cookie" not in r.headers


def test_kept_metadata_direct_link_lasts(cluster: Any) -> None:
    """The page's direct link of an image served with its EXIF is ``/i/<id>/original``, which
    redirects to a freshly signed URL of the stored original (no attachment); Download names it."""
    data = small_jpeg()
    image = upload(cluster, "kept.jpg", data)
    hdr = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    r = requests.patch(f"{cluster.web_url}/api/v1/images/{image['id']}", json={"keep_metadata": True},
                       headers=hdr, timeout=60)
    assert r.status_code == 200 and r.json()["keep_metadata"] is True, r.text
    page_url = f"{cluster.web_url}/i/{image['id']}"
    stored = r.json()["original_url"]
    assert "sig=" in stored  # the stored original's own URL expires
    page = requests.get(page_url, timeout=30).text
    assert f'value="{page_url}/original"' in page and stored.split("?")[0] not in page, page
    r = requests.get(f"{page_url}/original", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["Location"].split("?")[0] == stored.split("?")[0]
    got = requests.get(r.headers["Location"], timeout=30)
    assert got.status_code == 200 and got.content == data and "Content-Disposition" not in got.headers
    _, got = follow_download(cluster, image["id"])  # the stored original, as uploaded
    assert got.content == data
    assert got.headers["Content-Disposition"] == "attachment; filename=\"kept.jpg\"; filename*=UTF-8''kept.jpg"
    # a private image keeps its signed link: the lasting one would answer only its owner
    r = requests.patch(f"{cluster.web_url}/api/v1/images/{image['id']}", json={"visibility": "private"},
                       headers=hdr, timeout=60)
    assert r.status_code == 200, r.text
    page = requests.get(page_url, headers=hdr, timeout=30).text
    assert f"{page_url}/original" not in page
    assert requests.get(f"{page_url}/original", allow_redirects=False, timeout=30).status_code == 404
