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
    assert status == 400, html
    assert "New password must not be only spaces, other white space or invisible characters." in html, html
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
    assert status == 400, html
    assert "Password must not be only spaces, other white space or invisible characters." in html, html

    for password, said in (("y" * 1025, "password must be at most 1024 characters"),
                           (" " * 8, "password must not be only spaces, other white space or invisible characters")):
        r = cluster.pixelfox("users", "create", _user(), "--password-stdin", input=password + "\n")
        assert r.returncode != 0 and said in r.stderr, (r.returncode, r.stderr)
    # eight zero-width spaces show as nothing (they were taken)
    b = Browser(http, cluster.web_url)
    token = await b.csrf("/register")
    status, html, _ = await b.post("/register", {"csrf_token": token, "name": _user(), "password": "\u200b" * 8,
                                                 "password2": "\u200b" * 8})
    assert status == 400 and "Password must not be only spaces, other white space or invisible characters." in html
    # a name with a line break at its end made a second "eve" nobody could log in to
    twin = _user()
    r = cluster.pixelfox("users", "create", twin + "\n", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 2 and "user name must be 3-32 characters" in r.stderr, (r.returncode, r.stderr)
    listed = cluster.pixelfox("users", "list", "--json")
    assert listed.returncode == 0 and twin not in listed.stdout
    # a password longer than any that can be set is wrong, whatever its first 1024 characters
    long_name, long_password = _user(), "P" * 1024
    r = cluster.pixelfox("users", "create", long_name, "--password-stdin", input=long_password + "\n")
    assert r.returncode == 0, r.stderr
    guess = Browser(http, cluster.web_url)
    token = await guess.csrf("/login")
    status, html, _ = await guess.post("/login", {"csrf_token": token, "name": long_name,
                                                  "password": long_password + "wrong suffix"})
    assert status == 401 and await guess.me() == 401, html[-500:]
    status, _, _ = await guess.post("/login", {"csrf_token": token, "name": long_name, "password": long_password})
    assert status == 303 and await guess.me() == 200
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
