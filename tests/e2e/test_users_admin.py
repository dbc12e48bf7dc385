"""An admin disables and enables a user, on the shared running cluster: with ``pixelfox users
disable/enable`` and with the button on ``/admin/users``. A disabled user cannot log in, their API
keys and web sessions answer 401 "this account is disabled; ask an administrator" at once, and their
images stay."""

from __future__ import annotations

import json
import re
from pathlib import Path
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


async def _manager_says_disabled(cluster: Any, user_id: str) -> bool:
    """``disabled`` in the manager's ``GetUser`` answer for a user (the cluster credential, as the web node asks)."""
    import grpc

    from pixelfox.grpcx.auth import node_metadata
    from pixelfox.v1 import manager_pb2, manager_pb2_grpc

    async with grpc.aio.insecure_channel(cluster.manager_address.split(",")[0]) as ch:
        got = await manager_pb2_grpc.ManagerServiceStub(ch).GetUser(
            manager_pb2.GetUserRequest(id=user_id), metadata=node_metadata(cluster.secret), timeout=10)
    return bool(got.disabled)


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
    r = cluster.pixelfox("users", "disable", name)  # idempotent: it said "disabled user" again
    assert (r.returncode, r.stdout, r.stderr) == (0, f"user {name} was already disabled; nothing changed\n", "")
    assert await _manager_says_disabled(cluster, json.loads(me)["id"]) is True  # GetUser said False
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
    status, html, _ = await admin.get("/admin/users")
    assert f'id="notice">{name} is enabled.</p>' in html, html
    # a second click (another admin's tab) says nothing changed, as `pixelfox users enable` does
    status, _, _ = await admin.post(f"/admin/users/{name}", {"csrf_token": token, "action": "enable"})
    status, html, _ = await admin.get("/admin/users")
    assert f'id="notice">{name} was already enabled; nothing changed.</p>' in html, html
    assert (await _status(http, images_url, key))[0] == 200
    status, _ = await _login_status(owner, name)
    assert status == 303 and await owner.me() == 200

    status, _, _ = await admin.post(f"/admin/users/{name}", {"action": "disable"})  # no CSRF token
    assert status == 403 and await owner.me() == 200
    status, _, _ = await admin.post(f"/admin/users/{name}", {"csrf_token": token, "action": "disable"})
    assert status == 303 and await owner.me() == 401
    r = cluster.pixelfox("users", "enable", name)
    assert (r.returncode, r.stdout.strip()) == (0, f"enabled user {name}"), r.stderr
    r = cluster.pixelfox("users", "enable", name)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"user {name} was already enabled; nothing changed\n", "")


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
    # the id ends the line: "key id ID: revoke ..." had users copy "ID:" with its colon
    told = re.fullmatch(r"revoke this key with: pixelfox keys revoke ([0-9A-Z]{26})\n", made.stderr)
    assert told, made.stderr
    r = cluster.pixelfox("users", "disable", name)
    assert r.returncode == 0, r.stderr
    # a key for a disabled user is made (the manager keeps their keys for when they are enabled), with a warning
    off = cluster.pixelfox("keys", "create", name)
    off_id = off.stderr.splitlines()[-1].split()[-1] if off.stderr else ""  # the revoke line stays last
    assert (off.returncode, off.stderr) == (0, (
        f"warning: user {name} is disabled, so this key is refused until you run `pixelfox users enable {name}`\n"
        f"revoke this key with: pixelfox keys revoke {off_id}\n"))
    assert (await _status(http, f"{cluster.web_url}/api/v1/images", off.stdout.strip()))[0] == 401
    assert cluster.pixelfox("keys", "revoke", off_id).returncode == 0
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
    r = cluster.pixelfox("keys", "revoke", key_id.group(1).lower())  # idempotent: it said "revoked" again
    assert (r.returncode, r.stdout, r.stderr) == (0, f"key {key_id.group(1)} was already revoked "
                                                     f"({revoked.replace('T', ' ')} UTC); nothing changed\n", "")

    other = _user()
    await Browser(http, cluster.web_url).register(other)
    r = cluster.pixelfox("keys", "list", "--user", name, "--api-key", _key(cluster, other))
    assert r.returncode == 2 and r.stderr == "pixelfox: only admins list another user's API keys (forbidden)\n"
    r = cluster.pixelfox("keys", "revoke", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert r.returncode == 2 and r.stderr == "pixelfox: no API key '01ARZ3NDEKTSV4RRFFQ69G5FAV' (not-found)\n"
    r = cluster.pixelfox("keys", "revoke", "x" * 5000)  # it echoed all 5000 characters
    assert r.returncode == 2 and r.stderr == (
        f"pixelfox: no API key '{'x' * 40}...': a key id is 26 letters and digits, as `pixelfox keys list --user "
        "NAME` shows it (not-found)\n"), r.stderr
    r = cluster.pixelfox("keys", "revoke", " ")
    assert r.returncode == 2 and "a key id cannot be empty" in r.stderr, r.stderr
    r = cluster.pixelfox("keys", "list", "--user", "nobody_here_2")
    assert r.returncode == 2 and r.stderr == "pixelfox: no user named 'nobody_here_2' (not-found)\n"


async def test_the_local_command_cannot_disable_the_user_whose_key_it_uses(cluster: Any, corpus: Path) -> None:
    """``pixelfox users disable admin`` in the cluster's folder disabled the user whose API key the
    local commands use (``pixelfox up`` made it), and ``put``, ``uploads``... all stopped; it is now
    refused as an admin disabling themself is, in any case of the name. Disabled another way (another
    admin's key), the local commands say the user is disabled and how to enable it, not that the key
    was revoked, and that enable works with the local credential."""
    state_file = (cluster.root / ".pixelfox" / "cluster.json").resolve()
    photo = str(corpus / "photos" / "painting_rgb.png")
    try:
        for name in ("admin", "ADMIN"):
            r = cluster.pixelfox("users", "disable", name)
            assert (r.returncode, r.stderr) == (2, "pixelfox: you cannot disable your own account (admin owns the "
                                                   "API key this command uses) (forbidden)\n"), r.stdout
        assert cluster.pixelfox("uploads").returncode == 0  # the local key still works

        other = _new_admin(cluster)
        r = cluster.pixelfox("users", "disable", "admin", "--api-key", _key(cluster, other))
        assert (r.returncode, r.stdout) == (0, "disabled user admin (an admin)\n"), r.stderr  # was "admin admin"
        hint = (f"hint: the local admin's API key in {state_file} belongs to user admin, which is disabled; enable "
                f"it with `pixelfox users enable admin` in {cluster.root.resolve()}, or pass --api-key with a key "
                "of your own\n")
        r = cluster.pixelfox("uploads")
        assert (r.returncode, r.stderr) == (2, "pixelfox: this account is disabled; ask an administrator "
                                               "(account-disabled)\n" + hint)
        r = cluster.pixelfox("put", photo)
        assert r.returncode != 0 and r.stderr.endswith(hint) and "revoked" not in r.stderr, r.stderr
        # only those two use the key alone: the others call with the cluster credential and work (README)
        for args in (("status", "--json"), ("users", "list"), ("jobs",)):
            r = cluster.pixelfox(*args)
            assert r.returncode == 0 and "disabled" not in r.stderr, (args, r.stderr)
        # the next `pixelfox up` keeps that key (enabling admin revives it) and admin's password file
        # (the right password of a disabled admin is refused too: it was taken for a changed one)
        local, password_file = cluster.local, cluster.local.admin_password_file
        assert password_file.is_file()
        made, local.made_admin_password = local.made_admin_password, False
        try:
            assert await local.ensure_admin() == cluster.admin_api_key
            assert await local.forget_changed_password() is False and password_file.is_file()
        finally:
            local.made_admin_password = made
        r = cluster.pixelfox("users", "enable", "admin")  # the cluster credential still may
        assert (r.returncode, r.stdout) == (0, "enabled user admin (an admin)\n"), r.stderr
        assert cluster.pixelfox("uploads").returncode == 0
    finally:
        cluster.pixelfox("users", "enable", "admin")  # the old code disabled it: leave the shared cluster usable


async def test_names_are_looked_up_in_any_case(cluster: Any, http: aiohttp.ClientSession) -> None:
    """Names are unique ignoring case, but ``keys list --user BOB``, ``users disable/enable``, ``keys
    create`` and the web login took only the exact spelling ("no user named 'BOB'")."""
    name = "Mixed_" + _user()[4:]
    await Browser(http, cluster.web_url).register(name)
    upper, lower = name.upper(), name.lower()
    made = cluster.pixelfox("keys", "create", upper)
    assert made.returncode == 0, made.stderr
    r = cluster.pixelfox("keys", "list", "--user", lower)
    assert r.returncode == 0 and made.stdout.strip()[:10] in r.stdout, (r.stdout, r.stderr)
    r = cluster.pixelfox("users", "disable", upper)
    assert (r.returncode, r.stdout) == (0, f"disabled user {name}\n"), r.stderr  # its own spelling
    assert (await _login_status(Browser(http, cluster.web_url), lower))[0] == 401
    r = cluster.pixelfox("users", "enable", lower)
    assert (r.returncode, r.stdout) == (0, f"enabled user {name}\n"), r.stderr
    b = Browser(http, cluster.web_url)
    status, _ = await _login_status(b, upper)
    assert status == 303
    status, body, _ = await b.get("/api/v1/me")
    assert status == 200 and json.loads(body)["name"] == name, body


async def test_users_list_and_keys_list_print_json(cluster: Any, http: aiohttp.ClientSession) -> None:
    """``users list --json`` and ``keys list --user NAME --json``: one JSON document on stdout, like
    ``status --json`` and ``jobs --json``."""
    name = _user()
    await Browser(http, cluster.web_url).register(name)
    made = cluster.pixelfox("keys", "create", name, "--label", "for json")
    assert made.returncode == 0, made.stderr
    key_id = made.stderr.split()[-1]
    assert cluster.pixelfox("users", "disable", name).returncode == 0

    r = cluster.pixelfox("users", "list", "--json")
    assert r.returncode == 0, r.stderr
    users = json.loads(r.stdout)["users"]
    row = next(u for u in users if u["name"] == name)
    assert re.fullmatch(r"[0-9A-Z]{26}", row.pop("id")) and re.fullmatch(r"20\d\d-\d\d-\d\dT.+", row.pop("created_at"))
    assert row == {"name": name, "role": "user", "disabled": True, "images": 0, "bytes": 0}
    assert next(u for u in users if u["name"] == "admin")["role"] == "admin"
    assert cluster.pixelfox("users", "enable", name).returncode == 0

    r = cluster.pixelfox("keys", "list", "--user", name, "--json")
    assert r.returncode == 0, r.stderr
    keys = json.loads(r.stdout)["keys"]
    assert len(keys) == 1 and re.fullmatch(r"20\d\d-\d\d-\d\dT.+", keys[0].pop("created_at")), keys
    assert keys == [{"id": key_id, "prefix": made.stdout.strip()[:10], "label": "for json", "revoked_at": None}]
    assert cluster.pixelfox("keys", "revoke", key_id).returncode == 0
    keys = json.loads(cluster.pixelfox("keys", "list", "--user", name, "--json").stdout)["keys"]
    assert re.fullmatch(r"20\d\d-\d\d-\d\dT.+", keys[0]["revoked_at"] or ""), keys
