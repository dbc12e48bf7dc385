"""``Expect: 100-continue`` on the one-shot uploads: a refusal the headers decide is the answer the client
waits for, instead of ``100 Continue``, and no byte of the body is sent.

curl sends ``Expect: 100-continue`` for a body over 1 MiB and waits (1 s) for the interim answer before
sending it. aiohttp used to answer ``100 Continue`` itself before the handler ran, so curl pushed
megabytes of a body that the handler then refused from its headers (429, 401, 413). On a private
cluster where a user may have 2 unfinished uploads and start 5 a minute, and one address 50 uploads a
minute; :func:`post_expecting` sends as curl does, over a raw socket.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import select
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import requests
from PIL import Image

from pixelfox.cli.launcher import LocalCluster
from tests.conftest import wait_http
from tests.e2e.uploadkit import budget_held, create, fill_budget, forget_budget, new_user_key, own_cluster

pytestmark = pytest.mark.e2e

OPEN, PER_MINUTE, PER_IP = 2, 5, 12  # PER_IP: one refills every 5 s, so a count read after an upload is still there
IP_KEY = "pixelfox:{limits}:ip:127.0.0.1"
BODY = 8 * 1024 * 1024  # bytes a refused request declares
PIECE = 128 * 1024


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_cluster(tmp_path_factory.mktemp("expect"), upload=1, web=1,
                     PIXELFOX_LIMITS__USER_OPEN_UPLOADS=str(OPEN),
                     PIXELFOX_LIMITS__USER_UPLOADS_PER_MINUTE=str(PER_MINUTE),
                     PIXELFOX_LIMITS__IP_UPLOADS_PER_MINUTE=str(PER_IP)) as c:
        wait_http(f"{c.web_urls[0]}/healthz")
        yield c


@pytest.fixture
def r(local: LocalCluster) -> Iterator[redis.Redis]:
    """Redis of the cluster, this address' upload budget unspent."""
    with redis.Redis.from_url(local.redis_url) as client:
        forget_budget(client, IP_KEY)
        yield client


class Answer:
    """What :func:`post_expecting` got: the interim statuses (``[100]`` when the server said go on), the
    final status, its headers (lower-case names) and body, and the bytes of the body sent."""

    def __init__(self, interim: list[int], status: int, headers: dict[str, str], body: bytes, sent: int) -> None:
        self.interim, self.status, self.headers, self.body, self.sent = interim, status, headers, body, sent
        self.json = json.loads(body) if body.startswith(b"{") else {}


def multipart(field: str, data: bytes, size: int | None = None) -> tuple[str, bytes]:
    """A multipart form with ``data`` as the file in ``field`` (padded with random bytes to ``size`` bytes
    of body when given): its Content-Type and body."""
    boundary = "expect" + os.urandom(8).hex()
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    if size is not None:
        data = os.urandom(size - len(head) - len(tail))
    return f"multipart/form-data; boundary={boundary}", head + data + tail


def read_head(s: socket.socket, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """One response head from ``s`` (``raw``: bytes already received): status, headers, the bytes after it."""
    while b"\r\n\r\n" not in raw:
        got = s.recv(65536)
        assert got, f"connection closed after {raw!r}"
        raw += got
    top, rest = raw.split(b"\r\n\r\n", 1)
    status, *lines = top.decode("latin-1").split("\r\n")
    return int(status.split()[1]), {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}, rest


def post_expecting(url: str, headers: dict[str, str], content_type: str, body: bytes,
                   expect: str = "100-continue") -> Answer:
    """POST ``body`` as curl does: the headers with ``Expect``, then wait for the first answer (up to 5 s;
    curl waits 1 s, then sends anyway); after ``100 Continue`` the body goes, a :data:`PIECE` at a time,
    stopping as soon as a final answer arrives; after a final answer nothing is sent."""
    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    request = (f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
               f"Content-Length: {len(body)}\r\nExpect: {expect}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    interim: list[int] = []
    sent = 0
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=60) as s:
        s.sendall(request)
        assert select.select([s], [], [], 5)[0], "no answer to the headers in 5 s"
        status, answer_headers, rest = read_head(s, b"")
        if status == 100:
            interim.append(status)
            while sent < len(body) and not rest and not select.select([s], [], [], 0)[0]:
                s.sendall(body[sent:sent + PIECE])
                sent = min(len(body), sent + PIECE)
            status, answer_headers, rest = read_head(s, rest)
        while len(rest) < int(answer_headers.get("content-length", "0")):
            rest += s.recv(65536)
    return Answer(interim, status, answer_headers, rest, sent)


def png() -> bytes:
    """A new 16x16 PNG (random colour: never a dedup of another)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), tuple(os.urandom(3))).save(buf, "PNG")
    return buf.getvalue()


def hold_open_uploads(local: LocalCluster, key: str) -> None:
    """Take every open-upload slot of ``key``'s user with uploads that never send a byte."""
    for _ in range(OPEN):
        asyncio.run(create(local.manager_address.split(",")[0], key, 1000))


def assert_refused_before_the_body(a: Answer, status: int) -> None:
    assert (a.interim, a.status) == ([], status), (a.interim, a.status, a.body[:300])
    assert a.sent == 0


def test_a_user_over_a_limit_gets_the_429_instead_of_100_and_sends_no_body(local: LocalCluster,
                                                                           r: redis.Redis) -> None:
    key = asyncio.run(new_user_key(local, "expectholder"))
    hold_open_uploads(local, key)
    for header in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        a = post_expecting(f"{local.web_urls[0]}/api/v1/images?wait=0", header, *multipart("file", b"", BODY))
        assert_refused_before_the_body(a, 429)
        assert a.json["error"]["code"] == "too-many-open-uploads", a.json  # the handler's own error shape
        assert 1 <= int(a.headers["retry-after"]) <= 930
        assert a.headers["x-content-type-options"] == "nosniff"  # through the middlewares, as every answer
    assert budget_held(r, IP_KEY) == 0  # a user's own 429 does not use up the address' budget


def test_an_allowed_upload_gets_100_and_counts_once_and_the_next_gets_the_429(local: LocalCluster,
                                                                             r: redis.Redis) -> None:
    """At 4 of 5 uploads this minute, an upload sent with Expect gets ``100 Continue``, sends its body and
    is stored, counted once: one rate token, one upload on the address' budget. The 6th upload gets the
    429 instead of ``100 Continue``."""
    key = asyncio.run(new_user_key(local, "expectcounter"))
    web, header = local.web_urls[0], {"X-API-Key": key}
    user_id = requests.get(f"{web}/api/v1/me", headers=header, timeout=10).json()["id"]
    rate = f"pixelfox:{{limits}}:rate:{user_id}"  # the user's GCRA budget (pixelfox.ratelimit)
    fill_budget(r, rate, PER_MINUTE - 1, PER_MINUTE)
    ctype, body = multipart("file", png())
    ok = post_expecting(f"{web}/api/v1/images?wait=0", header, ctype, body)
    assert (ok.interim, ok.status, ok.sent) == ([100], 201, len(body)), (ok.interim, ok.status, ok.body[:300])
    assert ok.json["deduplicated"] is False and ok.json["url"], ok.json
    assert budget_held(r, rate) == PER_MINUTE
    assert budget_held(r, IP_KEY) == 1
    a = post_expecting(f"{web}/api/v1/images?wait=0", header, *multipart("file", b"", BODY))
    assert_refused_before_the_body(a, 429)
    assert re.fullmatch(rf"more than {PER_MINUTE} uploads in a minute; wait \d+ s", a.json["error"]["message"])
    assert 1 <= int(a.headers["retry-after"]) <= 60 // PER_MINUTE
    assert budget_held(r, rate) == PER_MINUTE
    assert budget_held(r, IP_KEY) == 1


def test_chevereto_answers_its_own_429_instead_of_100(local: LocalCluster, r: redis.Redis) -> None:
    key = asyncio.run(new_user_key(local, "expectchev"))
    hold_open_uploads(local, key)
    web = local.web_urls[0]
    for url, header in ((f"{web}/api/1/upload?key={key}", {}), (f"{web}/api/1/upload", {"X-API-Key": key})):
        a = post_expecting(url, header, *multipart("source", b"", BODY))
        assert_refused_before_the_body(a, 429)
        assert a.json["status_code"] == 429 and a.json["status_txt"] == "Too Many Requests", a.json
        assert a.json["error"]["code"] == "too-many-open-uploads", a.json
        assert 1 <= int(a.headers["retry-after"]) <= 930
    other = asyncio.run(new_user_key(local, "expectchevok"))
    ctype, body = multipart("source", png())
    ok = post_expecting(f"{web}/api/1/upload", {"X-API-Key": other}, ctype, body)
    assert (ok.interim, ok.status, ok.sent) == ([100], 200, len(body)), (ok.interim, ok.status, ok.body[:300])
    assert ok.json["status_txt"] == "OK", ok.json
    assert budget_held(r, IP_KEY) == 1  # the refused key's two 429s given back, the upload counted once


def test_bad_credentials_and_a_too_large_body_are_refused_instead_of_100(local: LocalCluster,
                                                                          r: redis.Redis) -> None:
    """401 (a scheme that is no API key, a key nobody has) and 413 (a Content-Length over the upload
    limit) instead of ``100 Continue``, in the API's error shape; an expectation other than
    100-continue stays aiohttp's 417."""
    url = f"{local.web_urls[0]}/api/v1/images?wait=0"
    for header in ({"Authorization": "Token abc"}, {"X-API-Key": "made-up"}):
        a = post_expecting(url, header, *multipart("file", b"", BODY))
        assert_refused_before_the_body(a, 401)
        assert a.json["error"]["code"] == "unauthenticated", a.json
    key = asyncio.run(new_user_key(local, "expectlarge"))
    ctype = "multipart/form-data; boundary=x"
    # the default limit is 100 MiB; no byte of these bodies is ever made or sent. Chevereto takes base64
    # too (4/3 of the file): 160 MiB could still be a file under the limit, 200 MiB cannot; it found that
    # out only after the whole body was read, and a user near their quota heard of the quota instead
    for target, too_large in ((url, 150 * 1024 * 1024), (f"{local.web_urls[0]}/api/1/upload", 200 * 1024 * 1024)):
        parts = urlsplit(target)
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=60) as s:
            path = f"{parts.path}?{parts.query}" if parts.query else parts.path
            s.sendall((f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {ctype}\r\n"
                       f"Content-Length: {too_large}\r\nExpect: 100-continue\r\nX-API-Key: {key}\r\n\r\n"
                       ).encode())
            assert select.select([s], [], [], 5)[0], "no answer to the headers in 5 s"
            status, headers, rest = read_head(s, b"")
            while len(rest) < int(headers.get("content-length", "0")):
                rest += s.recv(65536)
        assert status == 413, (target, status, rest[:300])
        said = json.loads(rest)
        assert (said["error"]["code"], said.get("status_code", 413)) == ("payload-too-large", 413), said

    odd = post_expecting(url, {"X-API-Key": key}, *multipart("file", png()), expect="something-else")
    assert_refused_before_the_body(odd, 417)  # as aiohttp's own expect handler answers it
    assert odd.body.startswith(b"Unknown Expect: something-else"), odd.body


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_sends_no_byte_of_a_refused_upload(local: LocalCluster, tmp_path: Path) -> None:
    """Real curl with a 5 MB file (it sends ``Expect: 100-continue`` for a body over 1 MiB) from a user
    over a limit: the 429, and curl's upload size is 0."""
    key = asyncio.run(new_user_key(local, "expectcurl"))
    hold_open_uploads(local, key)
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(5 * 1000 * 1000))
    for url in (f"{local.web_urls[0]}/api/v1/images?wait=0", f"{local.web_urls[0]}/api/1/upload"):
        field = "source" if "/api/1/" in url else "file"
        out = subprocess.run(["curl", "-sS", "-o", str(tmp_path / "answer"), "-w", "%{http_code} %{size_upload}",
                              "-H", f"X-API-Key: {key}", "-F", f"{field}=@{big}", url],
                             capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout == "429 0", (out.stdout, out.stderr, (tmp_path / "answer").read_bytes()[:300])
        assert "too-many-open-uploads" in (tmp_path / "answer").read_text()
