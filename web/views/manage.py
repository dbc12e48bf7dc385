"""Owner actions on an image page (edit, visibility, delete), reports, download and ``/oembed``.

Forms post back with the CSRF token; the manager decides who may change what (owner or admin)
and answers NotFound for someone else's private image, which becomes the same 404 page as an
unknown slug.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web
from yarl import URL

from pixelfox import disposition, errors, signing
from pixelfox.client.images import FILES_LOST_MESSAGE, files_lost, served_original_url, status_name
from pixelfox.numbers import MAX_DIGITS, ascii_int
from pixelfox.text import isolated, one_line
from pixelfox.v1 import common_pb2, manager_pb2
from web import exif, ratelimit
from web.calls import call, load_image
from web.jsonbody import validated
from web.keys import MANAGER, REDIS, SETTINGS, STATE
from web.sessions import CurrentUser, current_user
from web.views.api import resolve_caller
from web.views.api_v1 import ImagePatch
from web.views.common import NOTICE, checked_form, once_in_query, origin_of, render

SLUG_RE = r"[A-Za-z0-9_-]{1,64}"
OEMBED_CACHE_AGE_S = 300  # short: an image that goes private must drop out of caches soon (ECOSYSTEM.md)
OEMBED_NOT_FOUND = "no public image at this URL"  # unknown, private and foreign URLs alike
REPORTS_PER_HOUR = 10  # per address, so the report form cannot flood the admins


async def image_page_extras(
    request: web.Request, image: common_pb2.Image, user: CurrentUser | None
) -> dict[str, Any]:
    """Template values the image page adds for issue 5: owner controls, oEmbed link, download, EXIF."""
    base = request.app[STATE].public_url
    owner = user is not None and (user.role == "admin" or (bool(image.owner_id) and user.id == image.owner_id))
    private = image.visibility == "private"
    page = f"{base}/i/{image.slug}"
    return {
        "exif": await exif.summary(request.app[REDIS], image),
        "is_owner": owner,
        "is_private": private,
        "oembed_url": "" if private else f"{base}/oembed?url={quote(page, safe='')}&format=json",
        "download_url": f"/i/{image.slug}/download",
        "download_note": (
            "the original file, as uploaded (the owner chose to keep its metadata)"
            if image.keep_metadata
            else "the original file, with its metadata (EXIF, GPS) removed"
        ),
    }


async def _served_original(request: web.Request) -> tuple[common_pb2.Image, str]:
    """The image and the URL its Download serves: the original as uploaded when the owner opted in
    to keep its metadata, else the clean original (the upload with EXIF/XMP/IPTC/GPS removed
    losslessly by the processing node). NotFound while the image is still processing, when
    processing failed, or when its files are lost (:func:`~pixelfox.client.images.files_lost`), saying which."""
    caller = await resolve_caller(request, state_changing=False)
    image = await load_image(request, request.match_info["slug"], caller.metadata)
    target = served_original_url(image, with_metadata=image.keep_metadata)
    if not target and status_name(image) == "failed":  # it said "still processing" for these too
        raise errors.NotFound(f"nothing to download: the image could not be processed ({image.error_message[:200]})")
    if not target and files_lost(image):  # it said "still processing" for these too
        raise errors.NotFound(f"nothing to download: {FILES_LOST_MESSAGE}")
    if not target:
        raise errors.NotFound("nothing to download yet; the image is still processing")
    return image, target


async def download(request: web.Request) -> web.StreamResponse:
    """302 to the served original (:func:`_served_original`) signed afresh with
    ``download=<file name>``, so the storage node sends it as an attachment named as uploaded
    (``<slug>.<ext>`` when the upload had no usable name; :mod:`pixelfox.disposition`)."""
    image, target = await _served_original(request)
    settings = request.app[SETTINGS]
    keys = signing.keys_from(settings.cluster.secret.get_secret_value(), settings.url_signing)
    if keys:  # no secret (a bare dev node): the file is still served, inline
        ext = URL(target).path.rpartition(".")[2]
        name = disposition.download_name(image.filename, image.slug, ext)
        exp = signing.expiry(settings.url_signing.ttl_s, settings.url_signing.bucket_s)
        target = signing.download_url(target, name, keys[0], exp)
    raise web.HTTPFound(target, headers={"Cache-Control": "private, no-store"})


async def original(request: web.Request) -> web.StreamResponse:
    """``/i/{slug}/original``: 302 to the served original (:func:`_served_original`) as it is, no
    attachment: the lasting direct link of an image whose served file's own URL is signed and
    expires (the owner keeps metadata)."""
    _image, target = await _served_original(request)
    raise web.HTTPFound(target, headers={"Cache-Control": "private, no-store"})


async def edit_image(request: web.Request) -> web.StreamResponse:
    session, form = await checked_form(request)
    user = current_user(session)
    if user is None:
        raise errors.Unauthenticated("log in to change an image")
    slug = request.match_info["slug"]
    req = manager_pb2.UpdateImageRequest(slug=slug)
    if "title" in form:  # one line: a tab or line break pasted into the field becomes a space
        req.title = one_line(form["title"])
    if "description" in form:
        req.description = form["description"]
    if "visibility" in form:  # the API's rule and words: a crafted "secret" is a 400, not ignored
        req.visibility = str(validated(ImagePatch, {"visibility": form["visibility"]}).visibility)
    if "keep_metadata_present" in form:
        req.keep_metadata = form.get("keep_metadata") == "on"
    await call(request, "UpdateImage", req, request.app[MANAGER].as_user(user.id), timeout_s=120)
    raise web.HTTPSeeOther(f"/i/{slug}")


async def delete_image(request: web.Request) -> web.StreamResponse:
    session, _form = await checked_form(request)
    user = current_user(session)
    if user is None:
        raise errors.Unauthenticated("log in to delete an image")
    req = manager_pb2.DeleteImageRequest(slug=request.match_info["slug"])
    await call(request, "DeleteImage", req, request.app[MANAGER].as_user(user.id), timeout_s=120)
    session[NOTICE] = "Image deleted."  # shown once by the next page, not by any link to /my
    raise web.HTTPSeeOther("/my")


async def report_page(request: web.Request) -> web.StreamResponse:
    """The abuse report form on a page of its own (``GET /i/{slug}/report``): its CSRF token needs a
    session, which the image page itself must not create. ``?sent=1`` thanks the reporter."""
    caller = await resolve_caller(request, state_changing=False)
    image = await load_image(request, request.match_info["slug"], caller.metadata)
    title = image.title or image.filename or image.slug
    ctx = {"image": image, "title": title, "sent": bool(request.query.get("sent"))}
    return await render(request, "report.html", ctx)


async def report_image(request: web.Request) -> web.StreamResponse:
    session, form = await checked_form(request)
    user = current_user(session)
    slug = request.match_info["slug"]
    key = f"pixelfox:{{reports}}:ip:{request.remote or '-'}"
    if wait := await ratelimit.take(request.app[REDIS], [(key, REPORTS_PER_HOUR)], 3600):
        raise errors.RateLimited(f"too many reports from this address; try again in {wait} s", wait)
    # the manager refuses a reason over 1000 characters (400), as an empty one: it was cut here silently
    req = manager_pb2.ReportImageRequest(slug=slug, reason=form.get("reason", ""))
    await call(request, "ReportImage", req, request.app[MANAGER].as_user(user.id if user else ""))
    raise web.HTTPSeeOther(f"/i/{slug}/report?sent=1")


def _renditions(image: common_pb2.Image) -> list[common_pb2.Variant]:
    """The renditions oEmbed may answer: JPEG, WebP, PNG or GIF; for an animated image only its
    animated WebP ones when there are any, as the share page shows (a JPEG is one frame)."""
    web_formats = [v for v in image.variants if v.url and v.format.lower() in ("jpeg", "jpg", "webp", "png", "gif")]
    animated = [v for v in web_formats if v.format.lower() == "webp" and v.frames > 1]
    return animated if image.frames > 1 and animated else web_formats


def _pick(renditions: list[common_pb2.Variant], maxwidth: int, maxheight: int) -> common_pb2.Variant:
    """The largest rendition within ``maxwidth``/``maxheight`` pixels (0: no bound), JPEG first on a
    tie. Raises NotFound naming the bounds given and the smallest size there is when none fits."""
    fits = [v for v in renditions if (not maxwidth or v.width <= maxwidth) and (not maxheight or v.height <= maxheight)]
    if fits:
        return max(fits, key=lambda v: (v.width * v.height, v.format.lower() in ("jpeg", "jpg")))
    if not renditions:
        raise errors.NotFound("no rendition of this image yet")
    smallest = min(renditions, key=lambda v: v.width * v.height)
    # name the bound the smallest one breaks: "width" was said also when only maxheight was too small
    bounds = " and ".join(f"{name}={value}" for name, value in (("maxwidth", maxwidth), ("maxheight", maxheight))
                          if value)
    raise errors.NotFound(f"no rendition fits {bounds}; the smallest available is {smallest.width} x "
                          f"{smallest.height} pixels (width x height)")


def _bound(query: Mapping[str, str], name: str) -> int:
    """``maxwidth``/``maxheight`` in pixels, 0 when absent or empty. Raises BadRequest for anything
    but a positive whole number; a large one (up to 18 digits: ``maxwidth=1000000`` was refused) bounds
    nothing any rendition reaches."""
    text = query.get(name, "")
    if not text:
        return 0
    value = ascii_int(text)
    if not value:
        if text.isascii() and text.isdigit() and text.lstrip("0"):  # a whole number, only too long
            raise errors.BadRequest(f"{name} must be at most {MAX_DIGITS} digits, not {len(text)}")
        raise errors.BadRequest(f"{name} must be a positive whole number of pixels, not {text[:20]!r}")
    return value


def _oembed_slug(request: web.Request, url: str) -> str:
    """The slug of ``url`` when it is an image page of this site (its public URL's origin and path)."""
    base = URL(request.app[STATE].public_url or str(request.url.origin()))
    try:
        target = URL(url)
    except ValueError:
        raise errors.NotFound(OEMBED_NOT_FOUND) from None
    page = re.fullmatch(rf"{re.escape(base.path.rstrip('/'))}/i/({SLUG_RE})/?", target.path)
    if not target.is_absolute() or origin_of(target) != origin_of(base) or page is None:
        raise errors.NotFound(OEMBED_NOT_FOUND)
    return page.group(1)


async def oembed(request: web.Request) -> web.Response:
    """oEmbed 1.0 ``photo`` for ``?url=<share page>`` (ECOSYSTEM.md); 501 for a format other than
    json; 400 without a ``url`` or with a parameter given twice; honours ``maxwidth``/``maxheight``
    (400 when not a positive whole number, 404 naming the smallest size when no rendition fits). An
    animated image answers its animated WebP, as its share page shows. A URL of another site, an
    unknown image and a private one all get the same 404, so the answer never tells that a private
    image exists."""
    q = request.query
    once_in_query(request, "url", "format", "maxwidth", "maxheight")
    if q.get("format", "json") != "json":
        raise web.HTTPNotImplemented(text="only format=json is supported")
    maxwidth, maxheight = _bound(q, "maxwidth"), _bound(q, "maxheight")
    if not q.get("url", "").strip():  # nothing asked about: say so (it was the 404 of an unknown image)
        raise errors.BadRequest("give the URL of an image's share page: /oembed?url=<page URL>")
    slug = _oembed_slug(request, q.get("url", ""))
    try:
        image = await load_image(request, slug, request.app[MANAGER].as_user())  # anonymous: private is 404
    except errors.NotFound:
        raise errors.NotFound(OEMBED_NOT_FOUND) from None
    if image.visibility == "private":
        raise errors.NotFound(OEMBED_NOT_FOUND)
    variant = _pick(_renditions(image), maxwidth, maxheight)
    base = request.app[STATE].public_url
    body: dict[str, Any] = {
        "version": "1.0",
        "type": "photo",
        "url": variant.url,
        "width": variant.width,
        "height": variant.height,
        "title": isolated(image.title or image.filename or image.slug),
        "provider_name": request.app[SETTINGS].site_name,
        "provider_url": base + "/",
        "cache_age": OEMBED_CACHE_AGE_S,
    }
    if image.owner:
        body["author_name"] = image.owner
    thumb = next((v for v in image.variants if v.name == "thumb" and v.url == image.thumbnail_url), None)
    if thumb is not None:
        body.update(thumbnail_url=thumb.url, thumbnail_width=thumb.width, thumbnail_height=thumb.height)
    return web.json_response(body, headers={"Cache-Control": f"public, max-age={OEMBED_CACHE_AGE_S}"})
