"""Locust mix against the PixelFox web tier (run headless, bounded, loopback only).

Driven by ``bench/capacity.py``, or by hand::

    PIXELFOX_BENCH_SLUGS=a,b PIXELFOX_BENCH_API_KEY=pfx_... PIXELFOX_BENCH_USERS=u1:pw1 \\
      .venv/bin/locust -f bench/locustfile.py --headless -u 50 -r 10 --run-time 60s \\
      --host http://127.0.0.1:8080

Users (weights): readers (6) open image pages and fetch a variant from the storage origin;
browsers (3) log in once and look at their gallery, the upload page and image pages;
uploaders (1) post real photos through ``POST /api/v1/images?wait=0`` with an API key.
Request names group URLs: ``page /i/[slug]`` (anonymous readers: nginx may answer from its page
cache), ``page /i/[slug] signed in`` (never cached), ``variant``, ``page /my``, ``login``, ``upload``.
Users are locust's ``FastHttpUser`` (geventhttpclient): several times less CPU per request than
``HttpUser`` (requests), which matters when the load generator shares the 2 cores it measures.
Settings come from the environment: ``PIXELFOX_BENCH_SLUGS`` (comma list of ready images),
``PIXELFOX_BENCH_API_KEY``, ``PIXELFOX_BENCH_USERS`` (``name:password`` comma list),
``PIXELFOX_BENCH_PHOTOS`` (a folder of photos to upload), ``PIXELFOX_BENCH_UPLOAD_WAIT`` (s
between uploads per uploader, default 5).
"""

from __future__ import annotations

import itertools
import os
import random
import re
from pathlib import Path

from locust import between, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

SLUGS = [s for s in os.environ.get("PIXELFOX_BENCH_SLUGS", "").split(",") if s]
API_KEY = os.environ.get("PIXELFOX_BENCH_API_KEY", "")
ACCOUNTS = [tuple(a.split(":", 1)) for a in os.environ.get("PIXELFOX_BENCH_USERS", "").split(",") if ":" in a]
PHOTOS = sorted(p for p in Path(os.environ.get("PIXELFOX_BENCH_PHOTOS", "/nonexistent")).glob("*") if p.is_file())
UPLOAD_WAIT = float(os.environ.get("PIXELFOX_BENCH_UPLOAD_WAIT", "5"))
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_accounts = itertools.cycle(ACCOUNTS or [("", "")])
_variants: dict[str, list[str]] = {}


def _variant_urls(user: FastHttpUser, slug: str) -> list[str]:
    if slug not in _variants:
        with user.client.get(f"/api/v1/images/{slug}", name="api /api/v1/images/[slug]", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
                return []
            _variants[slug] = [v["url"] for v in r.json().get("variants", []) if v.get("url")]
    return _variants[slug]


class Client(FastHttpUser):
    """One simulated client address per user (``X-Bench-Client``; bench/capacity.py's nginx forwards
    it as ``X-Forwarded-For``), so per-address limits see 1,000 users as 1,000 clients."""

    abstract = True

    def __init__(self, environment: Environment) -> None:
        address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        self.default_headers = {"X-Bench-Client": address}  # read by FastHttpUser.__init__
        super().__init__(environment)


class Reader(Client):
    """Someone following a share link: the page, then one picture."""

    weight = 6
    wait_time = between(1, 3)

    @task
    def view(self) -> None:
        if not SLUGS:
            return
        slug = random.choice(SLUGS)
        self.client.get(f"/i/{slug}", name="page /i/[slug]")
        urls = _variant_urls(self, slug)
        if urls:
            self.client.get(random.choice(urls), name="variant")


class Browser(Client):
    """A signed-in user: logs in once, then browses the gallery and pages."""

    weight = 3
    wait_time = between(2, 5)

    def on_start(self) -> None:
        name, password = next(_accounts)
        if not name:
            return
        page = self.client.get("/login", name="page /login")
        m = CSRF.search(page.text)
        self.client.post("/login", data={"name": name, "password": password, "csrf_token": m.group(1) if m else ""},
                         name="login", allow_redirects=False)

    @task(3)
    def gallery(self) -> None:
        self.client.get("/my", name="page /my")

    @task(2)
    def image(self) -> None:
        if SLUGS:
            self.client.get(f"/i/{random.choice(SLUGS)}", name="page /i/[slug] signed in")

    @task(1)
    def home(self) -> None:
        self.client.get("/", name="page /")


class Uploader(Client):
    """A tool posting real photos through the API with an API key."""

    weight = 1

    def wait_time(self) -> float:
        return UPLOAD_WAIT

    @task
    def upload(self) -> None:
        if not PHOTOS or not API_KEY:
            return
        photo = random.choice(PHOTOS)
        data = photo.read_bytes()
        tag = os.urandom(8).hex().encode()  # a JPEG comment makes every upload new bytes (no dedup)
        data = data[:2] + b"\xff\xfe" + (len(tag) + 2).to_bytes(2, "big") + tag + data[2:]
        body, content_type = _multipart("file", photo.name, data, "image/jpeg")
        self.client.post("/api/v1/images?wait=0", data=body, name="upload",
                         headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": content_type})


def _multipart(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    """One-file multipart/form-data body and its Content-Type (FastHttpUser has no ``files=``)."""
    boundary = os.urandom(12).hex()
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
