"""Deletion URLs for uploaders (ShareX ``{json:deletion_url}``, Chevereto ``delete_url``).

``/api/v1/delete/<slug>/<owner id>/<token>`` where ``token`` is HMAC-SHA256 (key derived from
the cluster secret with the label ``pixelfox-deletion-v1``) over ``slug:owner``, base64url,
22 characters (128 bits). Only the uploader gets the URL (in the upload answer); it never
expires and works without a session, like Chevereto's and Imgur's. ``GET`` answers a small
confirmation page (link prefetchers and chat previews must not delete anything); ``POST`` or
``DELETE`` deletes the image (rows and stored objects, through the manager's ``DeleteImage``
acting as the owner). Anonymous images have no owner and get no deletion URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html

from aiohttp import web

from pixelfox import errors
from pixelfox.v1 import common_pb2, manager_pb2
from web.calls import call
from web.keys import MANAGER, SETTINGS, STATE


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"pixelfox-deletion-v1", hashlib.sha256).digest()


def token(secret: str, slug: str, owner_id: str) -> str:
    mac = hmac.new(_key(secret), f"{slug}:{owner_id}".encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def deletion_url(request: web.Request, image: common_pb2.Image) -> str:
    """The absolute deletion URL of ``image``, "" when it has no owner."""
    if not image.owner_id:
        return ""
    secret = request.app[SETTINGS].cluster.secret.get_secret_value()
    return (f"{request.app[STATE].public_url}/api/v1/delete/{image.slug}/{image.owner_id}/"
            f"{token(secret, image.slug, image.owner_id)}")


def _check(request: web.Request) -> tuple[str, str]:
    slug, owner, tok = (request.match_info[k] for k in ("slug", "owner", "token"))
    secret = request.app[SETTINGS].cluster.secret.get_secret_value()
    if not hmac.compare_digest(tok, token(secret, slug, owner)):
        raise errors.Forbidden("this deletion link is not valid")
    return slug, owner


async def confirm(request: web.Request) -> web.Response:
    """``GET``: a page with one button that POSTs to the same URL."""
    slug, _ = _check(request)
    s = html.escape(slug)
    page = (f"<!doctype html><meta charset=utf-8><title>Delete image {s}</title>"
            f"<h1>Delete image {s}?</h1><p>This removes the image and every file made from it.</p>"
            f'<form method=post><button type=submit>Delete for ever</button></form>')
    return web.Response(text=page, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


async def delete(request: web.Request) -> web.Response:
    """``POST``/``DELETE``: delete the image as its owner; 404 once it is gone."""
    slug, owner = _check(request)
    reply: manager_pb2.DeleteImageResponse = await call(
        request, "DeleteImage", manager_pb2.DeleteImageRequest(slug=slug), request.app[MANAGER].as_user(owner),
        timeout_s=120)
    if "text/html" in request.headers.get("Accept", ""):
        return web.Response(text=f"<!doctype html><meta charset=utf-8><p>Image {html.escape(slug)} was deleted.</p>",
                            content_type="text/html")
    return web.json_response({"deleted": reply.deleted, "id": slug})


def setup_deletion_routes(app: web.Application) -> None:
    path = "/api/v1/delete/{slug:[A-Za-z0-9_-]{1,64}}/{owner:[0-9A-Z]{26}}/{token:[A-Za-z0-9_-]{22}}"
    app.router.add_get(path, confirm, name="delete_confirm")
    app.router.add_post(path, delete, name="delete_post")
    app.router.add_delete(path, delete, name="delete_delete")
