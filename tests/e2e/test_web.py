"""The web frontend against a running cluster over real HTTP.

Uses the session-scoped ``cluster`` fixture from ``tests/conftest.py`` (``web_url``,
``manager_address``, ``secret``, ``redis_url``, ``admin_api_key``, ``start_web(name)``,
``restart_web(url)``). Cookies are handled by hand so one session cookie can be carried
from one web instance to another, as a round-robin balancer would.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
PHOTO = CORPUS / "photos" / "samsung_j3_orient6.jpg"
COOKIE = "pixelfox_session"
PASSWORD = "e2e password 123"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


class Browser:
    """An HTTP client with one session cookie that can be pointed at any web instance."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.cookie = ""

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.cookie:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        return headers

    def _keep(self, resp: aiohttp.ClientResponse) -> None:
        if COOKIE in resp.cookies:
            self.cookie = resp.cookies[COOKIE].value

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
        async with self.http.get(
            self.base + path, headers=self._headers(headers), allow_redirects=False
        ) as r:
            self._keep(r)
            return r.status, await r.text(), r.headers

    async def post(self, path: str, data: Any, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
        async with self.http.post(
            self.base + path, data=data, headers=self._headers(headers), allow_redirects=False
        ) as r:
            self._keep(r)
            return r.status, await r.text(), r.headers

    async def csrf(self, path: str = "/login") -> str:
        status, html, _ = await self.get(path)
        assert status == 200, html
        m = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert m, html
        return m.group(1)

    async def register(self, name: str) -> None:
        token = await self.csrf("/register")
        form = {"csrf_token": token, "name": name, "password": PASSWORD, "password2": PASSWORD}
        status, body, _ = await self.post("/register", form)
        assert status == 303, body

    async def login(self, name: str) -> None:
        token = await self.csrf("/login")
        status, body, _ = await self.post("/login", {"csrf_token": token, "name": name, "password": PASSWORD})
        assert status == 303, body

    async def me(self) -> int:
        status, _, _ = await self.get("/api/v1/me")
        return status


def _user() -> str:
    return f"e2e_{uuid.uuid4().hex[:12]}"


def _upload_form() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", PHOTO.read_bytes(), filename=PHOTO.name, content_type="image/jpeg")
    return form


async def _until_ready(b: Browser, image: dict[str, Any], timeout_s: float = 90.0) -> dict[str, Any]:
    """The server waits ``upload_wait_s`` (30 s); a loaded machine may need longer: poll the API."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while image["status"] == "processing" and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.5)
        status, body, _ = await b.get(f"/api/v1/images/{image['id']}")
        assert status == 200, body
        image = json.loads(body)
    assert image["status"] == "ready", image
    return image


def _magic_ok(fmt: str, data: bytes) -> bool:
    if fmt == "avif":
        return data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis")
    if fmt == "webp":
        return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    if fmt in ("jpeg", "jpg"):
        return data[:3] == b"\xff\xd8\xff"
    return False


async def test_register_login_upload_and_view(cluster: Any, http: aiohttp.ClientSession) -> None:
    b = Browser(http, cluster.web_url)
    name = _user()
    await b.register(name)
    assert await b.me() == 200
    # logged in, /register says so instead of a form that would switch to a new account
    status, page, _ = await b.get("/register")
    assert status == 200 and 'id="logged-in"' in page and 'action="/register"' not in page, page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, page
    other = _user()
    status, page, _ = await b.post("/register", {"csrf_token": token.group(1), "name": other,
                                                 "password": PASSWORD, "password2": PASSWORD})
    assert status == 400 and "You are logged in: log out first to create another account." in page, page[-800:]
    r = cluster.pixelfox("users", "list", "--json")
    assert r.returncode == 0 and other not in r.stdout and name in r.stdout, (r.stdout[-500:], r.stderr)
    # log out and back in through the login form
    token = await b.csrf("/")
    status, _, _ = await b.post("/logout", {"csrf_token": token})
    assert status == 303
    assert await b.me() == 401
    await b.login(name)
    assert await b.me() == 200

    status, html, _ = await b.get("/")
    m = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert m, html
    status, body, _ = await b.post("/api/v1/images", _upload_form(), {"X-CSRF-Token": m.group(1)})
    assert status == 201, body
    image = json.loads(body)
    assert image["status"] in ("ready", "processing"), image
    image = await _until_ready(b, image)
    assert image["variants"] and image["deletion_url"].startswith(f"{cluster.web_url}/api/v1/delete/")  # issue 4
    formats = {v["format"] for v in image["variants"]}
    assert {"avif", "webp"} <= formats, formats

    status, page, headers = await b.get(f"/i/{image['id']}")
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert 'type="image/avif"' in page and 'type="image/webp"' in page
    for v in image["variants"]:
        if v["format"] in ("avif", "webp"):
            assert v["url"] in page, v
    for tag in (
        "og:title",
        "og:url",
        "og:image",
        "og:image:width",
        "og:image:height",
        "og:image:type",
        "og:site_name",
    ):
        assert f'property="{tag}"' in page, tag
    assert '<meta property="og:type" content="website">' in page
    assert '<meta name="twitter:card" content="summary_large_image">' in page
    og = re.search(r'<meta property="og:image" content="([^"]+)"', page)
    assert og and og.group(1) != image["original_url"]

    for fmt in ("avif", "webp"):
        variant = next(v for v in image["variants"] if v["format"] == fmt)
        async with http.get(variant["url"]) as r:
            assert r.status == 200, variant["url"]
            assert _magic_ok(fmt, await r.read()), variant["url"]

    status, body, _ = await b.get(f"/api/v1/images/{image['id']}")
    assert status == 200 and image["id"] in body


async def test_api_key_upload(cluster: Any, http: aiohttp.ClientSession) -> None:
    async with http.post(
        cluster.web_url.rstrip("/") + "/api/v1/images",
        data=_upload_form(),
        headers={"Authorization": f"Bearer {cluster.admin_api_key}"},
    ) as r:
        body = await r.json()
        assert r.status == 201, body
    body = await _until_ready(Browser(http, cluster.web_url), body)
    assert body["variants"]
    async with http.post(
        cluster.web_url.rstrip("/") + "/api/v1/images",
        data=_upload_form(),
        headers={"X-API-Key": "not-a-key"},
    ) as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] in ("unauthenticated", "invalid-credentials")


async def test_logout_kills_session(cluster: Any, http: aiohttp.ClientSession) -> None:
    b = Browser(http, cluster.web_url)
    await b.register(_user())
    stolen = b.cookie
    token = await b.csrf("/")
    status, _, _ = await b.post("/logout", {"csrf_token": token})
    assert status == 303
    b.cookie = stolen  # replaying the old cookie after logout must not work
    assert await b.me() == 401


async def test_csrf_required_on_forms(cluster: Any, http: aiohttp.ClientSession) -> None:
    b = Browser(http, cluster.web_url)
    await b.register(_user())
    status, _, _ = await b.post("/logout", {})
    assert status == 403
    status, _, headers = await b.post("/logout", {"csrf_token": "forged"})
    assert (status, headers["Location"]) == (303, "/")  # taken for a stale page: nothing done, sent back
    assert await b.me() == 200  # no state change
    status, _, _ = await b.post("/login", {"name": "x", "password": "y"})
    assert status == 403
    status, body, _ = await b.post("/api/v1/images", _upload_form())  # session cookie, no header
    assert status == 403, body


async def test_a_form_whose_session_expired_leads_back_to_login(cluster: Any, http: aiohttp.ClientSession) -> None:
    """A form of ours posted with a stale token (its session expired, or was ended or replaced in
    another tab) does nothing and goes back to the page it was on with a notice, which sends the
    user to log in if it needs that, instead of a bare 403."""
    said = "The page had expired, so nothing was done. Please try again."
    name = _user()
    a = Browser(http, cluster.web_url)
    await a.register(name)
    page_token = await a.csrf("/settings")
    other_tab = Browser(http, cluster.web_url)
    other_tab.cookie = a.cookie
    status, _, _ = await other_tab.post("/logout", {"csrf_token": page_token})
    assert status == 303
    referer = {"Referer": f"{cluster.web_url}/settings"}
    status, _, headers = await a.post("/settings/keys", {"csrf_token": page_token, "label": "late"}, referer)
    assert (status, headers["Location"]) == (303, "/settings")
    status, _, headers = await a.get("/settings")  # logged out: the page sends them to log in
    assert (status, headers["Location"]) == (303, "/login?next=/settings")
    status, page, _ = await a.get(headers["Location"])
    assert status == 200 and said in page and 'name="next" value="/settings"' in page
    status, page, _ = await a.get("/login")
    assert said not in page  # shown once
    # logged in again in another tab: the old page's token is stale too (the session was replaced)
    await a.login(name)
    stale = await a.csrf("/settings")
    other_tab.cookie = a.cookie
    status, _, _ = await other_tab.post("/logout", {"csrf_token": stale})
    await a.login(name)
    status, _, headers = await a.post("/settings/keys", {"csrf_token": stale, "label": "late"}, referer)
    assert (status, headers["Location"]) == (303, "/settings")
    status, page, _ = await a.get("/settings")
    assert status == 200 and said in page and "<td>late<" not in page  # nothing was done
    # a Referer that would lead off the site is not followed
    for evil in ("http://evil.example/x", f"{cluster.web_url}//evil.example/x", f"{cluster.web_url}/\\evil"):
        status, _, headers = await a.post("/settings/keys", {"csrf_token": stale, "label": "late"},
                                          {"Referer": evil})
        assert (status, headers["Location"]) == (303, "/"), evil
    # the login form itself, kept open past its pre-login session: its `next` survives
    fresh = Browser(http, cluster.web_url)
    token = await fresh.csrf("/login?next=/my")
    fresh.cookie = ""  # the session is gone (expired in Redis)
    status, _, headers = await fresh.post("/login", {"csrf_token": token, "name": name, "password": PASSWORD,
                                                     "next": "/my"})
    assert (status, headers["Location"]) == (303, "/login?next=/my")


async def test_sharex_config_key_uploads(cluster: Any, http: aiohttp.ClientSession) -> None:
    b = Browser(http, cluster.web_url)
    await b.register(_user())
    token = await b.csrf("/my")
    status, body, headers = await b.post("/sharex", {"csrf_token": token})
    assert status == 200, body
    assert ".sxcu" in headers["Content-Disposition"]
    conf = json.loads(body)
    async with http.post(conf["RequestURL"], data=_upload_form(), headers=conf["Headers"]) as r:
        assert r.status == 201, await r.text()


async def test_session_shared_across_instances_and_restart(cluster: Any, http: aiohttp.ClientSession) -> None:
    """Kept last: restarting instance A may move it to a new URL."""
    url_a = cluster.web_url
    url_b = cluster.start_web("web-e2e-b")
    a = Browser(http, url_a)
    name = _user()
    await a.register(name)
    b = Browser(http, url_b)
    b.cookie = a.cookie
    status, body, _ = await b.get("/api/v1/me")
    assert status == 200 and name in body

    url_a2 = cluster.restart_web(url_a)
    a2 = Browser(http, url_a2)
    a2.cookie = a.cookie
    status, body, _ = await a2.get("/api/v1/me")
    assert status == 200 and name in body


def test_download_of_a_failed_image_says_it_failed(cluster: Any) -> None:
    """A PNG whose header passes the upload check but whose pixels are broken ends failed; its
    Download said "still processing" (404) for ever. It says the image could not be processed."""
    import os
    import struct
    import zlib

    import requests

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    broken = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0))
              + chunk(b"IDAT", os.urandom(2048)) + chunk(b"IEND", b""))
    hdr = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    r = requests.post(f"{cluster.web_url}/api/v1/images", headers=hdr, timeout=120,
                      files={"file": ("broken.png", broken, "image/png")})
    assert r.status_code == 201 and r.json()["status"] == "failed", r.text
    page = requests.get(f"{cluster.web_url}/i/{r.json()['id']}/download", headers=hdr, allow_redirects=False,
                        timeout=30)
    assert page.status_code == 404 and "could not be processed" in page.text and "still processing" not in page.text
