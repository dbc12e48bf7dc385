"""Account settings: change password (ends the user's other sessions), API keys (create, revoke),
and the ShareX ``.sxcu`` download (``POST /sharex``, :mod:`web.views.sharex`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_session import get_session

from pixelfox import errors
from pixelfox.passwords import password_problem
from pixelfox.schemes import LOCAL_ADMIN_KEY_LABEL
from pixelfox.session_index import end_other_sessions
from pixelfox.v1 import manager_pb2
from web.calls import call
from web.keys import MANAGER, REDIS
from web.sessions import CurrentUser, current_user
from web.views.common import checked_form, render, sentence

NEW_KEY = "new_api_key"  # session field holding a just-created key until /settings shows it once
#: the confirm text of revoking the key ``pixelfox up`` made (:data:`LOCAL_ADMIN_KEY_LABEL`)
LOCAL_REVOKE_CONFIRM = ("Revoke the local admin key? The pixelfox commands on the cluster's host (put, uploads, "
                        "jobs...) use it and stop working until the next `pixelfox up` there makes a new one.")


async def _page(request: web.Request, user: CurrentUser, status: int = 200, **extra: Any) -> web.Response:
    md = request.app[MANAGER].as_user(user.id)
    keys = (await call(request, "ListApiKeys", manager_pb2.ListApiKeysRequest(), md)).keys
    ctx: dict[str, Any] = {"keys": list(keys), "new_key": "", "message": "", "error": "",
                           "local_admin_label": LOCAL_ADMIN_KEY_LABEL, "local_revoke_confirm": LOCAL_REVOKE_CONFIRM}
    ctx.update(extra)
    return await render(request, "settings.html", ctx, status=status)


async def settings_page(request: web.Request) -> web.StreamResponse:
    """The settings page; a key made by :func:`create_key` is taken out of the session and shown once."""
    session = await get_session(request)
    user = current_user(session)
    if user is None:
        raise web.HTTPSeeOther("/login?next=/settings")
    new_key = session.pop(NEW_KEY, "")
    return await _page(request, user, new_key=new_key,
                       message="Password changed." if request.query.get("changed") else "")


async def change_password(request: web.Request) -> web.StreamResponse:
    session, form = await checked_form(request)
    user = current_user(session)
    if user is None:
        raise errors.Unauthenticated("log in first")
    new = form.get("new_password", "")
    if problem := password_problem(new):
        return await _page(request, user, 400, error=sentence(f"new {problem}"))
    if new != form.get("new_password2", ""):
        return await _page(request, user, 400, error="The two new passwords differ.")
    req = manager_pb2.ChangePasswordRequest(old_password=form.get("old_password", ""), new_password=new)
    try:
        await call(request, "ChangePassword", req, request.app[MANAGER].as_user(user.id))
    except errors.InvalidCredentials:
        return await _page(request, user, 400, error="The current password is wrong.")
    except errors.BadRequest as exc:  # the same password again
        return await _page(request, user, 400, error=sentence(exc.message))
    await end_other_sessions(request.app[REDIS], user.id, str(session.identity) if session.identity else None)
    raise web.HTTPSeeOther("/settings?changed=1")


async def create_key(request: web.Request) -> web.StreamResponse:
    session, form = await checked_form(request)
    user = current_user(session)
    if user is None:
        raise errors.Unauthenticated("log in first")
    try:
        reply = await request.app[MANAGER].create_api_key(user.id, form.get("label", "").strip() or "web")
    except errors.BadRequest as exc:  # a label over 100 characters (it was cut there) or with a control character
        return await _page(request, user, 400, error=sentence(exc.message))
    # post/redirect/get: a reload of the answer must not make a second key; the session (server-side,
    # in Redis) carries the key to the one GET that shows it
    session[NEW_KEY] = reply.key
    raise web.HTTPSeeOther("/settings")


async def revoke_key(request: web.Request) -> web.StreamResponse:
    session, _form = await checked_form(request)
    user = current_user(session)
    if user is None:
        raise errors.Unauthenticated("log in first")
    req = manager_pb2.RevokeApiKeyRequest(id=request.match_info["key_id"])
    await call(request, "RevokeApiKey", req, request.app[MANAGER].as_user(user.id))
    raise web.HTTPSeeOther("/settings")
