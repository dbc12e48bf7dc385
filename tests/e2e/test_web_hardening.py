"""Issue 5 review fixes against the shared running cluster: the login throttle under parallel
guesses, escaped embed codes, no sessions for anonymous readers, deep JSON, oEmbed answers,
``next=`` redirects, last-page cursors and case-insensitive user names."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import io
import json
import re
import sqlite3
import uuid
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import redis.asyncio as aioredis

from pixelfox import readmodel
from tests.e2e.test_web import PASSWORD, PHOTO, Browser, _until_ready, _user
from tests.e2e.test_web_community import _unique_photo, _unique_upload_form, api, csrf_header, new_user_with_image
from tests.e2e.uploadkit import new_user_key

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

LOGIN_LIMIT = 20  # WebSettings.login_max_failures (default)
SESSION_TTL_PRELOGIN = 30 * 60  # web.sessions.PRELOGIN_MAX_AGE_S
NOT_FOUND = {"error": {"code": "not-found", "message": "no public image at this URL"}}


@pytest.fixture
async def redis(cluster: Any) -> Any:
    r = aioredis.Redis.from_url(cluster.redis_url)
    yield r
    await r.aclose()


async def _session_keys(redis: aioredis.Redis) -> set[bytes]:
    return {k async for k in redis.scan_iter("pixelfox:{session}:*", count=1000)}


async def test_parallel_wrong_logins_stop_at_the_limit(cluster: Any, http: aiohttp.ClientSession) -> None:
    """35 guesses at once, each with its own session and token: at most the limit reach the manager."""
    name = _user()
    await Browser(http, cluster.web_url).register(name)
    guessers = [Browser(http, cluster.web_url) for _ in range(35)]
    tokens = await asyncio.gather(*(g.csrf("/login") for g in guessers))
    answers = await asyncio.gather(*(
        g.post("/login", {"csrf_token": t, "name": name, "password": "wrong password"})
        for g, t in zip(guessers, tokens, strict=True)))
    statuses = [status for status, _, _ in answers]
    checked = statuses.count(401) + statuses.count(504)  # a verification past its deadline counts too
    assert 0 < checked <= LOGIN_LIMIT and statuses.count(429) == 35 - checked, statuses
    waits = [int(headers["Retry-After"]) for status, _, headers in answers if status == 429]
    assert len(waits) == 35 - checked and all(0 < w <= 900 for w in waits), waits
    # the account stays locked for the window, even for the right password
    b = Browser(http, cluster.web_url)
    token = await b.csrf("/login")
    status, body, headers = await b.post("/login", {"csrf_token": token, "name": name, "password": PASSWORD})
    assert status == 429 and "Too many failed logins" in body and int(headers["Retry-After"]) > 0



async def _login_via(http: aiohttp.ClientSession, url: str, client: str, name: str, password: str) -> tuple[int, Any]:
    """One login with a fresh session and CSRF token, as the trusted proxy forwards it for ``client``."""
    b, via = Browser(http, url), {"X-Forwarded-For": client}
    status, page, _ = await b.get("/login", via)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert status == 200 and token, page
    status, _, headers = await b.post("/login", {"csrf_token": token.group(1), "name": name, "password": password}, via)
    return status, headers


async def test_guesses_from_one_address_do_not_lock_the_owner_out(cluster: Any, http: aiohttp.ClientSession) -> None:
    """A fresh tester's 22 wrong passwords locked the account (the admin's too) for 15 minutes, even
    for its owner with the right password. The limit is per account and address: 25 guesses from A
    spend A's budget for the account, and the owner logs in from B."""
    cluster.local.role_env["weblogin"] = {"PIXELFOX_TRUSTED_PROXIES": "127.0.0.1"}
    url = cluster.start_web("weblogin")
    attacker, owner = "203.0.113.66", "203.0.113.67"
    try:
        name = _user()
        b, via = Browser(http, url), {"X-Forwarded-For": owner}
        status, page, _ = await b.get("/register", via)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, page
        form = {"csrf_token": token.group(1), "name": name, "password": PASSWORD, "password2": PASSWORD}
        assert (await b.post("/register", form, via))[0] == 303
        statuses = [(await _login_via(http, url, attacker, name, "wrong password"))[0] for _ in range(25)]
        assert statuses == [401] * LOGIN_LIMIT + [429] * 5, statuses
        status, _ = await _login_via(http, url, owner, name, PASSWORD)
        assert status == 303
        status, headers = await _login_via(http, url, attacker, name, PASSWORD)  # A stays limited
        assert status == 429 and 0 < int(headers["Retry-After"]) <= 900
    finally:
        cluster.local.terminate("weblogin")
        cluster.local.web_urls.remove(url)
        del cluster.local.role_env["weblogin"]

def _codes(page: str) -> dict[str, str]:
    """The embed codes of an image page by label, unescaped once (as a browser puts them in the clipboard)."""
    found = re.findall(r'<span>([^<]+)</span>\s*<span class="row"><input type="text" readonly value="([^"]*)"', page)
    return {label: html.unescape(value) for label, value in found}


async def test_embed_codes_escape_titles_and_file_names(cluster: Any, http: aiohttp.ClientSession) -> None:
    b = Browser(http, cluster.web_url)
    await b.register(_user())
    hdr = await csrf_header(b)
    evil = 'a" onerror="alert(1)".jpg'
    form = aiohttp.FormData(quote_fields=False)  # as curl sends it: filename="a\" onerror=..."
    form.add_field("file", PHOTO.read_bytes(), filename=evil, content_type="image/jpeg")
    status, body, _ = await b.post("/api/v1/images", form, hdr)
    assert status == 201, body
    image = await _until_ready(b, json.loads(body))
    assert image["filename"] == evil
    slug, page_url = image["id"], f"{cluster.web_url}/i/{image['id']}"

    status, page, _ = await Browser(http, cluster.web_url).get(f"/i/{slug}")
    assert status == 200
    src = re.search(r'<meta property="og:image" content="([^"]+)"', page)
    assert src, page
    src_url = html.unescape(src.group(1))
    codes = _codes(page)
    alt = "a&quot; onerror=&quot;alert(1)&quot;.jpg"
    assert codes["HTML"] == f'<a href="{page_url}"><img src="{src_url}" alt="{alt}"></a>'
    assert codes["Markdown"] == f'[![a" onerror="alert\\(1\\)".jpg]({src_url})]({page_url})'
    assert codes["BBCode"] == f"[url={page_url}][img]{src_url}[/img][/url]"

    title = 'x](https://evil.example) [y "z" \\'
    status, patched = await api(b, "PATCH", f"/api/v1/images/{slug}", {"title": title}, hdr)
    assert status == 200 and patched["title"] == title
    status, page, _ = await Browser(http, cluster.web_url).get(f"/i/{slug}")
    codes = _codes(page)
    assert codes["HTML"] == (f'<a href="{page_url}"><img src="{src_url}" '
                             'alt="x](https://evil.example) [y &quot;z&quot; \\"></a>')
    assert codes["Markdown"] == f'[![x\\]\\(https://evil.example\\) \\[y "z" \\\\]({src_url})]({page_url})'
    assert codes["Share page"] == page_url


async def test_anonymous_reading_makes_no_session(cluster: Any, http: aiohttp.ClientSession,
                                                  redis: aioredis.Redis) -> None:
    _owner, _hdr, image = await new_user_with_image(http, cluster.web_url)
    slug = image["id"]
    before = await _session_keys(redis)
    anon = Browser(http, cluster.web_url)
    for path in (f"/i/{slug}", "/", f"/oembed?url={quote(cluster.web_url + '/i/' + slug)}"):
        async with http.get(cluster.web_url + path, allow_redirects=False) as r:
            assert r.status == 200, path
            assert "Set-Cookie" not in r.headers, path
    status, page, _ = await anon.get(f"/i/{slug}")
    assert status == 200 and f'href="/i/{slug}/report"' in page and "csrf_token" not in page
    assert await _session_keys(redis) == before

    # the report form lives on its own page; its session is short-lived
    status, form, headers = await anon.get(f"/i/{slug}/report")
    assert status == 200 and 'id="report-form"' in form
    assert "Max-Age=1800" in headers["Set-Cookie"] and anon.cookie
    assert 0 < await redis.ttl(f"pixelfox:{{session}}:{anon.cookie}") <= SESSION_TTL_PRELOGIN
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token
    status, _, headers = await anon.post(f"/i/{slug}/report", {"csrf_token": token.group(1), "reason": "anon spam"})
    assert status == 303 and headers["Location"] == f"/i/{slug}/report?sent=1"
    assert (await anon.get(f"/i/{slug}/report?sent=1"))[0] == 200

    # the login form's session is short-lived too; logging in makes a long one
    b = Browser(http, cluster.web_url)
    name = _user()
    await b.register(name)
    token_value = await b.csrf("/")  # logged in: the header's logout form
    await b.post("/logout", {"csrf_token": token_value})
    token_value = await b.csrf("/login")
    prelogin = b.cookie
    assert 0 < await redis.ttl(f"pixelfox:{{session}}:{prelogin}") <= SESSION_TTL_PRELOGIN
    status, _, headers = await b.post("/login", {"csrf_token": token_value, "name": name, "password": PASSWORD})
    assert status == 303 and b.cookie != prelogin
    assert await redis.ttl(f"pixelfox:{{session}}:{b.cookie}") > 13 * 24 * 3600
    assert await redis.exists(f"pixelfox:{{session}}:{prelogin}") == 0
    assert await b.me() == 200


@pytest.mark.parametrize("depth", [50, 1200, 100_000])  # our own limit, then past the parser's recursion limit
async def test_deeply_nested_json_is_a_bad_request(cluster: Any, http: aiohttp.ClientSession, depth: int) -> None:
    b = Browser(http, cluster.web_url)
    await b.register(_user())
    hdr = await csrf_header(b)
    nested = "[" * depth + "]" * depth
    wrapped = '{"title": ' + nested + "}"
    expected = {"error": {"code": "bad-request", "message": "the body is nested more than 16 levels deep"}}
    for method, path, body in (("PATCH", "/api/v1/images/AnyImage01", nested), ("POST", "/api/v1/albums", nested),
                               ("POST", "/api/v1/albums", wrapped), ("POST", "/api/v1/uploads", wrapped)):
        headers = {**b._headers(hdr), "Content-Type": "application/json"}
        async with http.request(method, cluster.web_url + path, data=body, headers=headers) as r:
            assert (r.status, await r.json()) == (400, expected), (method, path)
    status, album = await api(b, "POST", "/api/v1/albums", {"title": "still fine"}, hdr)
    assert status == 201 and album["title"] == "still fine"


async def test_multipart_file_names_are_cut_to_their_last_part(cluster: Any, http: aiohttp.ClientSession) -> None:
    """Windows paths (old browsers, some tools) keep their last part, not a name run together; a
    very long name is a 400 that says so."""
    v1 = f"{cluster.web_url}/api/v1/images"
    for raw, stored in [(b'C:\\Users\\me\\Pictures\\cat.png', "cat.png"), (b"..\\..\\x.png", "x.png"),
                        ("\u05d7\u05ea\u05d5\u05dc.png".encode(), "\u05d7\u05ea\u05d5\u05dc.png"),
                        # browsers and curl write '"' as %22 and line breaks as %0D%0A (WHATWG HTML)
                        (b"say %22hi%22 100%25.png", 'say "hi" 100%25.png'), (b"two%0d%0Alines.png", "twolines.png")]:
        photo = PHOTO.read_bytes()
        unique = photo[:2] + b"\xff\xfe\x00\x12" + uuid.uuid4().bytes + photo[2:]  # a COM segment: never a dedup
        status, answer = await _post_raw(http, v1, cluster.admin_api_key,
                                         _form((b'name="file"; filename="' + raw + b'"', unique)))
        assert status == 201 and answer["filename"] == stored, answer
    status, answer = await _post_raw(http, v1, cluster.admin_api_key,
                                     _form((b'name="file"; filename="' + b"n" * 9000 + b'.jpg"', PHOTO.read_bytes())))
    assert status == 400 and "header line is too long" in answer["error"]["message"], answer
    # refused before the upload, not read as "do not wait"; only plain ASCII decimals are seconds
    for wait in ("nan", "-5", "soon", "inf", "1_0", "1e3", "%EF%BC%95", "0x10"):
        status, answer = await _post_raw(http, f"{v1}?wait={wait}", cluster.admin_api_key,
                                         _form((b'name="file"; filename="w.jpg"', PHOTO.read_bytes())))
        assert status == 400 and answer["error"]["message"].startswith("wait must be a number of seconds"), answer
    status, answer = await _post_raw(http, f"{v1}?wait=0&wait=30", cluster.admin_api_key,
                                     _form((b'name="file"; filename="w.jpg"', PHOTO.read_bytes())))
    assert (status, answer["error"]["message"]) == (
        400, "wait was sent more than once in the query string: send it once"), answer


async def test_a_title_field_travels_with_an_api_upload(cluster: Any, http: aiohttp.ClientSession) -> None:
    """``POST /api/v1/images`` takes an optional ``title`` text field (before or after the file); a title
    over 255 characters or not UTF-8 is a 400 and keeps nothing."""
    v1 = f"{cluster.web_url}/api/v1/images?wait=0"

    def unique() -> bytes:
        photo = PHOTO.read_bytes()
        return photo[:2] + b"\xff\xfe\x00\x12" + uuid.uuid4().bytes + photo[2:]  # a COM segment: never a dedup

    title = "Sonnenuntergang \u00fcber der Rh\u00f4ne"
    for parts in ([(b'name="title"', title.encode()), (b'name="file"; filename="t.jpg"', unique())],
                  [(b'name="file"; filename="t.jpg"', unique()), (b'name="title"', title.encode())]):
        status, answer = await _post_raw(http, v1, cluster.admin_api_key, _form(*parts))
        assert status == 201 and answer["title"] == title, answer
        status, again = await _get_json(http, f"{cluster.web_url}/api/v1/images/{answer['id']}", cluster.admin_api_key)
        assert status == 200 and again["title"] == title
    before = await _image_count(http, cluster.web_url, cluster.admin_api_key)
    # 2,000 euro signs are 6,000 bytes: cut at 4,096 inside a character, still "too long", not "not UTF-8"
    for raw, says in [(b"x" * 256, "255"), (b"caf\xe9", "not UTF-8"), ("\u20ac".encode() * 2000, "255")]:
        status, answer = await _post_raw(http, v1, cluster.admin_api_key,
                                         _form((b'name="title"', raw), (b'name="file"; filename="t.jpg"', unique())))
        assert status == 400 and says in answer["error"]["message"], answer
    status, answer = await _post_raw(http, v1, cluster.admin_api_key, _form(
        (b'name="title"', b"one"), (b'name="title"', b"two"), (b'name="file"; filename="t.jpg"', unique())))
    assert status == 400 and answer["error"]["message"].startswith("one title per request"), answer
    assert await _image_count(http, cluster.web_url, cluster.admin_api_key) == before


async def test_an_api_key_gRPC_cannot_carry_is_a_401(cluster: Any, http: aiohttp.ClientSession) -> None:
    """A key with characters no key has (control or non-ASCII, as schemathesis sent) is "invalid API key",
    a 401 in each endpoint's own shape: gRPC refuses such a metadata value client-side, which was a 500."""
    photo = PHOTO.read_bytes()
    body = _form((b'name="key"', "\x1d\u00e9 j".encode()), (b'name="source"; filename="k.jpg"', photo))
    async with http.post(f"{cluster.web_url}/api/1/upload", data=body,
                         headers={"Content-Type": "multipart/form-data; boundary=XB"}) as r:
        answer = await r.json()
    assert (r.status, answer["status_code"], answer["error"]["message"]) == (401, 401, "invalid API key"), answer
    async with http.post(f"{cluster.web_url}/api/1/upload?key=%C3%A9", data=body,
                         headers={"Content-Type": "multipart/form-data; boundary=XB"}) as r:
        assert (r.status, (await r.json())["error"]["message"]) == (401, "invalid API key")
    async with http.get(f"{cluster.web_url}/api/v1/me", headers={"X-API-Key": "pfx_\u00e9"}) as r:
        assert (r.status, (await r.json())["error"]["message"]) == (401, "invalid API key")


async def test_credentials_sent_but_unusable_are_a_401_not_an_anonymous_upload(
        cluster: Any, http: aiohttp.ClientSession) -> None:
    """A valid key under another scheme, an empty Bearer (a script's unset $KEY) or an empty X-API-Key
    was an anonymous upload (201, outside the account); each is now a 401 that says why. Basic stays
    anonymous: a proxy in front (nginx auth_basic) sends it."""
    url = f"{cluster.web_url}/api/v1/images"
    for headers, says in [({"Authorization": f"Token {cluster.admin_api_key}"}, "unsupported Authorization scheme"),
                          ({"Authorization": "Bearer "}, "Bearer without an API key"),
                          ({"Authorization": "Bearer"}, "Bearer without an API key"),
                          ({"X-API-Key": ""}, "X-API-Key is empty")]:
        form = aiohttp.FormData()
        form.add_field("file", PHOTO.read_bytes(), filename="k.jpg", content_type="image/jpeg")
        async with http.post(url, data=form, headers=headers) as r:
            answer = await r.json()
        assert r.status == 401 and says in answer["error"]["message"], (headers, r.status, answer)
        async with http.get(f"{cluster.web_url}/api/v1/me", headers=headers) as r:
            assert r.status == 401 and says in (await r.json())["error"]["message"], headers
    for proxy_auth in ("Basic dXNlcjpwYXNz", "Negotiate YIIC", "Digest username=\"u\"", "NTLM TlRMTVNTUAAB"):
        async with http.get(f"{cluster.web_url}/api/v1/me", headers={"Authorization": proxy_auth}) as r:
            # a proxy's or single sign-on's scheme: anonymous, as before (the browser sends it on every page)
            assert (r.status, (await r.json())["error"]["message"]) == (401, "not logged in"), proxy_auth
    # a key sent without a scheme is refused without being echoed; a tab after Bearer is whitespace too
    async with http.get(f"{cluster.web_url}/api/v1/me", headers={"Authorization": cluster.admin_api_key}) as r:
        text = await r.text()
    assert r.status == 401 and cluster.admin_api_key[:8] not in text and "unsupported Authorization" in text, text
    async with http.get(f"{cluster.web_url}/api/v1/me",
                        headers={"Authorization": f"Bearer\t{cluster.admin_api_key}"}) as r:
        assert r.status == 200 and (await r.json())["via"] == "api-key"


def _basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


async def test_an_api_key_sent_as_basic_credentials_is_that_key(cluster: Any, http: aiohttp.ClientSession) -> None:
    """``curl -u <API key>:`` (Basic) was left to the proxy and the upload went in anonymous, outside
    the account. A Basic header whose credentials are an API key (user name, password, or the key
    itself, encoded or not) now counts as that key; a proxy's ``user:password`` stays anonymous."""
    name = f"basic_{uuid.uuid4().hex[:8]}"
    key = await new_user_key(cluster.local, name)
    me = f"{cluster.web_url}/api/v1/me"
    for headers in (_basic(f"{key}:"), _basic(f"{key}:anything"), _basic(f"anyone:{key}"), _basic(f"{key}\n"),
                    {"Authorization": f"Basic {key}"}, {"Authorization": f"basic {key}", "X-API-Key": key}):
        async with http.get(me, headers=headers) as r:
            answer = await r.json()
        assert (r.status, answer.get("name"), answer.get("via")) == (200, name, "api-key"), (headers, answer)
    before = await _image_count(http, cluster.web_url, key)
    async with http.post(f"{cluster.web_url}/api/v1/images?wait=0", data=_unique_upload_form(),
                         headers=_basic(f"{key}:")) as r:  # what curl -u KEY: sends
        assert r.status == 201, await r.text()
    assert await _image_count(http, cluster.web_url, key) == before + 1
    for headers, status, says in [
            ([*_basic("pfx_not_a_key:").items()], 401, "invalid API key"),  # refused, not anonymous
            ([*_basic(f"{key}:pfx_another").items()], 400, "two different API keys in Authorization: Basic"),
            ([*_basic(f"{key}:").items(), ("X-API-Key", "pfx_another")], 400,
             "two different API keys: Authorization: Basic and X-API-Key differ"),
            ([("Authorization", f"Basic {key}"), ("Authorization", "Basic dXNlcjpwYXNz")], 400,
             "Authorization was sent more than once")]:
        async with http.get(me, headers=headers) as r:
            text = await r.text()
        assert r.status == status and says in json.loads(text)["error"]["message"], (headers, text)
        assert key not in text and "pfx_not" not in text, text
    # a browser holds Basic credentials and sends them by itself, as a cookie: no upload from another site
    async with http.post(f"{cluster.web_url}/api/v1/images?wait=0", data=_unique_upload_form(),
                         headers={**_basic(f"{key}:"), "Origin": "https://evil.example"}) as r:
        assert r.status == 403, await r.text()
    assert await _image_count(http, cluster.web_url, key) == before + 1


async def test_an_api_key_in_the_url_of_an_api_v1_call_is_refused(cluster: Any, http: aiohttp.ClientSession) -> None:
    """``?key=`` is read by the Chevereto upload only; on ``POST /api/v1/images`` it was ignored and the
    upload landed anonymously. Every ``/api/v1`` call that reads a key now refuses it with a 400 saying
    what to send, without echoing the key, before a byte of the body is read."""
    key = await new_user_key(cluster.local, f"urlkey_{uuid.uuid4().hex[:8]}")
    before = await _image_count(http, cluster.web_url, key)
    photo = _unique_photo()
    says = ("API keys in the URL are read only by /api/1/upload (Chevereto); send "
            "'Authorization: Bearer <API key>' or 'X-API-Key: <API key>'")
    for extra in ({}, {"Authorization": f"Bearer {key}"}):  # with a key in a header too: it is in the URL anyway
        async with http.post(f"{cluster.web_url}/api/v1/images", params={"key": key, "wait": "0"},
                             data=_unique_upload_form(photo), headers=extra) as r:
            text = await r.text()
        assert (r.status, json.loads(text)["error"]["message"]) == (400, says), text
        assert key not in text
    for path in ("/api/v1/me", "/api/v1/images", "/api/v1/uploads", "/api/v1/albums"):
        async with http.get(f"{cluster.web_url}{path}?key={key}") as r:
            assert (r.status, (await r.json())["error"]["message"]) == (400, says), path
    assert await _image_count(http, cluster.web_url, key) == before
    sha = hashlib.sha256(photo).hexdigest()
    assert not [p for p in cluster.storage_files() if p.name.startswith(sha)]  # no anonymous image either


async def _get_json(http: aiohttp.ClientSession, url: str, key: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, await r.json()


async def _image_count(http: aiohttp.ClientSession, web_url: str, key: str) -> int:
    """How many images the key's user has (pages of 200 through ``GET /api/v1/images``)."""
    count, cursor = 0, ""
    while True:
        status, page = await _get_json(http, f"{web_url}/api/v1/images?limit=200{cursor}", key)
        assert status == 200, page
        count += len(page["images"])
        if not page.get("next_before"):
            return count
        cursor = f"&before={page['next_before']}"


async def test_a_patch_body_must_be_strict_json(cluster: Any, http: aiohttp.ClientSession) -> None:
    """An empty PATCH is a 400, not a silent no-op; NaN and over-long numbers are named as the fault."""
    owner, hdr, image = await new_user_with_image(http, cluster.web_url)
    url = f"{cluster.web_url}/api/v1/images/{image['id']}"
    headers = {**owner._headers(hdr), "Content-Type": "application/merge-patch+json"}
    for body, says in [(b"", "the body is empty: send a JSON object"),
                       (b'{"title": NaN}', "the body must be JSON: NaN is not a JSON value"),
                       (b'{"title": ' + b"1" * 5000 + b"}", "a number in the body is longer than 40 characters")]:
        async with http.patch(url, data=body, headers=headers) as r:
            assert (r.status, (await r.json())["error"]["message"]) == (400, says), body[:20]
    # a right-to-left override in a title is refused (it makes the title read as other text); one an
    # older PixelFox stored is shown isolated, so it cannot reorder the page text around it
    spoof = "photo\u202egnp.exe"
    async with http.patch(url, json={"title": spoof}, headers=headers) as r:
        assert (r.status, (await r.json())["error"]["message"]) == (
            400, "title contains a bidirectional control character (U+202E)")
    with sqlite3.connect(cluster.local.state / "pixelfox.db") as db:
        assert db.execute("UPDATE images SET title = ? WHERE slug = ?", (spoof, image["id"])).rowcount == 1
    store = aioredis.Redis.from_url(cluster.redis_url)
    try:
        await store.delete(readmodel.key(image["id"]))  # the cached image: read again from the database
    finally:
        await store.aclose()
    status, page, _ = await owner.get(f"/i/{image['id']}")
    assert status == 200 and f'<h1 class="title"><bdi>{spoof}</bdi>' in page
    # plain-text places get Unicode isolates (FSI .. PDI) instead: the tab title, Open Graph, oEmbed
    shown = f"\u2068{spoof}\u2069"
    assert f"<title>{shown} · " in page and f'<meta property="og:title" content="{shown}">' in page, page[:600]
    async with http.get(f"{cluster.web_url}/oembed", params={"url": f"{cluster.web_url}/i/{image['id']}"}) as r:
        assert r.status == 200 and (await r.json())["title"] == shown
    # the edit form sends every field: the stored title, which the rule now refuses, is kept as it is and
    # the owner's change is saved (every save was a 400 whose cause, an invisible character, they could
    # not see); a new title with the same override is still refused
    token = await owner.csrf(f"/i/{image['id']}")
    status, _, _ = await owner.post(f"/i/{image['id']}/edit", {
        "csrf_token": token, "title": spoof, "description": "new\r\nwords", "visibility": "public"})
    assert status == 303
    async with http.get(url, headers=owner._headers(hdr)) as r:
        got = await r.json()
        # the form's CRLF is stored as LF (pixelfox.text.checked)
        assert (r.status, got["title"], got["description"]) == (200, spoof, "new\nwords"), got
    token = await owner.csrf(f"/i/{image['id']}")
    status, page, _ = await owner.post(f"/i/{image['id']}/edit", {"csrf_token": token, "title": spoof + "2"})
    assert status == 400 and "title contains a bidirectional control character (U+202E)" in page


async def test_oembed_answers_only_for_public_images_of_this_site(cluster: Any, http: aiohttp.ClientSession) -> None:
    owner, hdr, image = await new_user_with_image(http, cluster.web_url)
    page_url = f"{cluster.web_url}/i/{image['id']}"
    anon = Browser(http, cluster.web_url)
    status, body = await api(anon, "GET", f"/oembed?url={quote(page_url)}")
    assert status == 200 and body["type"] == "photo"
    port = int(cluster.web_url.rsplit(":", 1)[1])
    for foreign in (f"https://evil.example/i/{image['id']}", page_url.replace(f":{port}", f":{port + 1}"),
                    page_url.replace("http://", "https://"), f"/i/{image['id']}", f"//evil.example/i/{image['id']}"):
        assert await api(anon, "GET", f"/oembed?url={quote(foreign)}") == (404, NOT_FOUND), foreign
    unknown = await api(anon, "GET", f"/oembed?url={quote(cluster.web_url + '/i/NoSuchImage0')}")
    status, _ = await api(owner, "PATCH", f"/api/v1/images/{image['id']}", {"visibility": "private"}, hdr)
    assert status == 200
    private = await api(anon, "GET", f"/oembed?url={quote(page_url)}")
    assert private == unknown == (404, NOT_FOUND)
    # no url at all is the caller's mistake, said as such (it was the 404 of an unknown image)
    said = {"error": {"code": "bad-request",
                      "message": "give the URL of an image's share page: /oembed?url=<page URL>"}}
    assert await api(anon, "GET", "/oembed") == await api(anon, "GET", "/oembed?url=%20") == (400, said)


@pytest.mark.parametrize("evil", ["/\t/evil.example", "/%09/evil.example", "//evil.example", "/\\evil.example",
                                  "/%5Cevil.example", "https://evil.example/", "/\n/evil.example",
                                  "javascript:alert(1)", "/%2F%2Fevil.example", "evil.example"])
async def test_login_next_stays_on_this_site(cluster: Any, http: aiohttp.ClientSession, evil: str) -> None:
    b = Browser(http, cluster.web_url)
    name = _user()
    await b.register(name)
    await b.post("/logout", {"csrf_token": await b.csrf("/")})
    status, page, _ = await b.get(f"/login?next={quote(evil, safe='')}")
    assert status == 200 and '<input type="hidden" name="next" value="/">' in page
    token = await b.csrf("/login")
    form = {"csrf_token": token, "name": name, "password": PASSWORD, "next": evil}
    status, _, headers = await b.post("/login", form)
    assert status == 303 and headers["Location"] == "/"


async def test_login_next_keeps_a_local_path(cluster: Any, http: aiohttp.ClientSession) -> None:
    b = Browser(http, cluster.web_url)
    name = _user()
    await b.register(name)
    await b.post("/logout", {"csrf_token": await b.csrf("/")})
    token = await b.csrf("/login")
    status, _, headers = await b.post("/login", {"csrf_token": token, "name": name, "password": PASSWORD,
                                                 "next": "/my?before=abc"})
    assert status == 303 and headers["Location"] == "/my?before=abc"


async def test_last_page_has_no_cursor(cluster: Any, http: aiohttp.ClientSession) -> None:
    b = Browser(http, cluster.web_url)
    await b.register(_user())
    hdr = await csrf_header(b)
    for _ in range(3):  # bytes of their own: one user's second upload of the same file is the same image
        status, body, _ = await b.post("/api/v1/images?wait=0", _unique_upload_form(), hdr)
        assert status == 201, body
    status, page = await api(b, "GET", "/api/v1/images?limit=3")
    assert status == 200 and len(page["images"]) == 3 and page["next_before"] is None
    # a parameter given twice is refused (the first was taken silently), for albums too
    for path, name in (("/api/v1/images?limit=5&limit=6", "limit"), ("/api/v1/albums?before=a&before=b", "before")):
        said = {"error": {"code": "bad-request",
                          "message": f"{name} was sent more than once in the query string: send it once"}}
        assert await api(b, "GET", path) == (400, said), path
    status, first = await api(b, "GET", "/api/v1/images?limit=2")
    assert status == 200 and len(first["images"]) == 2 and first["next_before"], first
    status, second = await api(b, "GET", f"/api/v1/images?limit=2&before={first['next_before']}")
    assert status == 200 and [i["id"] for i in second["images"]] == [page["images"][2]["id"]]
    assert second["next_before"] is None
    # the last item seen (its id, as older clients send) works as a cursor too
    status, by_id = await api(b, "GET", f"/api/v1/images?limit=2&before={first['images'][1]['id']}")
    assert status == 200 and by_id["images"] == second["images"]
    # the cursor item deleted meanwhile: the next page is still the next page, not the first again
    status, _ = await api(b, "DELETE", f"/api/v1/images/{first['images'][1]['id']}", None, hdr)
    assert status in (200, 204)
    status, after = await api(b, "GET", f"/api/v1/images?limit=2&before={first['next_before']}")
    assert status == 200 and [i["id"] for i in after["images"]] == [page["images"][2]["id"]], after
    # not a cursor (made up, or another user's image): a 400, where it used to answer the first page
    other = Browser(http, cluster.web_url)
    await other.register(_user())
    status, body, _ = await other.post("/api/v1/images?wait=0", _unique_upload_form(), await csrf_header(other))
    assert status == 201, body
    for bad in ("zzz", json.loads(body)["id"]):
        status, answer = await api(b, "GET", f"/api/v1/images?before={bad}")
        assert status == 400 and "is not a cursor from this list" in answer["error"]["message"], (bad, answer)
        # a browser page with such a link (a deleted image's slug, a hand-edited URL) shows the first page
        for page_path in ("/my", "/albums"):
            status, _, headers = await b.get(f"{page_path}?before={bad}")
            assert (status, headers.get("Location")) == (303, page_path), (page_path, status, headers)
    status, lower = await api(b, "GET", f"/api/v1/images?limit=2&before={first['next_before'].lower()}")
    assert status == 200 and lower["images"] == after["images"]  # ULIDs are case-insensitive

    for title in ("one", "two"):
        assert (await api(b, "POST", "/api/v1/albums", {"title": title}, hdr))[0] == 201
    status, albums = await api(b, "GET", "/api/v1/albums?limit=2")
    assert status == 200 and len(albums["albums"]) == 2 and albums["next_before"] is None
    status, first = await api(b, "GET", "/api/v1/albums?limit=1")
    assert status == 200 and first["next_before"], first
    status, second = await api(b, "GET", f"/api/v1/albums?limit=1&before={first['next_before']}")
    assert status == 200 and len(second["albums"]) == 1 and second["next_before"] is None


async def test_user_names_are_unique_ignoring_case(cluster: Any, http: aiohttp.ClientSession) -> None:
    name = f"Case_{uuid.uuid4().hex[:10]}"
    await Browser(http, cluster.web_url).register(name)
    for variant in (name.lower(), name.upper(), name.swapcase()):
        b = Browser(http, cluster.web_url)
        token = await b.csrf("/register")
        form = {"csrf_token": token, "name": variant, "password": PASSWORD, "password2": PASSWORD}
        status, body, _ = await b.post("/register", form)
        assert status == 400 and "That user name is taken." in body, variant
    r = cluster.pixelfox("users", "create", name.lower(), "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode != 0  # the CLI goes through the same manager check
    b = Browser(http, cluster.web_url)
    await b.login(name)  # the exact registered name still logs in
    status, body, _ = await b.get("/api/v1/me")
    assert status == 200 and json.loads(body)["name"] == name


async def test_a_password_read_from_stdin_loses_its_crlf(cluster: Any, http: aiohttp.ClientSession) -> None:
    """``users create --password-stdin`` from a file saved on Windows kept the CR: the account's
    password ended in a character no login form sends. A second line is refused, not dropped."""
    name = f"crlf_{uuid.uuid4().hex[:10]}"
    two = cluster.pixelfox("users", "create", name, "--password-stdin", input=PASSWORD + "\nsecond\n")
    assert two.returncode == 2 and "--password-stdin reads one line, and stdin held 2" in two.stderr, two.stderr
    made = cluster.pixelfox("users", "create", name, "--password-stdin", input=PASSWORD + "\r\n")
    assert made.returncode == 0, made.stderr
    b = Browser(http, cluster.web_url)
    await b.login(name)  # fails (401) when the stored password ends in CR
    status, body, _ = await b.get("/api/v1/me")
    assert status == 200 and json.loads(body)["name"] == name


def _form(*parts: tuple[str, bytes]) -> bytes:
    """A raw multipart/form-data body (boundary ``XB``) of ``(name+filename header, content)`` parts."""
    body = b"".join(b"--XB\r\nContent-Disposition: form-data; " + head + b"\r\nContent-Type: image/jpeg\r\n\r\n"
                    + data + b"\r\n" for head, data in parts)
    return body + b"--XB--\r\n"


async def _post_raw(http: aiohttp.ClientSession, url: str, key: str, body: bytes) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "multipart/form-data; boundary=XB", "Authorization": f"Bearer {key}"}
    async with http.post(url, data=io.BytesIO(body), headers=headers) as r:  # raw bytes > 1 MiB warn
        return r.status, await r.json()


async def test_multipart_forms_that_cannot_be_one_upload_are_refused(cluster: Any,
                                                                     http: aiohttp.ClientSession) -> None:
    """A form with two 'file' fields is a 400 (the second file used to be dropped without a word);
    a file name with a control character, which aiohttp refuses in a part header, is a 400 in our
    words (not aiohttp's, echoing the header) on both upload endpoints, never a 500."""
    photo = PHOTO.read_bytes()
    v1, chevereto = f"{cluster.web_url}/api/v1/images", f"{cluster.web_url}/api/1/upload?format=json"
    status, answer = await _post_raw(http, v1, cluster.admin_api_key, _form(
        (b'name="file"; filename="one.jpg"', photo), (b'name="file"; filename="two.jpg"', photo)))
    assert (status, answer["error"]["code"]) == (400, "bad-request"), answer
    assert answer["error"]["message"] == "one file per request: the form has a second 'file' field"

    bad_name = b'name="file"; filename="a\x01b.jpg"'
    status, answer = await _post_raw(http, v1, cluster.admin_api_key, _form((bad_name, photo)))
    said = ("malformed multipart body: a part header is invalid; a control character in a file name "
            "(Content-Disposition) is the usual cause")
    assert status == 400 and answer["error"]["message"] == said, answer
    status, answer = await _post_raw(http, chevereto, cluster.admin_api_key,
                                     _form((b'name="source"; filename="a\x01b.jpg"', photo)))
    assert status == 400 and answer["error"]["message"] == said, answer
