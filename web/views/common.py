"""Helpers shared by the handlers: form CSRF checks, Origin checks, rendering."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import Session, get_session
from yarl import URL

from pixelfox import errors
from web.keys import SETTINGS, STATE
from web.sessions import CSRF_FIELD, CSRF_KEY, csrf_token, current_user, require_csrf

EXPIRED_MESSAGE = "The page had expired, so nothing was done. Please try again."
"""Shown on the login or register page after :func:`checked_form` found the form's session gone."""


def check_origin(request: web.Request) -> None:
    """Refuse a state-changing request that a browser says comes from another site (RELIABILITY C3)."""
    if request.headers.get("Sec-Fetch-Site", "") == "cross-site":
        raise errors.Forbidden("cross-site request refused")
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        allowed = {origin_of(URL(str(request.url))), origin_of(URL(request.app[STATE].public_url or "/"))}
        if origin_of(URL(origin)) not in allowed:
            raise errors.Forbidden("cross-origin request refused")
    elif origin == "null":
        raise errors.Forbidden("cross-origin request refused")


def origin_of(url: URL) -> str:
    """``scheme://host:port`` of an absolute URL (default ports made explicit), ``""`` for a relative one."""
    if not url.is_absolute():
        return ""
    return f"{url.scheme}://{url.host}:{url.explicit_port or url.port}"


async def checked_form(request: web.Request) -> tuple[Session, dict[str, str]]:
    """The posted form after the Origin and CSRF checks (403 otherwise)."""
    check_origin(request)
    try:
        form = await request.post()
    except ValueError as exc:  # aiohttp: no starting boundary, a broken part
        raise errors.BadRequest("the form body is malformed") from exc
    session = await get_session(request)
    supplied = _text(form.get(CSRF_FIELD))
    if supplied and session.get(CSRF_KEY) is None:
        # our own page's form whose session ended meanwhile (expired, logged out in another tab):
        # nothing is done, and the user is sent where they can go on instead of to a bare 403
        raise web.HTTPSeeOther(_expired_target(request, form))
    require_csrf(session, supplied)
    return session, {k: _text(v) for k, v in form.items()}


def _expired_target(request: web.Request, form: Any) -> str:
    """Where a form post whose session expired goes: the register page again, or the login page
    with ``next`` = the login form's own ``next`` or the page the form was on (its same-site
    ``Referer`` path; the login page checks ``next`` again)."""
    if request.path == "/register":
        return "/register?expired=1"
    back = _text(form.get("next")) if request.path == "/login" else ""
    if not back:
        referer = URL(request.headers.get("Referer", ""))
        here = origin_of(URL(str(request.url)))
        back = referer.path_qs if referer.is_absolute() and origin_of(referer) == here else "/"
    return f"/login?expired=1&next={quote(back or '/', safe='/')}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


async def render(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, ctx, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def context_processor(request: web.Request) -> dict[str, Any]:
    """``user``, a lazy ``csrf_token()`` (only pages with forms create a session) and site name."""
    session = await get_session(request)
    return {
        "user": current_user(session),
        "csrf_token": lambda: csrf_token(session),
        "site_name": request.app[SETTINGS].site_name,
        "request": request,
    }
