"""Deletion URLs for uploaders (ShareX ``{json:deletion_url}``, Chevereto ``delete_url``).

``/api/v1/delete/<slug>/<owner id>/<token>``, or ``/api/v1/delete/<slug>/anonymous/<token>`` for
an anonymous upload, where ``token`` is :func:`pixelfox.deletion.token` (HMAC-SHA256 with a key
derived from the cluster secret, over ``slug:owner``, 22 characters). Only the uploader gets the
URL (in the upload answer); it never expires and works without a session, like Chevereto's and
Imgur's. ``GET`` shows the image's thumbnail and title and asks (link prefetchers and chat
previews must not delete anything); ``POST`` or ``DELETE`` deletes the image (rows and stored
objects) through the manager's ``DeleteImage``, which checks the token again: for an anonymous
upload the token is the only authority there is. A browser (``Accept`` ranking ``text/html``
first, :mod:`web.accept`) gets pages in the site's layout, errors included; anything else JSON
with the same status.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pixelfox import deletion, errors
from pixelfox.v1 import common_pb2, manager_pb2
from web.accept import prefers_html
from web.calls import call, told
from web.keys import MANAGER, SETTINGS, STATE
from web.views.common import render

ANONYMOUS = deletion.ANONYMOUS  # the owner part of an anonymous upload's deletion URL
#: the token is in the URL; HTML or JSON by the Accept header
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "Vary": "Accept"}


def deletion_url(request: web.Request, image: common_pb2.Image) -> str:
    """The absolute deletion URL of ``image`` (owned or anonymous)."""
    return deletion.url(request.app[STATE].public_url, request.app[SETTINGS].cluster.secret.get_secret_value(),
                        image.slug, image.owner_id)


def _check(request: web.Request) -> tuple[str, str, str]:
    """``(slug, owner id or "", token)`` of a deletion URL; Forbidden when the token is wrong."""
    slug, owner, tok = (request.match_info[k] for k in ("slug", "owner", "token"))
    owner = "" if owner == ANONYMOUS else owner
    if not deletion.valid(request.app[SETTINGS].cluster.secret.get_secret_value(), slug, owner, tok):
        raise errors.Forbidden("this deletion link is not valid")
    return slug, owner, tok


async def confirm(request: web.Request) -> web.Response:
    """``GET``: to a browser (:func:`~web.accept.prefers_html`) a page in the site's layout with the
    image's thumbnail and title and one button that POSTs to the same URL; to anything else JSON
    ``{id, title, thumbnail_url, delete}``. 404 once the image is gone (the error page or JSON, the
    same way), saying it was deleted, or that it expired and when (:func:`web.calls.told`)."""
    slug, owner, _ = _check(request)
    try:
        image: common_pb2.Image = await call(request, "GetImage", manager_pb2.GetImageRequest(slug=slug),
                                             request.app[MANAGER].as_user(owner))
    except errors.NotFound as exc:  # deleted already: by whom, or that it expired (and when)
        raise await told(request, slug, exc) from exc
    title = image.title or image.filename or slug
    if not prefers_html(request):
        return web.json_response({"id": slug, "title": title, "thumbnail_url": image.thumbnail_url,
                                  "delete": "POST or DELETE this URL to delete the image"}, headers=_HEADERS)
    return await _page(request, slug=slug, title=title, thumbnail_url=image.thumbnail_url, deleted=False)


async def delete(request: web.Request) -> web.Response:
    """``POST``/``DELETE``: delete the image as its owner; 404 once it is gone. A browser gets a
    page in the site's layout saying so, anything else ``{"deleted", "id"}``."""
    slug, owner, tok = _check(request)
    try:
        reply: manager_pb2.DeleteImageResponse = await call(
            request, "DeleteImage", manager_pb2.DeleteImageRequest(slug=slug, deletion_token=tok),
            request.app[MANAGER].as_user(owner), timeout_s=120)
    except errors.NotFound as exc:
        raise await told(request, slug, exc) from exc
    if prefers_html(request):
        return await _page(request, slug=slug, deleted=True)
    return web.json_response({"deleted": reply.deleted, "id": slug}, headers=_HEADERS)


async def _page(request: web.Request, **ctx: Any) -> web.Response:
    response = await render(request, "deletion.html", ctx)
    response.headers.update(_HEADERS)
    return response


#: what a deletion link that is not one (cut short, mistyped, its parts not of their shape) answers
MALFORMED = "this deletion link is not valid: it is cut short or mistyped (use the whole link the upload gave)"


async def malformed(request: web.Request) -> web.Response:
    """Any other ``/api/v1/delete/...`` path: NotFound saying so (it was the router's bare "Not Found")."""
    raise errors.NotFound(MALFORMED)


def setup_deletion_routes(app: web.Application) -> None:
    path = "/api/v1/delete/{slug:[A-Za-z0-9_-]{1,64}}/{owner:[0-9A-Z]{26}|anonymous}/{token:[A-Za-z0-9_-]{22}}"
    app.router.add_get(path, confirm, name="delete_confirm")
    app.router.add_post(path, delete, name="delete_post")
    app.router.add_delete(path, delete, name="delete_delete")
    for method in ("GET", "POST", "DELETE"):  # after the link's own routes: only what they do not match
        app.router.add_route(method, "/api/v1/delete/{rest:.*}", malformed)
