"""The web app against a fake manager and upload node (gRPC, in-process) and a real redis-server.

Covers what the e2e suite covers with the real cluster, but runs without one: sessions
(fixation, logout, cookie attributes), CSRF on forms and on the JSON API, uploads with
sessions / API keys / anonymous, the image page's <picture> and OG tags, errors as JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from pixelfox.grpcx.auth import read_caller
from pixelfox.ratelimit import forget, held, state_key
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc, upload_pb2, upload_pb2_grpc
from web.app import create_app
from web.config import WebSettings

SECRET = "test-secret"
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
PHOTO = CORPUS / "photos" / "samsung_j3_orient6.jpg"
FORMATS = ("avif", "webp", "jpeg")
SIZES = (("thumb", 160), ("medium", 800), ("large", 1600))

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    # aiohttp-session 2.12 stores its state under str request keys
    pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning"),
]


class FakeCluster(manager_pb2_grpc.ManagerServiceServicer, upload_pb2_grpc.UploadServiceServicer):
    """Just enough of the manager and an upload node for the web node."""

    def __init__(self) -> None:
        self.users: dict[str, tuple[manager_pb2.User, str]] = {}
        self.keys = {"key-alice": "alice"}
        self.images: dict[str, common_pb2.Image] = {}
        self.polls: dict[str, int] = {}
        self.upload_address = ""
        self.acting: list[str] = []
        self.checks: list[int] = []  # CheckUpload sizes asked
        self.check_refuses: grpc.StatusCode | None = None  # CheckUpload's answer instead of OK

    def _caller(self, context: grpc.aio.ServicerContext) -> Any:
        caller = read_caller(context.invocation_metadata(), SECRET)
        self.acting.append(caller.acting_user)
        return caller

    async def CreateUser(self, request: Any, context: Any) -> manager_pb2.User:
        self._caller(context)
        if request.name in self.users:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "user exists")
        user = manager_pb2.User(id=f"u-{request.name}", name=request.name, role="user", created_at="now")
        self.users[request.name] = (user, request.password)
        return user

    async def VerifyPassword(self, request: Any, context: Any) -> manager_pb2.User:
        if request.name == "slowpoke":  # as a manager past the web node's deadline
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        got = self.users.get(request.name)
        if got is None or got[1] != request.password:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid user name or password")
        return got[0]  # type: ignore[index]

    async def WhoAmI(self, request: Any, context: Any) -> manager_pb2.User:
        name = self.keys.get(self._caller(context).api_key, "")
        if not name:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad api key")
        return manager_pb2.User(id=f"u-{name}", name=name, role="user")

    async def CreateApiKey(self, request: Any, context: Any) -> manager_pb2.CreateApiKeyResponse:
        name = self._caller(context).acting_user.removeprefix("u-")
        key = f"key-{name}-{len(self.keys)}"
        self.keys[key] = name
        return manager_pb2.CreateApiKeyResponse(key=key, key_id=key[:10], user_name=name)

    async def CreateUpload(self, request: Any, context: Any) -> manager_pb2.CreateUploadResponse:
        caller = self._caller(context)
        if caller.api_key and caller.api_key not in self.keys:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad api key")
        owner = self.keys.get(caller.api_key, caller.acting_user.removeprefix("u-"))
        return manager_pb2.CreateUploadResponse(
            upload_id="up1", upload_address=self.upload_address, ticket=f"t:{owner}", chunk_size=64 * 1024
        )

    async def CheckUpload(self, request: Any, context: Any) -> manager_pb2.CheckUploadResponse:
        caller = self._caller(context)
        if caller.api_key and caller.api_key not in self.keys:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad api key")
        self.checks.append(request.size)
        if self.check_refuses is not None:
            await context.abort(self.check_refuses, "refused by the fake")
        return manager_pb2.CheckUploadResponse()

    async def Upload(self, request_iterator: Any, context: Any) -> upload_pb2.UploadReceipt:
        header, size = None, 0
        async for msg in request_iterator:
            if msg.HasField("header"):
                header = msg.header
            else:
                size += len(msg.chunk.data)
        assert header is not None and size == header.size
        slug = f"s{len(self.images) + 1:04d}{uuid.uuid4().hex[:8]}"  # unique: the web caches ready images in Redis
        image = common_pb2.Image(
            id=slug,
            slug=slug,
            status=common_pb2.IMAGE_STATUS_PROCESSING,
            filename=header.filename,
            bytes=size,
            owner=header.ticket.removeprefix("t:"),
        )
        self.images[slug] = image
        return upload_pb2.UploadReceipt(upload_id=header.upload_id, size=size, image=image)

    async def GetImage(self, request: Any, context: Any) -> common_pb2.Image:
        self._caller(context)
        image = self.images.get(request.slug)
        if image is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such image")
        self.polls[request.slug] = self.polls.get(request.slug, 0) + 1
        if self.polls[request.slug] >= 2 and image.status == common_pb2.IMAGE_STATUS_PROCESSING:  # type: ignore[union-attr]
            self._finish(image)  # type: ignore[arg-type]
        return image  # type: ignore[return-value]

    def _finish(self, image: common_pb2.Image) -> None:
        if image.filename.startswith("fail"):
            image.status = common_pb2.IMAGE_STATUS_FAILED
            image.error_code, image.error_message = "corrupt-image", "decoder gave up <here>"
            return
        image.status = common_pb2.IMAGE_STATUS_READY
        image.width, image.height, image.format = 3000, 4000, "jpeg"
        for fmt in FORMATS:
            for name, w in SIZES:
                image.variants.add(
                    name=name,
                    format=fmt,
                    width=w,
                    height=w * 4 // 3,
                    bytes=1000,
                    url=f"http://storage.test/v/{image.slug}/{name}.{fmt}",
                )
        image.thumbnail_url = f"http://storage.test/v/{image.slug}/thumb.webp"
        image.original_url = f"http://storage.test/o/{image.slug}.jpg"

    async def ListImages(self, request: Any, context: Any) -> manager_pb2.ListImagesResponse:
        owner = self._caller(context).acting_user.removeprefix("u-")
        mine = [i for i in reversed(self.images.values()) if i.owner == owner]
        return manager_pb2.ListImagesResponse(images=mine[: request.limit])


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeCluster, str]]:
    cluster = FakeCluster()
    server = grpc.aio.server()
    manager_pb2_grpc.add_ManagerServiceServicer_to_server(cluster, server)
    upload_pb2_grpc.add_UploadServiceServicer_to_server(cluster, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    cluster.upload_address = f"127.0.0.1:{port}"
    yield cluster, cluster.upload_address
    await server.stop(0)


def _settings(redis_url: str, manager: str, **kw: Any) -> WebSettings:
    kw.setdefault("register_per_hour", 0)  # every test registers from 127.0.0.1; one test sets a limit
    return WebSettings(
        node_id="webtest",
        cluster={"manager": manager, "secret": SECRET},  # type: ignore[arg-type]
        redis={"url": redis_url},  # type: ignore[arg-type]
        metrics_port=-1,
        **kw,
    )


@pytest.fixture
async def client(redis_url: str, fake: tuple[FakeCluster, str]) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(_settings(redis_url, fake[1], upload_wait_s=5.0))
    async with TestClient(TestServer(app)) as c:
        yield c


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(
        r'name="csrf-token" content="([^"]+)"', html
    )
    assert m, html
    return m.group(1)


def _cookie(c: TestClient[Any, Any]) -> str:
    for cookie in c.session.cookie_jar:
        if cookie.key == "pixelfox_session":
            return cookie.value
    return ""


def _use_cookie(c: TestClient[Any, Any], value: str) -> None:
    c.session.cookie_jar.clear()
    c.session.cookie_jar.update_cookies({"pixelfox_session": value})


async def _register(c: TestClient[Any, Any], name: str = "alice", password: str = "correct horse",
                    headers: dict[str, str] | None = None) -> None:
    token = _csrf(await (await c.get("/register", headers=headers)).text())
    r = await c.post(
        "/register",
        data={"csrf_token": token, "name": name, "password": password, "password2": password},
        allow_redirects=False, headers=headers,
    )
    assert r.status == 303, await r.text()


async def test_health_and_headers(client: TestClient[Any, Any]) -> None:
    r = await client.get("/healthz")
    assert r.status == 200 and await r.json() == {"status": "ok"}
    r = await client.get("/")
    assert r.status == 200
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert "img-src * data:" in r.headers["Content-Security-Policy"]
    r = await client.get("/readyz")  # the fake has no health service: manager counts as down
    assert r.status == 503


async def test_favicon(client: TestClient[Any, Any]) -> None:
    """Pages link an SVG icon; /favicon.ico (asked for by clients that ignore the link) redirects to it."""
    page = await (await client.get("/login")).text()
    icon = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page)
    assert icon and icon.group(1).startswith("/static/favicon.svg"), page[:400]
    r = await client.get("/favicon.ico", allow_redirects=False)
    assert r.status == 301 and r.headers["Location"] == icon.group(1)
    r = await client.get(icon.group(1))
    body = await r.read()
    assert r.status == 200 and r.content_type == "image/svg+xml" and body.startswith(b"<svg ") and len(body) < 1024


async def test_register_login_logout(client: TestClient[Any, Any]) -> None:
    await client.get("/login")
    pre_login = _cookie(client)
    assert len(pre_login) >= 43
    await _register(client)
    after = _cookie(client)
    assert after and after != pre_login  # new id at login (no fixation)
    r = await client.get("/api/v1/me")
    assert (await r.json())["name"] == "alice"
    # the pre-login id is dead
    _use_cookie(client, pre_login)
    assert (await client.get("/api/v1/me")).status == 401
    _use_cookie(client, after)
    html = await (await client.get("/")).text()
    r = await client.post("/logout", data={"csrf_token": _csrf(html)}, allow_redirects=False)
    assert r.status == 303
    _use_cookie(client, after)
    assert (await client.get("/api/v1/me")).status == 401


async def test_cookie_attributes(client: TestClient[Any, Any]) -> None:
    r = await client.get("/login")
    header = r.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Domain" not in header
    assert "Max-Age=1800" in header  # a session that only holds the form's CSRF token


async def test_session_lifetime_before_and_after_login(client: TestClient[Any, Any], redis_url: str) -> None:
    r = await client.get("/register")
    assert "Max-Age=1800" in r.headers["Set-Cookie"]
    redis = aioredis.Redis.from_url(redis_url)
    try:
        assert 1700 < await redis.ttl(f"pixelfox:{{session}}:{_cookie(client)}") <= 1800
        await _register(client, "frank", "franks password")
        assert 14 * 24 * 3600 - 100 < await redis.ttl(f"pixelfox:{{session}}:{_cookie(client)}") <= 14 * 24 * 3600
        r = await client.get("/")  # reading a page does not write the session again
        assert "Set-Cookie" not in r.headers and (await client.get("/api/v1/me")).status == 200
    finally:
        await redis.aclose()


async def test_login_wrong_password_and_csrf(client: TestClient[Any, Any]) -> None:
    await _register(client, "bob", "bobs password")
    html = await (await client.get("/login")).text()
    r = await client.post("/login", data={"name": "bob", "password": "x" * 9})
    assert r.status == 403  # no token
    r = await client.post("/login", data={"csrf_token": _csrf(html), "name": "bob", "password": "wrong one"})
    assert r.status == 401 and "Invalid user name or password" in await r.text()
    r = await client.post("/login", data={"csrf_token": "forged", "name": "bob", "password": "bobs password"},
                          allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (303, "/login?next=/")  # taken for a stale page: no login
    r = await client.post(
        "/login",
        data={"csrf_token": _csrf(html), "name": "bob", "password": "bobs password"},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status == 403


async def _upload(c: TestClient[Any, Any], headers: dict[str, str] | None = None, query: str = "") -> Any:
    form = FormData()
    form.add_field("file", PHOTO.read_bytes(), filename=PHOTO.name, content_type="image/jpeg")
    return await c.post(f"/api/v1/images{query}", data=form, headers=headers or {})


@pytest.mark.skipif(not PHOTO.exists(), reason="corpus missing")
async def test_upload_with_session_needs_csrf_header(client: TestClient[Any, Any], fake: Any) -> None:
    await _register(client, "carol", "carols password")
    r = await _upload(client)
    assert r.status == 403
    assert (await r.json())["error"]["code"] == "forbidden"
    token = _csrf(await (await client.get("/")).text())
    r = await _upload(client, {"X-CSRF-Token": token})
    assert r.status == 201, await r.text()
    body = await r.json()
    assert body["status"] == "ready" and body["variants"] and "/api/v1/delete/" in body["deletion_url"]
    assert "u-carol" in fake[0].acting
    html = await (await client.get(f"/i/{body['id']}")).text()
    assert 'type="image/avif"' in html and 'type="image/webp"' in html
    assert f"http://storage.test/v/{body['id']}/large.avif 1600w" in html
    assert f'<meta property="og:image" content="http://storage.test/v/{body["id"]}/large.jpeg">' in html
    assert '<meta name="twitter:card" content="summary_large_image">' in html
    assert f'src="http://storage.test/v/{body["id"]}/medium.jpeg"' in html
    assert "/o/" not in html.split('og:image"')[1].split(">")[0]
    my = await (await client.get("/my")).text()
    assert body["id"] in my


@pytest.mark.skipif(not PHOTO.exists(), reason="corpus missing")
async def test_upload_api_key_and_anonymous(client: TestClient[Any, Any]) -> None:
    r = await _upload(client, {"Authorization": "Bearer key-alice"})
    assert r.status == 201 and (await r.json())["status"] == "ready"
    r = await _upload(client, {"X-API-Key": "nope"})
    assert r.status == 401 and (await r.json())["error"]["code"] == "unauthenticated"
    r = await _upload(client, query="?wait=0")
    body = await r.json()
    assert r.status == 201 and body["status"] == "processing"
    html = await (await client.get(f"/i/{body['id']}")).text()
    assert "processing" in html and 'http-equiv="refresh"' in html


@pytest.mark.skipif(not PHOTO.exists(), reason="corpus missing")
async def test_upload_limits_are_asked_once_and_an_older_manager_is_no_refusal(client: TestClient[Any, Any],
                                                                             fake: Any) -> None:
    """A keyed upload asks ``CheckUpload`` once, with the declared size less the form's slack, before
    the body; a manager without that RPC (a rolling upgrade) lets the upload through to
    ``CreateUpload``, for ``/api/v1/images`` and Chevereto alike."""
    key = {"X-API-Key": "key-alice"}
    assert (await _upload(client, key, "?wait=0")).status == 201
    assert len(fake[0].checks) == 1 and 0 < fake[0].checks[0] <= PHOTO.stat().st_size
    assert (await _upload(client, query="?wait=0")).status == 201  # anonymous: nothing to ask
    assert len(fake[0].checks) == 1
    fake[0].check_refuses = grpc.StatusCode.UNIMPLEMENTED
    assert (await _upload(client, key, "?wait=0")).status == 201
    form = FormData()
    form.add_field("source", PHOTO.read_bytes(), filename=PHOTO.name, content_type="image/jpeg")
    r = await client.post("/api/1/upload?key=key-alice", data=form)
    assert r.status == 200, await r.text()
    fake[0].check_refuses = grpc.StatusCode.INTERNAL  # any other failure is still one
    assert (await _upload(client, key, "?wait=0")).status == 500
    assert len(fake[0].checks) == 4


async def test_upload_too_large(redis_url: str, fake: tuple[FakeCluster, str]) -> None:
    app = create_app(_settings(redis_url, fake[1], limits={"max_upload_bytes": 1000}))
    async with TestClient(TestServer(app)) as c:
        form = FormData()
        form.add_field("file", b"\xff\xd8" + b"x" * 5000, filename="big.jpg", content_type="image/jpeg")
        r = await c.post("/api/v1/images", data=form)
        assert r.status == 413 and (await r.json())["error"]["code"] == "payload-too-large"


async def test_errors_are_json_or_html(client: TestClient[Any, Any]) -> None:
    r = await client.get("/api/v1/images/doesnotexist")
    assert r.status == 404 and (await r.json())["error"]["code"] == "not-found"
    r = await client.get("/i/doesnotexist")
    assert r.status == 404 and "text/html" in r.headers["Content-Type"]
    r = await client.post("/api/v1/images", data=b"x", headers={"Content-Type": "text/plain"})
    assert r.status == 400 and (await r.json())["error"]["code"] == "bad-request"


async def test_sessions_shared_across_apps(redis_url: str, fake: tuple[FakeCluster, str]) -> None:
    """Two app instances on one Redis: a session made on A works on B."""
    a = TestClient(TestServer(create_app(_settings(redis_url, fake[1]))))
    b = TestClient(TestServer(create_app(_settings(redis_url, fake[1]))))
    async with a, b:
        await _register(a, "dave", "daves password")
        _use_cookie(b, _cookie(a))
        r = await b.get("/api/v1/me")
        assert r.status == 200 and (await r.json())["name"] == "dave"


async def test_login_throttle(redis_url: str, fake: tuple[FakeCluster, str]) -> None:
    app = create_app(_settings(redis_url, fake[1], login_max_failures=3))
    async with TestClient(TestServer(app)) as c:
        token = _csrf(await (await c.get("/login")).text())
        statuses = []
        for _ in range(5):
            r = await c.post("/login", data={"csrf_token": token, "name": "mallory", "password": "guess1234"})
            statuses.append(r.status)
        assert statuses[:3] == [401, 401, 401] and statuses[3] == 429
        assert int(r.headers["Retry-After"]) > 0


async def test_login_timeouts_count_as_failures(redis_url: str, fake: tuple[FakeCluster, str]) -> None:
    """A verification that times out (504) is counted before it runs, so it still uses up the budget."""
    app = create_app(_settings(redis_url, fake[1], login_max_failures=3))
    async with TestClient(TestServer(app)) as c:
        token = _csrf(await (await c.get("/login")).text())
        statuses = []
        for _ in range(5):
            r = await c.post("/login", data={"csrf_token": token, "name": "slowpoke", "password": "guess1234"})
            statuses.append(r.status)
        assert statuses == [504, 504, 504, 429, 429]
        assert 0 < int(r.headers["Retry-After"]) <= 900


async def test_login_success_resets_the_account(redis_url: str, fake: tuple[FakeCluster, str]) -> None:
    """Attempts are counted before the check; a success forgets the account's failures from this
    address and gives the address and the account's ceiling their attempt back."""
    digest = hashlib.sha256(b'grace').hexdigest()[:32]
    acct_ip, acct = f"pixelfox:{{login}}:fail:acct-ip:{digest}:127.0.0.1", f"pixelfox:{{login}}:fail:acct:{digest}"
    ip = "pixelfox:{login}:fail:ip:127.0.0.1"
    redis = aioredis.Redis.from_url(redis_url)
    await forget(redis, [ip, acct])
    try:
        app = create_app(_settings(redis_url, fake[1], login_max_failures=3))
        async with TestClient(TestServer(app)) as c:
            await _register(c, "grace", "graces password")
            await c.post("/logout", data={"csrf_token": _csrf(await (await c.get("/")).text())})
            token = _csrf(await (await c.get("/login")).text())
            for password in ("wrong 1234", "wrong 5678"):
                r = await c.post("/login", data={"csrf_token": token, "name": "grace", "password": password})
                assert r.status == 401
            assert [math.ceil(h) for h in await held(redis, [acct_ip, ip, acct])] == [2, 2, 2]
            r = await c.post("/login", data={"csrf_token": token, "name": "grace", "password": "graces password"},
                             allow_redirects=False)
            assert r.status == 303
            assert await redis.exists(state_key(acct_ip)) == 0
            assert [math.ceil(h) for h in await held(redis, [ip, acct])] == [2, 2]
    finally:
        await forget(redis, [ip, acct])
        await redis.aclose()


async def test_register_rate_limit_per_address(redis_url: str, fake: tuple[FakeCluster, str]) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    key = "pixelfox:{limits}:register:ip:127.0.0.1"
    await forget(redis, [key])
    try:
        app = create_app(_settings(redis_url, fake[1], register_per_hour=2))
        async with TestClient(TestServer(app)) as c:
            for name in ("henry1", "henry2"):
                c.session.cookie_jar.clear()
                await _register(c, name, "henrys password")
                if name == "henry1":  # a taken name makes no account: it does not use up the limit
                    c.session.cookie_jar.clear()
                    token = _csrf(await (await c.get("/register")).text())
                    r = await c.post("/register", allow_redirects=False, data={
                        "csrf_token": token, "name": "henry1", "password": "henrys password",
                        "password2": "henrys password"})
                    assert r.status == 400 and "That user name is taken." in await r.text()
            c.session.cookie_jar.clear()
            token = _csrf(await (await c.get("/register")).text())
            password = "henrys password"
            form = {"csrf_token": token, "name": "henry3", "password": password, "password2": password}
            r = await c.post("/register", data=form, allow_redirects=False)
            assert r.status == 429 and "Too many new accounts" in await r.text()
            assert 1700 < int(r.headers["Retry-After"]) <= 1800  # 2 an hour: one more fits 30 min after the first
            assert "henry3" not in fake[0].users
        assert [math.ceil(h) for h in await held(redis, [key])] == [2]
    finally:
        await forget(redis, [key])
        await redis.aclose()


async def test_my_pages_link_older_images_only_when_there_are_some(client: TestClient[Any, Any], fake: Any) -> None:
    await _register(client, "ivy", "ivys password")
    cluster: FakeCluster = fake[0]
    for n in range(48):  # exactly one page of /my
        slug = f"ivy{n:04d}{uuid.uuid4().hex[:8]}"
        cluster.images[slug] = common_pb2.Image(id=slug, slug=slug, owner="ivy", filename=f"{n}.jpg")
    html = await (await client.get("/my")).text()
    assert html.count('class="tile"') == 48 and "Older images" not in html
    slug = f"ivy0048{uuid.uuid4().hex[:8]}"
    cluster.images[slug] = common_pb2.Image(id=slug, slug=slug, owner="ivy", filename="48.jpg")
    html = await (await client.get("/my")).text()
    oldest_shown = list(cluster.images)[-48]
    assert html.count('class="tile"') == 48 and f'href="/my?before={oldest_shown}"' in html


def test_print_config_redacts_secret() -> None:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [str(root / ".venv/bin/python"), "-m", "web", "--print-config"],
        capture_output=True,
        text=True,
        env={"PIXELFOX_CLUSTER__SECRET": "hunter2", "PIXELFOX_REDIS__URL": "redis://:hunter3@h:1/0"},
        timeout=30,
        cwd=root,
        check=True,
    )
    assert "hunter2" not in out.stdout and "hunter3" not in out.stdout and '"upload_wait_s"' in out.stdout


@pytest.mark.skipif(not PHOTO.exists(), reason="corpus missing")
async def test_sharex_config(client: TestClient[Any, Any]) -> None:
    await _register(client, "erin", "erins password")
    token = _csrf(await (await client.get("/my")).text())
    assert (await client.post("/sharex", data={})).status == 403
    r = await client.post("/sharex", data={"csrf_token": token})
    assert r.status == 200 and ".sxcu" in r.headers["Content-Disposition"]
    conf = json.loads(await r.text())
    assert conf["URL"] == "{json:url}" and conf["FileFormName"] == "file"
    assert conf["RequestURL"].endswith("/api/v1/images")
    r = await _upload(client, {"Authorization": conf["Headers"]["Authorization"]})
    assert r.status == 201


async def test_failed_image_page_shows_error(client: TestClient[Any, Any]) -> None:
    form = FormData()
    form.add_field("file", b"\xff\xd8\xff" + b"0" * 100, filename="fail.jpg", content_type="image/jpeg")
    r = await client.post("/api/v1/images", data=form)
    body = await r.json()
    assert r.status == 201 and body["status"] == "failed"
    assert body["error"] == {"code": "corrupt-image", "message": "decoder gave up <here>"}
    html = await (await client.get(f"/i/{body['id']}")).text()
    assert "Processing failed: decoder gave up &lt;here&gt;" in html


async def test_client_address_behind_a_trusted_proxy(redis_url: str, fake: tuple[FakeCluster, str]) -> None:
    """With PIXELFOX_TRUSTED_PROXIES the login budget is the forwarded client's, not the proxy's."""
    redis = aioredis.Redis.from_url(redis_url)
    client_key, proxy_key = "pixelfox:{login}:fail:ip:203.0.113.9", "pixelfox:{login}:fail:ip:127.0.0.1"
    await forget(redis, [client_key, proxy_key])
    via = {"X-Forwarded-For": "203.0.113.9"}  # what nginx's `proxy_set_header X-Forwarded-For $remote_addr` sends
    try:
        app = create_app(_settings(redis_url, fake[1], trusted_proxies="127.0.0.1, 10.0.0.0/8"))
        async with TestClient(TestServer(app)) as c:
            token = _csrf(await (await c.get("/login", headers=via)).text())
            r = await c.post("/login", data={"csrf_token": token, "name": "nobody", "password": "wrong guess"},
                             headers=via, allow_redirects=False)
            assert r.status == 401
            assert [math.ceil(h) for h in await held(redis, [client_key, proxy_key])] == [1, 0]
            assert (await c.get("/login")).status == 400  # not through the proxy
            forged = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}  # an extra hop the proxy did not add
            assert (await c.get("/login", headers=forged)).status == 400
            assert (await c.get("/healthz")).status == 200  # probes come straight from the orchestrator
    finally:
        await forget(redis, [client_key, proxy_key])
        await redis.aclose()


@pytest.mark.skipif(not PHOTO.exists(), reason="corpus missing")
async def test_anonymous_uploads_are_limited_per_forwarded_client(redis_url: str,
                                                                   fake: tuple[FakeCluster, str]) -> None:
    """Behind a trusted proxy each forwarded client has its own anonymous upload budget (not the
    proxy's one); past it a visitor gets 429, while a signed-in user and an API key from that same
    address still upload."""
    redis = aioredis.Redis.from_url(redis_url)
    spent, other = {"X-Forwarded-For": "203.0.113.20"}, {"X-Forwarded-For": "203.0.113.21"}
    keys = [f"pixelfox:{{limits}}:anon-ip:{h['X-Forwarded-For']}" for h in (spent, other)]
    await forget(redis, keys)
    proxy = "pixelfox:{limits}:anon-ip:127.0.0.1"  # other tests here upload anonymously, not through a proxy
    proxy_before = await redis.hget(state_key(proxy), "tat")
    try:
        app = create_app(_settings(redis_url, fake[1], trusted_proxies="127.0.0.1",
                                   limits={"anonymous_ip_uploads_per_minute": 2}))
        async with TestClient(TestServer(app)) as c:
            assert [(await _upload(c, spent, "?wait=0")).status for _ in range(2)] == [201, 201]
            r = await _upload(c, spent, "?wait=0")
            assert r.status == 429, await r.text()
            message = (await r.json())["error"]["message"]
            assert 1 <= int(r.headers["Retry-After"]) <= 60, message
            assert message.startswith("more than 2 uploads a minute from this address without an account; wait ")
            assert message.endswith(" s; log in or use an API key for more")
            assert (await _upload(c, other, "?wait=0")).status == 201  # another visitor behind the same proxy
            assert (await _upload(c, {**spent, "Authorization": "Bearer key-alice"}, "?wait=0")).status == 201
            await _register(c, "dora", "doras password", headers=spent)
            token = _csrf(await (await c.get("/", headers=spent)).text())
            assert (await _upload(c, {**spent, "X-CSRF-Token": token}, "?wait=0")).status == 201
        assert [math.ceil(h) for h in await held(redis, keys)] == [2, 1]  # the refused upload is not counted
        assert await redis.hget(state_key(proxy), "tat") in (proxy_before, None)  # not counted (or drained)
    finally:
        await forget(redis, keys)
        await redis.aclose()


async def test_odd_input_is_a_bad_request_not_a_crash(client: TestClient[Any, Any]) -> None:
    """Unicode digits, unknown charsets, broken multipart, huge numbers, lone surrogates: 400, never 500."""
    key = {"X-API-Key": "key-alice"}
    r = await client.get("/api/v1/images?limit=%C2%B2", headers=key)  # "²" passes str.isdigit()
    assert r.status == 400 and "limit must be" in (await r.json())["error"]["message"]
    r = await client.post("/login", data=b"name=a&password=b",
                          headers={"Content-Type": "application/x-www-form-urlencoded; charset=bogus"})
    assert r.status == 400
    r = await client.post("/api/1/upload", data=b"--x\r\nContent-Disposition: form-data; name=\"source\"",
                          headers={**key, "Content-Type": "multipart/form-data"})  # no boundary
    assert r.status == 400
    cut = b'--x\r\nContent-Disposition: form-data; name="source"; filename="a.png"\r\n\r\n\x89PNG'  # no end
    r = await client.post("/api/1/upload", data=cut, headers={**key, "Content-Type": "multipart/form-data; boundary=x"})
    assert r.status == 400
    r = await client.post("/api/1/upload", data={"source": "aGk=", "expiration": "P99999999999999999999Y"},
                          headers=key)
    assert r.status == 400 and "expiration longer than 10 years" in await r.text()
    r = await client.post("/api/v1/uploads", data=b'{"filename": "a.png", "size": 99999999999999999999999999, '
                          b'"content_type": "image/png"}', headers={**key, "Content-Type": "application/json"})
    assert r.status == 413 and (await r.json())["error"]["code"] == "payload-too-large"  # over the limit, as it is
    r = await client.patch("/api/v1/albums/nope", data=b'{"add_images": ["\\ud800"]}',
                           headers={**key, "Content-Type": "application/json"})
    assert r.status == 400, await r.text()


async def test_a_get_upload_as_chevereto_takes_it_says_what_to_send(client: TestClient[Any, Any]) -> None:
    """Chevereto takes ``GET /api/1/upload?source=<URL>``; ours said only "send the upload with POST"."""
    r = await client.get("/api/1/upload?key=key-alice&source=http://example.invalid/a.jpg")
    body = await r.json()
    assert (r.status, r.headers["Allow"], body["status_code"], body["status_txt"]) == (
        405, "POST", 405, "Method Not Allowed")
    assert body["error"] == {"code": "method-not-allowed", "message": "GET is not taken here: POST the image as the "
                             "field source (the file, or its base64; PixelFox does not fetch URLs)"}


async def test_unreadable_bodies_and_loose_values_are_refused(client: TestClient[Any, Any]) -> None:
    key = {"X-API-Key": "key-alice"}
    for path in ("/login", "/register", "/logout"):  # forms: no starting boundary
        r = await client.post(path, data=b"hello", headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert r.status == 400, (path, r.status)
    r = await client.patch("/api/v1/images/x", data=b'{"keep_metadata": "yes"}',
                           headers={**key, "Content-Type": "application/json"})
    assert r.status == 400 and "keep_metadata" in (await r.json())["error"]["message"]
    token = _csrf(await (await client.get("/register")).text())
    long = "x" * 1025
    r = await client.post("/register", data={"csrf_token": token, "name": "longpw", "password": long,
                                             "password2": long})
    assert r.status == 400 and "at most 1024 characters" in await r.text()
    # last: after a body it cannot decode, the server rightly closes the connection
    r = await client.post("/api/v1/uploads", data=b"not gzip at all",
                          headers={**key, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status == 400 and "cannot be read" in (await r.json())["error"]["message"]
