"""Helpers shared by the handlers: form CSRF checks, Origin checks, rendering."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import Session, get_session
from yarl import URL

from pixelfox import errors
from web.keys import SETTINGS, STATE
from web.sessions import CSRF_FIELD, csrf_ok, csrf_token, current_user, require_csrf

EXPIRED_MESSAGE = "The page had expired, so nothing was done. Please try again."
"""Shown (as the session's one-time notice) after :func:`checked_form` found the form's token stale."""
NOTICE = "notice"  # session field: a one-time message the next rendered page shows


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
    """The posted form after the Origin and CSRF checks (403 otherwise), one value per field.

    Raises:
        BadRequest: a malformed body, or a field given more than once (none of our forms repeats
            one, and taking the first or the last would let ``action=resolve&action=delete`` do
            what the page did not show).
    """
    check_origin(request)
    try:
        form = await request.post()
    except ValueError as exc:  # aiohttp: no starting boundary, a broken part
        raise errors.BadRequest("the form body is malformed") from exc
    session = await get_session(request)
    supplied = _text(form.get(CSRF_FIELD))
    if supplied and not csrf_ok(session, supplied):
        # a form of one of our pages whose session ended or was replaced since (it expired, or the
        # user logged out or in again in another tab): nothing is done, and the user goes back to
        # that page (which sends them to log in if it needs that) with a notice, not to a bare 403
        session[NOTICE] = EXPIRED_MESSAGE
        raise web.HTTPSeeOther(_expired_target(request, form))
    require_csrf(session, supplied)
    repeated = sorted({k for k in form if len(form.getall(k)) > 1})
    if repeated:
        raise errors.BadRequest(f"the form gives {', '.join(map(repr, repeated))} more than once")
    return session, {k: _text(v) for k, v in form.items()}


def once_in_query(request: web.Request, *names: str) -> None:
    """BadRequest naming the first of ``names`` that the query string gives more than once (which
    would count? aiohttp's ``query.get`` takes the first)."""
    for name in names:
        if len(request.query.getall(name, [])) > 1:
            raise errors.BadRequest(f"{name} was sent more than once in the query string: send it once")


def local_path(value: str) -> str:
    """``value`` when it is a path on this site, else ``/``, so ``?next=`` cannot send people elsewhere.

    Browsers drop tabs and newlines inside URLs and read ``\\`` as ``/``, so ``/<TAB>/evil.example``
    would become ``//evil.example``: control characters, whitespace and backslashes are refused
    outright, in the value and in its percent-decoded form.
    """
    for candidate in (value, unquote(value)):
        if not _is_local_path(candidate):
            return "/"
    return value


def _is_local_path(value: str) -> bool:
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return False
    if any(c.isspace() or not c.isprintable() for c in value):
        return False
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc


def _expired_target(request: web.Request, form: Any) -> str:
    """Where a form post with a stale token goes: the login form to itself (keeping its ``next``,
    which the login page checks again), the register form to itself, any other form to the page
    it was on (its same-site ``Referer`` path), else ``/``."""
    if request.path == "/login":
        return f"/login?next={quote(_text(form.get('next')) or '/', safe='/')}"
    if request.path == "/register":
        return "/register"
    return referer_path(request) or "/"


def referer_path(request: web.Request) -> str:
    """The path and query of the page a form was on (its ``Referer``) when that page is on this
    site and the path is a plain local one (:func:`local_path`), else ``""``."""
    referer = URL(request.headers.get("Referer", ""))
    if not referer.is_absolute() or origin_of(referer) != origin_of(URL(str(request.url))):
        return ""
    path = local_path(referer.path_qs)
    return "" if path == "/" and referer.path_qs != "/" else path


def sentence(message: str) -> str:
    """A lower-case error message (``"password must be ..."``) as a page shows it: ``"Password must be ..."``."""
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


async def render(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, ctx, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def context_processor(request: web.Request) -> dict[str, Any]:
    """``user``, a lazy ``csrf_token()`` (only pages with forms create a session), a lazy
    ``notice()`` (a one-time message, e.g. :data:`EXPIRED_MESSAGE`) and the site name."""
    session = await get_session(request)
    return {
        # lazy, as csrf_token: aiohttp_jinja2 runs this for every request (a redirect too), and the
        # one-time notice must be taken only by a page that shows it; no session is made for reading
        "notice": lambda: session.pop(NOTICE) if NOTICE in session else "",
        "user": current_user(session),
        "csrf_token": lambda: csrf_token(session),
        "site_name": request.app[SETTINGS].site_name,
        "request": request,
    }
