"""One-shot upload bodies on a web node (web/bodies.py): a body that stops arriving is dropped with
408 after ``body_idle_s``, and one caller gets at most ``bodies_per_caller`` bodies read at once.

A tester held 1,000 one-shot uploads open with a byte now and then: every request slot of the web
node stayed taken, and nothing ended them. Each case here holds real sockets to a real web node.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import requests
from PIL import Image

from pixelfox.cli.launcher import LocalCluster
from tests.conftest import wait_http
from tests.e2e.test_upload_expect import multipart, read_head
from tests.e2e.uploadkit import budget_held, forget_budget, new_user_key, own_cluster
from tests.jobtools import log_text

pytestmark = pytest.mark.e2e

IDLE_S, PER_CALLER = 2.0, 2


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_cluster(tmp_path_factory.mktemp("bodies"), upload=1, web=1, PIXELFOX_BODY_IDLE_S=str(IDLE_S),
                     PIXELFOX_BODIES_PER_CALLER=str(PER_CALLER)) as c:
        wait_http(f"{c.web_urls[0]}/healthz")
        yield c


@pytest.fixture(scope="module")
def keys(local: LocalCluster) -> tuple[str, str]:
    return asyncio.run(new_user_key(local, "bodyone")), asyncio.run(new_user_key(local, "bodytwo"))


def started(local: LocalCluster, path: str, key: str, sent: int = 1000, size: int = 400_000) -> socket.socket:
    """A POST of a ``size``-byte multipart body to ``path`` of which only the head and ``sent`` bytes
    of the file are sent; the socket stays open, sending nothing more."""
    u = urlsplit(local.web_urls[0])
    ctype, body = multipart("file" if path.startswith("/api/v1") else "source", b"", size)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    auth = f"X-API-Key: {key}\r\n" if key else ""  # none: an anonymous upload
    head = (f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\n{auth}Content-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    s.sendall(head + body[:sent])
    return s


def answer(s: socket.socket) -> tuple[int, dict[str, object], float]:
    """The status and JSON body the server answers on ``s`` with, and how long it took (s)."""
    t0 = time.monotonic()
    status, headers, rest = read_head(s, b"")
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        got = s.recv(65536)
        assert got, "connection closed mid-answer"
        rest += got
    return status, json.loads(rest[:n]), time.monotonic() - t0


def temp_uploads() -> set[str]:
    """The web node's temp files of bodies being received (it runs with this process' TMPDIR)."""
    return {p.name for p in Path(tempfile.gettempdir()).glob("pixelfox-web-*") if p.is_file()}


@pytest.mark.parametrize("path", ["/api/v1/images", "/api/1/upload"])
def test_a_body_that_stops_arriving_is_dropped_with_408(local: LocalCluster, keys: tuple[str, str],
                                                         path: str) -> None:
    before = temp_uploads()
    s = started(local, path, keys[0])
    try:
        deadline = time.monotonic() + IDLE_S / 2
        while not temp_uploads() - before:  # the file's first bytes went to a temp file
            assert time.monotonic() < deadline, "no temp file for the body"
            time.sleep(0.02)
        status, body, took = answer(s)
    finally:
        s.close()
    assert status == 408, body
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == "body-timeout", body
    assert f"for {IDLE_S:g} s" in str(error["message"]), body
    assert IDLE_S * 0.6 <= took <= IDLE_S + 5, took
    assert not temp_uploads() - before  # the part of the file that came is not left behind
    # the node is fine and the caller's slot is free again: a whole upload goes through
    ok = requests.get(f"{local.web_urls[0]}/readyz", timeout=10)
    assert ok.status_code == 200


def test_a_slow_body_that_keeps_sending_is_not_cut(local: LocalCluster, keys: tuple[str, str]) -> None:
    """A byte-trickle faster than the idle time is an upload over a slow link, not a stall: it
    takes twice ``body_idle_s`` in all and its image is created."""
    u = urlsplit(local.web_urls[0])
    png = io.BytesIO()
    Image.frombytes("RGB", (40, 30), os.urandom(40 * 30 * 3)).save(png, "PNG")
    ctype, body = multipart("file", png.getvalue())
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    try:
        s.sendall((f"POST /api/v1/images?wait=0 HTTP/1.1\r\nHost: {u.netloc}\r\nX-API-Key: {keys[1]}\r\n"
                   f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode())
        pieces = [body[i:i + len(body) // 8 + 1] for i in range(0, len(body), len(body) // 8 + 1)]
        t0 = time.monotonic()
        for piece in pieces:
            s.sendall(piece)
            time.sleep(IDLE_S * 2 / len(pieces))
        assert time.monotonic() - t0 >= IDLE_S * 1.5
        status, got, _ = answer(s)
    finally:
        s.close()
    assert status == 201 and (got["width"], got["height"]) == (40, 30), got


def test_one_body_too_many_from_one_caller_is_refused_before_it_is_read(local: LocalCluster,
                                                                         keys: tuple[str, str]) -> None:
    first, second = keys
    held = [started(local, "/api/v1/images", first, sent=100) for _ in range(PER_CALLER)]
    try:
        time.sleep(0.3)  # both are being read
        extra = started(local, "/api/v1/images", first, sent=0)
        try:
            status, body, took = answer(extra)
        finally:
            extra.close()
        assert status == 429 and body["error"]["code"] == "too-many-open-uploads", body
        assert f"at most {PER_CALLER} at once" in body["error"]["message"] and took < IDLE_S, (body, took)
        # another user is not held up by them; the Chevereto route counts the same caller
        other = requests.post(f"{local.web_urls[0]}/api/v1/images", headers={"X-API-Key": second},
                              files={"file": ("x.png", b"not a png", "image/png")}, timeout=30)
        assert other.status_code == 415 and other.json()["error"]["code"] == "unsupported-format", other.text
        chv = started(local, "/api/1/upload", first, sent=0)
        try:
            status, body, _ = answer(chv)
        finally:
            chv.close()
        assert status == 429, body
    finally:
        for s in held:
            s.close()
    # closed, then freed: the caller uploads again
    deadline = time.monotonic() + 10
    while True:
        again = requests.post(f"{local.web_urls[0]}/api/v1/images", headers={"X-API-Key": first},
                              files={"file": ("x.png", b"not a png", "image/png")}, timeout=30)
        if again.status_code != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again.status_code == 415, again.text


@pytest.mark.parametrize("path", ["/api/v1/images", "/api/1/upload"])
def test_a_body_in_a_broken_encoding_is_a_400_without_a_traceback(local: LocalCluster, keys: tuple[str, str],
                                                                    path: str) -> None:
    """``Content-Encoding: gzip`` on bytes that are no gzip: the client gets a 400 and the connection
    ends; the web node logged aiohttp's "Unhandled exception" traceback for it (its lingering read of
    the unread body raised the same error again after the answer)."""
    u = urlsplit(local.web_urls[0])
    ctype, body = multipart("file" if path.startswith("/api/v1") else "source", os.urandom(5000))
    logged = len(log_text(local, "web1"))
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    try:
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\nX-API-Key: {keys[0]}\r\nContent-Type: {ctype}\r\n"
                   f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        status, got, _ = answer(s)
        s.settimeout(10)
        assert s.recv(100) == b""  # closed: the rest of that body is no next request
    finally:
        s.close()
    assert status == 400 and "cannot be read (bad encoding or framing)" in str(got["error"]), got
    time.sleep(0.5)
    text = log_text(local, "web1")[logged:]
    assert "Traceback" not in text and "Unhandled exception" not in text, text[-2000:]


ANON_BUDGET = "pixelfox:{limits}:anon-ip:127.0.0.1"


def test_refusals_of_one_body_too_many_spend_no_upload_budget(local: LocalCluster) -> None:
    """The cap's 429 says "retry in 1 s": a client that obeys it spent the anonymous address' 20 uploads a
    minute on refusals, and was then refused for the minute (a tester's find). Only bodies taken in count."""
    with redis.Redis.from_url(local.redis_url) as r:
        forget_budget(r, ANON_BUDGET)
        held = [started(local, "/api/v1/images", "", sent=100) for _ in range(PER_CALLER)]
        try:
            time.sleep(0.3)
            for _ in range(5):
                extra = started(local, "/api/v1/images", "", sent=0)
                try:
                    status, body, _ = answer(extra)
                finally:
                    extra.close()
                assert status == 429 and body["error"]["code"] == "too-many-open-uploads", body
            assert 1 <= budget_held(r, ANON_BUDGET) <= PER_CALLER
        finally:
            for s in held:
                s.close()
            forget_budget(r, ANON_BUDGET)


@pytest.mark.parametrize(("path", "ctype"), [("/login", "application/x-www-form-urlencoded"),
                                             ("/register", "application/x-www-form-urlencoded"),
                                             ("/api/v1/uploads", "application/json")])
def test_every_other_body_that_stops_arriving_is_dropped_with_408(local: LocalCluster, keys: tuple[str, str],
                                                                  path: str, ctype: str) -> None:
    """Not only the uploads: a login form, a registration or a JSON call that declares 1,000 bytes and sends
    10 held its request slot for as long as the client liked (a tester's find)."""
    u = urlsplit(local.web_urls[0])
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    try:
        first = b'{"filename"' if ctype.endswith("json") else b"name=al&pa"
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\nX-API-Key: {keys[1]}\r\nContent-Type: {ctype}\r\n"
                   "Content-Length: 1000\r\n\r\n").encode() + first)
        t0 = time.monotonic()
        status, _, _ = read_head(s, b"")
        took = time.monotonic() - t0
    finally:
        s.close()
    assert status == 408 and IDLE_S * 0.6 <= took <= IDLE_S + 5, (status, took)
