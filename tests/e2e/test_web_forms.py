"""Web forms and pages that a fresh tester found saying the wrong thing: password rules (Settings,
register, ``pixelfox users create``), the image edit form's visibility, the deletion-link pages,
the admin counts, camera dates and Markdown codes."""

from __future__ import annotations

import html
import json
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_web import PASSWORD, Browser, _user
from tests.e2e.test_web_community import _unique_png, api, csrf_header

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


async def _change(b: Browser, new: str, old: str = PASSWORD) -> tuple[int, str]:
    form = {"csrf_token": await b.csrf("/settings"), "old_password": old, "new_password": new, "new_password2": new}
    status, html, _ = await b.post("/settings/password", form)
    return status, html


async def test_password_messages_say_the_rule_broken(cluster: Any, http: aiohttp.ClientSession) -> None:
    name = _user()
    a, other = Browser(http, cluster.web_url), Browser(http, cluster.web_url)
    await a.register(name)
    await other.login(name)

    status, html = await _change(a, "x" * 1025)
    assert status == 400 and "New password must be at most 1024 characters." in html, html
    status, html = await _change(a, " " * 8)
    assert status == 400 and "New password must not be only spaces or other white space." in html, html
    status, html = await _change(a, PASSWORD)  # the same again: said so, nothing changes
    assert status == 400 and "The new password is the same as the current one." in html, html
    assert await other.me() == 200  # no other session ended
    status, html = await _change(a, PASSWORD, old="wrong password")
    assert status == 400 and "The current password is wrong." in html, html

    b = Browser(http, cluster.web_url)
    token = await b.csrf("/register")
    spaces = " " * 10
    status, html, _ = await b.post("/register", {"csrf_token": token, "name": _user(), "password": spaces,
                                                 "password2": spaces})
    assert status == 400 and "Password must not be only spaces or other white space." in html, html

    for password, said in (("y" * 1025, "password must be at most 1024 characters"),
                           (" " * 8, "password must not be only spaces or other white space")):
        r = cluster.pixelfox("users", "create", _user(), "--password-stdin", input=password + "\n")
        assert r.returncode != 0 and said in r.stderr, (r.returncode, r.stderr)
    r = cluster.pixelfox("users", "create", _user(), "--password-stdin", input="short\n")
    assert r.returncode != 0 and "password must be at least 8 characters" in r.stderr, r.stderr


async def _image(b: Browser) -> tuple[dict[str, str], str]:
    """A new image of ``b``'s (random pixels, not waited for): ``(CSRF header, slug)``."""
    hdr = await csrf_header(b)
    form = aiohttp.FormData()
    form.add_field("file", _unique_png(), filename="pic.png", content_type="image/png")
    status, body, _ = await b.post("/api/v1/images", form, hdr)
    assert status == 201, body
    return hdr, json.loads(body)["id"]


async def test_edit_form_refuses_an_unknown_visibility(cluster: Any, http: aiohttp.ClientSession) -> None:
    b = Browser(http, cluster.web_url)
    await b.register(_user())
    hdr, slug = await _image(b)
    status, said = await api(b, "PATCH", f"/api/v1/images/{slug}", {"visibility": "secret"}, hdr)
    # the two values, not a regular expression ("String should match pattern '^(public|private)$'")
    assert status == 400 and said["error"]["message"] == "visibility: Input should be 'public' or 'private'", said
    token = await b.csrf(f"/i/{slug}")
    status, page, _ = await b.post(f"/i/{slug}/edit", {"csrf_token": token, "title": "new", "visibility": "secret"})
    assert status == 400 and said["error"]["message"] in html.unescape(page), page
    status, body = await api(b, "GET", f"/api/v1/images/{slug}")
    assert status == 200 and body["visibility"] == "public" and not body.get("title"), body  # nothing saved
    status, _, _ = await b.post(f"/i/{slug}/edit", {"csrf_token": token, "visibility": "private"})
    assert status == 303
    status, body = await api(b, "GET", f"/api/v1/images/{slug}")
    assert status == 200 and body["visibility"] == "private", body
