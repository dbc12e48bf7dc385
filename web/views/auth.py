"""Accounts: register, log in, log out (HTML forms with CSRF tokens)."""

from __future__ import annotations

import hashlib
import re

from aiohttp import web

from pixelfox import errors
from web.keys import MANAGER, REDIS, SETTINGS
from web.sessions import login, logout
from web.views.common import checked_form, render

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def _next_url(value: str) -> str:
    """Only local paths, so ``?next=`` cannot send people elsewhere."""
    return value if value.startswith("/") and not value.startswith("//") and "\\" not in value else "/"


async def register_page(request: web.Request) -> web.Response:
    return await render(request, "register.html", {"name": "", "error": ""})


async def register(request: web.Request) -> web.StreamResponse:
    _session, form = await checked_form(request)
    name, password = form.get("name", "").strip(), form.get("password", "")
    error = ""
    if not NAME_RE.match(name):
        error = "User names are 3-32 letters, digits, '.', '_' or '-'."
    elif not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        error = f"Passwords need at least {MIN_PASSWORD} characters."
    elif password != form.get("password2", ""):
        error = "The two passwords differ."
    if not error:
        try:
            user = await request.app[MANAGER].create_user(name, password)
        except (errors.AlreadyExists, errors.BadRequest) as exc:
            error = "That user name is taken." if isinstance(exc, errors.AlreadyExists) else exc.message
        else:
            await login(request, user)
            raise web.HTTPSeeOther("/")
    return await render(request, "register.html", {"name": name, "error": error}, status=400)


async def login_page(request: web.Request) -> web.Response:
    ctx = {"name": "", "error": "", "next": _next_url(request.query.get("next", "/"))}
    return await render(request, "login.html", ctx)


def _throttle_keys(request: web.Request, name: str) -> tuple[str, str]:
    digest = hashlib.sha256(name.lower().encode()).hexdigest()[:32]
    return f"pixelfox:{{login}}:fail:acct:{digest}", f"pixelfox:{{login}}:fail:ip:{request.remote or '-'}"


async def _throttled(request: web.Request, name: str) -> int:
    """Seconds to wait when this account or address failed too often (RELIABILITY C5), else 0."""
    settings, redis = request.app[SETTINGS], request.app[REDIS]
    acct, ip = _throttle_keys(request, name)
    counts = await redis.mget(acct, ip)
    limits = (settings.login_max_failures, settings.login_max_failures * 5)
    for key, count, limit in zip((acct, ip), counts, limits, strict=True):
        if count is not None and int(count) >= limit:
            return max(int(await redis.ttl(key)), 1)
    return 0


async def _record_failure(request: web.Request, name: str) -> None:
    window = request.app[SETTINGS].login_window_s
    async with request.app[REDIS].pipeline(transaction=False) as pipe:
        for key in _throttle_keys(request, name):
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
        await pipe.execute()


async def login_post(request: web.Request) -> web.StreamResponse:
    _session, form = await checked_form(request)
    name, password = form.get("name", "").strip(), form.get("password", "")
    next_url = _next_url(form.get("next", "/"))
    ctx = {"name": name, "error": "", "next": next_url}
    wait = await _throttled(request, name)
    if wait:
        ctx["error"] = f"Too many failed logins; try again in {wait} s."
        response = await render(request, "login.html", ctx, status=429)
        response.headers["Retry-After"] = str(wait)
        return response
    try:
        user = await request.app[MANAGER].verify_password(name, password)
    except (errors.InvalidCredentials, errors.Unauthenticated, errors.NotFound, errors.BadRequest):
        await _record_failure(request, name)
        ctx["error"] = "Invalid user name or password."
        return await render(request, "login.html", ctx, status=401)
    await request.app[REDIS].delete(_throttle_keys(request, name)[0])
    await login(request, user)
    raise web.HTTPSeeOther(next_url)


async def logout_post(request: web.Request) -> web.StreamResponse:
    await checked_form(request)
    await logout(request)
    raise web.HTTPSeeOther("/")
