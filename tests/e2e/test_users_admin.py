"""An admin disables and enables a user, on the shared running cluster: with ``pixelfox users
disable/enable`` and with the button on ``/admin/users``. A disabled user cannot log in, their API
keys and web sessions answer 401 "this account is disabled; ask an administrator" at once, and their
images stay."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_web import PASSWORD, Browser, _user
from tests.e2e.test_web_community import new_user_with_image

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
DISABLED = "this account is disabled; ask an administrator"


async def _status(http: aiohttp.ClientSession, url: str, key: str) -> tuple[int, Any]:
    async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as r:
        body = await r.text()
        return r.status, json.loads(body) if r.content_type == "application/json" else body


async def _login_status(b: Browser, name: str) -> tuple[int, str]:
    token = await b.csrf("/login")
    status, html, _ = await b.post("/login", {"csrf_token": token, "name": name, "password": PASSWORD})
    return status, html


def _new_admin(cluster: Any) -> str:
    name = _user()
    r = cluster.pixelfox("users", "create", name, "--admin", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    return name


def _key(cluster: Any, name: str) -> str:
    r = cluster.pixelfox("keys", "create", name)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


async def test_disable_stops_login_keys_and_sessions_and_keeps_images(cluster: Any, http: aiohttp.ClientSession
                                                                       ) -> None:
    owner, _hdr, image = await new_user_with_image(http, cluster.web_url)
    status, me, _ = await owner.get("/api/v1/me")
    assert status == 200, me
    name = json.loads(me)["name"]
    other = Browser(http, cluster.web_url)
    await other.login(name)
    key = _key(cluster, name)
    images_url = f"{cluster.web_url}/api/v1/images"
    assert (await _status(http, images_url, key))[0] == 200

    r = cluster.pixelfox("users", "disable", name)
    assert (r.returncode, r.stdout.strip()) == (0, f"disabled user {name}"), r.stderr
    status, body = await _status(http, images_url, key)
    assert status == 401 and body["error"] == {"code": "account-disabled", "message": DISABLED}
    assert await owner.me() == 401 and await other.me() == 401  # both sessions ended at once
    status, html = await _login_status(Browser(http, cluster.web_url), name)
    assert status == 401 and "This account is disabled" in html
    status, html = await _login_status(Browser(http, cluster.web_url), name + "x")  # unknown: as before
    assert status == 401 and "Invalid user name or password" in html
    async with http.get(f"{cluster.web_url}/i/{image['id']}") as resp:  # the image stays
        assert resp.status == 200

    admin = Browser(http, cluster.web_url)
    await admin.login(_new_admin(cluster))
    status, html, _ = await admin.get("/admin/users")
    row = re.search(rf'<tr data-user="{re.escape(name)}">.*?</tr>', html, re.S)
    assert status == 200 and row, html
    assert '<td class="state bad">disabled</td>' in row.group(0) and 'value="enable"' in row.group(0)
    token = await admin.csrf("/admin/users")
    status, _, headers = await admin.post(f"/admin/users/{name}", {"csrf_token": token, "action": "enable"})
    assert status == 303 and headers["Location"] == "/admin/users"
    assert (await _status(http, images_url, key))[0] == 200
    status, _ = await _login_status(owner, name)
    assert status == 303 and await owner.me() == 200

    status, _, _ = await admin.post(f"/admin/users/{name}", {"action": "disable"})  # no CSRF token
    assert status == 403 and await owner.me() == 200
    status, _, _ = await admin.post(f"/admin/users/{name}", {"csrf_token": token, "action": "disable"})
    assert status == 303 and await owner.me() == 401
    r = cluster.pixelfox("users", "enable", name)
    assert (r.returncode, r.stdout.strip()) == (0, f"enabled user {name}"), r.stderr


async def test_a_disabled_users_browser_is_told_why(cluster: Any, http: aiohttp.ClientSession) -> None:
    """A browser whose session ended because an admin disabled its user was only "not logged in" (the
    API) or sent to the login page with nothing said; both now say the account is disabled, until
    the user is enabled again."""
    name = _user()
    owner, other = Browser(http, cluster.web_url), Browser(http, cluster.web_url)
    await owner.register(name)
    await other.login(name)
    assert await owner.me() == 200 and await other.me() == 200
    assert cluster.pixelfox("users", "disable", name).returncode == 0

    status, body, _ = await owner.get("/api/v1/me")
    assert (status, json.loads(body)) == (401, {"error": {"code": "account-disabled", "message": DISABLED}})
    status, _, headers = await owner.get("/my")
    assert (status, headers["Location"]) == (303, "/login?next=/my")
    status, html, _ = await owner.get("/login?next=/my")
    assert status == 200 and '<p class="error" role="alert">This account is disabled; ask an administrator.</p>' \
        in html, html
    status, html = await _login_status(Browser(http, cluster.web_url), name)  # the right password
    assert status == 401 and "This account is disabled; ask an administrator." in html

    assert cluster.pixelfox("users", "enable", name).returncode == 0
    status, body, _ = await other.get("/api/v1/me")  # enabled again: the old cookie is only logged out
    assert (status, json.loads(body)["error"]["message"]) == (401, "not logged in")
    status, html, _ = await other.get("/login")
    assert status == 200 and "disabled" not in html


async def test_refusals_are_one_line(cluster: Any, http: aiohttp.ClientSession) -> None:
    """Unknown user, an admin disabling themself (CLI with their key, and the web), a non-admin."""
    r = cluster.pixelfox("users", "disable", "nobody_here_1")
    assert r.returncode == 2 and r.stderr == "pixelfox: no user named 'nobody_here_1' (not-found)\n"
    admin_name = _new_admin(cluster)
    r = cluster.pixelfox("users", "disable", admin_name, "--api-key", _key(cluster, admin_name))
    assert r.returncode == 2 and r.stderr == "pixelfox: you cannot disable your own account (forbidden)\n"
    admin = Browser(http, cluster.web_url)
    await admin.login(admin_name)
    token = await admin.csrf("/admin/users")
    status, html, _ = await admin.post(f"/admin/users/{admin_name}", {"csrf_token": token, "action": "disable"})
    assert status == 403 and "you cannot disable your own account" in html
    assert await admin.me() == 200

    user_name = _user()
    user = Browser(http, cluster.web_url)
    await user.register(user_name)
    r = cluster.pixelfox("users", "disable", admin_name, "--api-key", _key(cluster, user_name))
    assert r.returncode == 2 and r.stderr == "pixelfox: only admins disable or enable users (forbidden)\n"
    token = await user.csrf("/settings")
    status, _, _ = await user.post(f"/admin/users/{admin_name}", {"csrf_token": token, "action": "disable"})
    assert status == 403
    assert (await _login_status(Browser(http, cluster.web_url), admin_name))[0] == 303


async def test_admin_lists_users_and_revokes_a_users_key(cluster: Any, http: aiohttp.ClientSession) -> None:
    """``pixelfox users list``, ``keys list --user NAME`` and ``keys revoke ID`` with the local admin's
    credential; a user's own key may not list another user's keys."""
    name = _user()
    await Browser(http, cluster.web_url).register(name)
    made = cluster.pixelfox("keys", "create", name)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()  # the key alone on stdout; its id, to revoke it, on stderr
    told = re.fullmatch(r"key id ([0-9A-Z]{26}): revoke it with: pixelfox keys revoke \1\n", made.stderr)
    assert told, made.stderr
    r = cluster.pixelfox("users", "disable", name)
    assert r.returncode == 0, r.stderr
    r = cluster.pixelfox("users", "list")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if f" {name} " in line)
    assert re.search(rf"{name}\s+│\s+user\s+│\s+disabled\s+│\s+0\s+│", row), row
    assert cluster.pixelfox("users", "enable", name).returncode == 0

    r = cluster.pixelfox("keys", "list", "--user", name)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if key[:10] in line]
    assert len(rows) == 1 and "cli" in rows[0] and rows[0].rstrip(" │").endswith("-"), r.stdout
    key_id = re.search(r"│\s*([0-9A-Z]{26})\s*│", rows[0])
    assert key_id and key_id.group(1) == told.group(1), (rows[0], made.stderr)  # was the key's first 10 characters
    images_url = f"{cluster.web_url}/api/v1/images"
    assert (await _status(http, images_url, key))[0] == 200
    r = cluster.pixelfox("keys", "revoke", key_id.group(1))
    assert (r.returncode, r.stdout.strip()) == (0, f"revoked {key_id.group(1)}"), r.stderr
    status, body = await _status(http, images_url, key)
    assert status == 401 and body["error"]["message"] == "invalid API key"
    r = cluster.pixelfox("keys", "list", "--user", name)
    revoked = next(line for line in r.stdout.splitlines() if key[:10] in line).split("│")[-2].strip()
    assert re.fullmatch(r"20\d\d-\d\d-\d\dT\d\d:\d\d", revoked), r.stdout

    other = _user()
    await Browser(http, cluster.web_url).register(other)
    r = cluster.pixelfox("keys", "list", "--user", name, "--api-key", _key(cluster, other))
    assert r.returncode == 2 and r.stderr == "pixelfox: only admins list another user's API keys (forbidden)\n"
    r = cluster.pixelfox("keys", "revoke", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert r.returncode == 2 and r.stderr == "pixelfox: no API key '01ARZ3NDEKTSV4RRFFQ69G5FAV' (not-found)\n"
    r = cluster.pixelfox("keys", "list", "--user", "nobody_here_2")
    assert r.returncode == 2 and r.stderr == "pixelfox: no user named 'nobody_here_2' (not-found)\n"
