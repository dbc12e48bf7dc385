"""A signed-in caller over a per-user limit is refused before the web node reads the upload's body.

On a private cluster where a user may have 2 unfinished uploads, start 5 uploads a minute and keep
25 MiB. Each refused request declares a 20 MiB body (32 MiB past the quota) and sends it slowly over a raw socket
(:func:`send_slowly`): the answer must come while most of it is still unsent. It used to come
only after the web node had received and spooled all 20 MiB.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import select
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
import requests
from PIL import Image

from pixelfox.cli.launcher import LocalCluster
from tests.conftest import wait_http
from tests.e2e.uploadkit import budget_held, create, fill_budget, new_user_key, own_cluster

pytestmark = pytest.mark.e2e

BODY = 20 * 1024 * 1024  # bytes each refused request declares (the quota test: more than the quota)
OPEN, PER_MINUTE, QUOTA = 2, 5, BODY + BODY // 4
PIECE = 128 * 1024


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_cluster(tmp_path_factory.mktemp("preflight"), upload=1, web=1,
                     PIXELFOX_LIMITS__USER_OPEN_UPLOADS=str(OPEN),
                     PIXELFOX_LIMITS__USER_UPLOADS_PER_MINUTE=str(PER_MINUTE),
                     PIXELFOX_LIMITS__USER_QUOTA_BYTES=str(QUOTA)) as c:
        wait_http(f"{c.web_urls[0]}/healthz")
        yield c


class Answer:
    """What :func:`send_slowly` got: status, headers (lower-case names), JSON body, body bytes sent of ``size``."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes, sent: int, size: int) -> None:
        self.status, self.headers, self.sent, self.size = status, headers, sent, size
        self.json = json.loads(body) if body.startswith(b"{") else {}


def send_slowly(url: str, headers: dict[str, str], field: str = "file", form: dict[str, str] | None = None,
                size: int = BODY) -> Answer:
    """POST a multipart form of ``size`` bytes (text ``form`` fields first, then a file of random
    bytes in ``field``) over a raw socket, a :data:`PIECE` every 10 ms, and stop sending as soon as
    an answer arrives."""
    boundary = "preflight" + os.urandom(8).hex()
    head = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in (form or {}).items())
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="big.png"\r\n'
             "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = head + os.urandom(size - len(head) - len(tail)) + tail
    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    request = (f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {size}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=60) as s:
        s.sendall(request)
        sent = 0
        while sent < size and not select.select([s], [], [], 0.01)[0]:
            s.sendall(body[sent:sent + PIECE])
            sent = min(size, sent + PIECE)
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += s.recv(65536)
        top, rest = raw.split(b"\r\n\r\n", 1)
        status, *lines = top.decode("latin-1").split("\r\n")
        answer_headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
        while len(rest) < int(answer_headers.get("content-length", "0")):
            rest += s.recv(65536)
    return Answer(int(status.split()[1]), answer_headers, rest, sent, size)


def assert_refused_early(a: Answer, code: str, status: int = 429) -> None:
    assert a.status == status, (a.status, a.json)
    error = a.json["error"]
    assert error["code"] == code, a.json
    assert a.sent < a.size // 2, f"answered after {a.sent} of {a.size} bytes: the body was read first"


def png() -> dict[str, tuple[str, bytes, str]]:
    """A ``files=`` form of a new 16x16 PNG (random colour: never a dedup of another)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), tuple(os.urandom(3))).save(buf, "PNG")
    return {"file": ("small.png", buf.getvalue(), "image/png")}


def hold_open_uploads(local: LocalCluster, key: str) -> None:
    """Take every open-upload slot of ``key``'s user with uploads that never send a byte."""
    for _ in range(OPEN):
        asyncio.run(create(local.manager_address.split(",")[0], key, 1000))


def test_open_uploads_refuse_an_api_key_upload_before_its_body(local: LocalCluster) -> None:
    key = asyncio.run(new_user_key(local, "holder"))
    hold_open_uploads(local, key)
    url = f"{local.web_urls[0]}/api/v1/images?wait=0"
    for header in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        a = send_slowly(url, header)
        assert_refused_early(a, "too-many-open-uploads")
        assert "DELETE /api/v1/uploads/<id>" in a.json["error"]["message"]  # the manager's words, as before
        assert 1 <= int(a.headers["retry-after"]) <= 930


def test_an_allowed_upload_counts_once_and_the_next_is_refused_before_its_body(local: LocalCluster) -> None:
    """At 4 of 5 uploads this minute an upload goes through and counts once (a check that counted too
    would have refused it); the 6th is refused before its body, and is not counted either."""
    key = asyncio.run(new_user_key(local, "counter"))
    web, bearer = local.web_urls[0], {"Authorization": f"Bearer {key}"}
    user_id = requests.get(f"{web}/api/v1/me", headers=bearer, timeout=10).json()["id"]
    rate = f"pixelfox:{{limits}}:rate:{user_id}"  # the user's GCRA budget (pixelfox.ratelimit)
    with redis.Redis.from_url(local.redis_url) as r:
        fill_budget(r, rate, PER_MINUTE - 1, PER_MINUTE)
        ok = requests.post(f"{web}/api/v1/images?wait=0", files=png(), headers=bearer, timeout=60)
        assert ok.status_code == 201, ok.text
        assert budget_held(r, rate) == PER_MINUTE
        a = send_slowly(f"{web}/api/v1/images?wait=0", bearer)
        assert_refused_early(a, "rate-limited")
        assert re.fullmatch(rf"more than {PER_MINUTE} uploads in a minute; wait \d+ s", a.json["error"]["message"])
        assert 1 <= int(a.headers["retry-after"]) <= 60 // PER_MINUTE
        assert budget_held(r, rate) == PER_MINUTE


def test_a_session_over_its_quota_is_refused_before_the_body_and_an_admin_is_not(local: LocalCluster) -> None:
    web = local.web_urls[0]
    with requests.Session() as browser:
        page = browser.get(f"{web}/register", timeout=10).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, page
        form = {"csrf_token": token.group(1), "name": "quotaholder", "password": "pw quota holder",
                "password2": "pw quota holder"}
        assert browser.post(f"{web}/register", data=form, allow_redirects=False, timeout=10).status_code == 303
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', browser.get(f"{web}/", timeout=10).text)
        assert csrf
        assert browser.get(f"{web}/api/v1/me", timeout=10).json()["name"] == "quotaholder"
        session = {"Cookie": f"pixelfox_session={browser.cookies['pixelfox_session']}", "X-CSRF-Token": csrf.group(1)}
        ok = browser.post(f"{web}/api/v1/images?wait=0", files=png(), headers={"X-CSRF-Token": csrf.group(1)},
                          timeout=60)
        assert ok.status_code == 201, ok.text  # a small file fits
    a = send_slowly(f"{web}/api/v1/images?wait=0", session, size=BODY * 8 // 5)
    assert_refused_early(a, "quota-exceeded", 413)  # not worth retrying: no 429
    assert re.fullmatch(rf"quota: \d+ of {QUOTA} bytes used; this upload's body of {BODY * 8 // 5} bytes would pass "
                        r"it \(.*\)", a.json["error"]["message"])
    admin = send_slowly(f"{web}/api/v1/images?wait=0", {"Authorization": f"Bearer {asyncio.run(local.ensure_admin())}"},
                        size=BODY * 8 // 5)
    assert admin.sent == admin.size and admin.status == 415, (admin.status, admin.json)  # no quota: read, not an image


def test_chevereto_key_in_the_query_is_refused_before_the_body_in_chevereto_shape(local: LocalCluster) -> None:
    key = asyncio.run(new_user_key(local, "chevholder"))
    hold_open_uploads(local, key)
    web = local.web_urls[0]
    a = send_slowly(f"{web}/api/1/upload?key={key}", {}, field="source")
    assert_refused_early(a, "too-many-open-uploads")
    assert a.json["status_code"] == 429 and a.json["status_txt"] == "Too Many Requests", a.json
    assert 1 <= int(a.headers["retry-after"]) <= 930
    late = send_slowly(f"{web}/api/1/upload", {}, field="source", form={"key": key})
    assert late.status == 429 and late.sent == late.size  # a key in the body is known once the body is read

    other = asyncio.run(new_user_key(local, "chevuser"))
    for params, headers in (({"key": other}, {}), ({}, {"X-API-Key": other})):
        ok = requests.post(f"{web}/api/1/upload", params=params, headers=headers,
                           files={"source": png()["file"]}, timeout=60)
        assert ok.status_code == 200 and ok.json()["status_txt"] == "OK", ok.text
