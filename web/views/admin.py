"""Admin pages: ``/admin`` (nodes with health and load, queue depth, storage use, newest images),
``/admin/users`` (disable, enable) and ``/admin/reports`` (resolve, or delete the image). The manager checks the
role again on every call; a non-admin gets the 403 page."""

from __future__ import annotations

from aiohttp import web
from aiohttp_session import get_session

from pixelfox import errors
from pixelfox.numbers import ascii_int
from pixelfox.v1 import common_pb2, manager_pb2
from web.calls import call
from web.keys import MANAGER
from web.paging import first_page_instead
from web.sessions import CurrentUser, current_user
from web.views.common import NOTICE, checked_form, render

ROLE_NAMES = {
    common_pb2.NODE_ROLE_MANAGER: "manager",
    common_pb2.NODE_ROLE_UPLOAD: "upload",
    common_pb2.NODE_ROLE_PROC: "proc",
    common_pb2.NODE_ROLE_STORAGE: "storage",
    common_pb2.NODE_ROLE_WEB: "web",
}
STATUS_NAMES = {
    common_pb2.NODE_STATUS_ACTIVE: "active",
    common_pb2.NODE_STATUS_INACTIVE: "inactive",
    common_pb2.NODE_STATUS_MAINTENANCE: "maintenance",
    common_pb2.NODE_STATUS_DRAINING: "draining",
    common_pb2.NODE_STATUS_STOPPED: "stopped",
}
#: statuses in which a node takes no new work by an admin's or its own choice: shown as such, not "down"
INTENDED = (common_pb2.NODE_STATUS_MAINTENANCE, common_pb2.NODE_STATUS_DRAINING, common_pb2.NODE_STATUS_STOPPED)


def health(node: common_pb2.Node) -> tuple[str, str]:
    """The Health cell of ``node`` on ``/admin``: ``(label, CSS class)``. ``healthy``; else the status when it
    is in :data:`INTENDED` (a node in maintenance that still heartbeats shows ``maintenance``, as in
    ``pixelfox status``; one whose heartbeats stopped is ``inactive``, so ``down``); else ``not ready`` (its
    own dependency check fails) or ``down``."""
    if node.healthy:
        return "healthy", "ok"
    if node.status in INTENDED:
        return STATUS_NAMES[node.status], "muted"
    return ("not ready" if node.not_ready else "down"), "bad"


async def _admin(request: web.Request) -> CurrentUser:
    user = current_user(await get_session(request))
    if user is None:
        raise web.HTTPSeeOther(f"/login?next={request.path}")
    if user.role != "admin":
        raise errors.Forbidden("admins only")
    return user


async def overview(request: web.Request) -> web.StreamResponse:
    user = await _admin(request)
    md = request.app[MANAGER].as_user(user.id)
    o = await call(request, "AdminOverview", manager_pb2.AdminOverviewRequest(recent_images=24), md)
    nodes = sorted(o.nodes, key=lambda n: (n.role, n.node_id))
    ctx = {"o": o, "nodes": [(n, *health(n)) for n in nodes], "roles": ROLE_NAMES, "statuses": STATUS_NAMES}
    return await render(request, "admin.html", ctx)


async def users(request: web.Request) -> web.StreamResponse:
    user = await _admin(request)
    offset = ascii_int(request.query.get("offset", "0"), 0, max_digits=9) or 0
    reply = await call(request, "ListUsers", manager_pb2.ListUsersRequest(limit=100, offset=offset),
                       request.app[MANAGER].as_user(user.id))
    return await render(request, "admin_users.html", {"users": list(reply.users), "total": reply.total,
                                                       "offset": offset})


async def set_disabled(request: web.Request) -> web.StreamResponse:
    """``POST /admin/users/<name>`` with ``action=disable`` or ``enable``; the manager refuses the
    user's keys from then on and ends their web sessions."""
    session, form = await checked_form(request)
    user = await _admin(request)
    action = form.get("action", "")
    if action not in ("disable", "enable"):
        raise errors.BadRequest("action must be disable or enable")
    req = manager_pb2.SetUserDisabledRequest(name=request.match_info["name"], disabled=action == "disable")
    done = await call(request, "SetUserDisabled", req, request.app[MANAGER].as_user(user.id))
    # as `pixelfox users enable` says it: a second click (another admin's tab) changed nothing
    session[NOTICE] = (f"{done.name} was already {action}d; nothing changed." if done.unchanged
                       else f"{done.name} is {action}d.")
    offset = ascii_int(form.get("offset", "0"), 0, max_digits=9) or 0
    raise web.HTTPSeeOther(f"/admin/users?offset={offset}" if offset else "/admin/users")


async def reports(request: web.Request) -> web.StreamResponse:
    user = await _admin(request)
    include = request.query.get("all") == "1"
    reply = await call(request, "ListReports", manager_pb2.ListReportsRequest(include_resolved=include, limit=200),
                       request.app[MANAGER].as_user(user.id))
    return await render(request, "admin_reports.html", {"reports": list(reply.reports), "all": include})


async def resolve(request: web.Request) -> web.StreamResponse:
    _session, form = await checked_form(request)
    user = await _admin(request)
    action = form.get("action", "")
    if action not in ("resolve", "delete"):  # another value was taken as "resolve", without a word
        raise errors.BadRequest(f"unknown report action {action[:20]!r}: resolve or delete")
    req = manager_pb2.ResolveReportRequest(id=request.match_info["report_id"], delete_image=action == "delete")
    await call(request, "ResolveReport", req, request.app[MANAGER].as_user(user.id), timeout_s=120)
    raise web.HTTPSeeOther("/admin/reports")


async def images(request: web.Request) -> web.StreamResponse:
    """Every image, newest first, 60 a page (``?before=<id>``, web/paging.py), private ones marked."""
    user = await _admin(request)
    before = request.query.get("before", "")[:64]
    req = manager_pb2.AdminOverviewRequest(recent_images=60, images_before=before)
    try:
        o = await call(request, "AdminOverview", req, request.app[MANAGER].as_user(user.id))
    except errors.BadRequest:
        if not before:
            raise
        raise first_page_instead(request) from None
    imgs = list(o.recent_images)
    nxt = imgs[-1].id if len(imgs) == 60 else ""
    return await render(request, "admin_images.html", {"images": imgs, "next_before": nxt, "total": o.images})
