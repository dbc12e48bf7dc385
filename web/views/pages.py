"""HTML pages: the upload page, an image's share page, the user's own images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp_session import get_session

from pixelfox.client.images import display_variants, public_status, served_original_url
from pixelfox.v1 import common_pb2
from web.calls import load_image
from web.embed_codes import share_codes
from web.keys import MANAGER, SETTINGS
from web.middlewares import csp_connecting_to
from web.paging import fetch_html_page
from web.sessions import current_user
from web.vendor import tus_available
from web.views.api import page_url, resolve_caller
from web.views.common import render
from web.views.manage import image_page_extras

MIME = {
    "avif": "image/avif",
    "webp": "image/webp",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
}
SIZES = "(max-width: 1100px) 100vw, 1100px"
DISPLAY_NAMES = ("large", "medium")  # og:image candidates, largest display size first
MY_PAGE = 48  # images per page of /my


@dataclass(frozen=True)
class Picture:
    """What the ``<picture>`` element and the OG tags need."""

    sources: list[tuple[str, str]]  # (mime type, srcset) for AVIF then WebP
    fallback: common_pb2.Variant | None
    og: common_pb2.Variant | None


def _by_format(image: common_pb2.Image, fmt: str) -> list[common_pb2.Variant]:
    """The renditions in ``fmt`` (never the full-size clean original), narrowest first."""
    return sorted((v for v in display_variants(image) if v.format.lower() == fmt and v.url), key=lambda v: v.width)


def _srcset(variants: list[common_pb2.Variant]) -> str:
    """``url 320w, url 800w``; one candidate per width (small images yield equal-width variants)."""
    seen: dict[int, str] = {}
    for v in variants:
        seen.setdefault(v.width, v.url)
    return ", ".join(f"{url} {w}w" for w, url in sorted(seen.items()))


def _named(variants: list[common_pb2.Variant], names: tuple[str, ...]) -> common_pb2.Variant | None:
    for name in names:
        for v in variants:
            if v.name == name:
                return v
    return None


def build_picture(image: common_pb2.Image) -> Picture:
    sources = []
    for fmt in ("avif", "webp"):
        vs = _by_format(image, fmt)
        if image.frames > 1:  # a still AVIF must not win over an animated WebP
            vs = [v for v in vs if v.frames > 1]
        if vs:
            sources.append((MIME[fmt], _srcset(vs)))
    jpeg, webp = _by_format(image, "jpeg") or _by_format(image, "jpg"), _by_format(image, "webp")
    any_web = jpeg or webp or _by_format(image, "png") or _by_format(image, "gif")
    fallback = _named(jpeg, ("medium", "large")) or (jpeg[-1] if jpeg else None)
    fallback = fallback or _named(any_web, ("medium", "large")) or (any_web[-1] if any_web else None)
    animated = [v for v in webp if v.frames > 1]
    if image.frames > 1 and animated:  # keep animations moving in the <img> fallback too
        fallback = _named(animated, ("medium", "large")) or animated[-1]
    og = _named(jpeg, DISPLAY_NAMES) or _named(webp, DISPLAY_NAMES) or fallback
    return Picture(sources=sources, fallback=fallback, og=og)


async def index(request: web.Request) -> web.Response:
    """The upload page. Signed-in users upload with tus-js-client (resumable, also after a
    reload) straight to the upload nodes, whose origins the page's CSP lets it reach; others
    (or a build without web/node_modules) post multipart to ``/api/v1/images``."""
    settings = request.app[SETTINGS]
    user = current_user(await get_session(request))
    resumable = bool(user) and tus_available(request.app)
    response = await render(request, "index.html", {"max_upload_bytes": settings.max_upload_bytes,
                                                    "resumable": resumable,
                                                    "upload_stall_ms": round(settings.upload_stall_s * 1000),
                                                    "anonymous_off": not user and not settings.allow_anonymous})
    if resumable:
        response.headers["Content-Security-Policy"] = csp_connecting_to(await request.app[MANAGER].upload_urls())
    return response


def direct_link(image: common_pb2.Image, page: str, picture: Picture) -> str:
    """The page's "Direct link": the served original's URL (the stored one, EXIF/GPS kept, only when
    the owner opted in), else the display rendition's. The stored original's own URL is signed and
    expires, so a public image links ``<page>/original`` instead, which redirects to a fresh one;
    a private image keeps its signed URL (the lasting one would answer only the owner)."""
    served = served_original_url(image, with_metadata=image.keep_metadata)
    if served and image.keep_metadata and image.visibility != "private" and served == image.original_url:
        return f"{page}/original"
    return served or (picture.og.url if picture.og else "")


async def image_page(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    caller = await resolve_caller(request, state_changing=False)
    image = await load_image(request, slug, caller.metadata)
    status = public_status(image)  # "lost": no picture, no codes, nothing to download
    picture = build_picture(image)
    page = page_url(request, image)
    direct = direct_link(image, page, picture)
    embed = picture.fallback if image.frames > 1 else picture.og  # animations embed as animated WebP
    embed_src = embed.url if embed else direct
    title = image.title or image.filename or image.slug
    ctx: dict[str, Any] = {
        "image": image,
        "status": status,
        "picture": picture,
        "sizes": SIZES,
        "page_url": page,
        "direct_url": direct,
        "title": title,
        "og_type": MIME.get(picture.og.format.lower(), "") if picture.og else "",
        "codes": share_codes(page, direct, embed_src, title),
        **(await image_page_extras(request, image, caller.user)),
    }
    response = await render(request, "image.html", ctx)
    cache_s = request.app[SETTINGS].page_cache_s
    if cache_s and caller.via == "anonymous" and image.visibility == "public" and status == "ready":
        # the same bytes for every anonymous visitor: a proxy may keep them (deploy/nginx/page-cache.conf);
        # browsers still get no-store
        response.headers["X-Accel-Expires"] = str(cache_s)
    return response


async def my_images(request: web.Request) -> web.StreamResponse:
    user = current_user(await get_session(request))
    if user is None:
        raise web.HTTPSeeOther("/login?next=/my")
    user_id = user.id

    async def fetch(limit: int, cursor: str) -> list[common_pb2.Image]:
        return await request.app[MANAGER].list_images(user_id, limit=limit, before=cursor)

    images, next_before = await fetch_html_page(request, fetch, MY_PAGE)
    cards = [(img, public_status(img)) for img in images]  # a lost one says "lost", not "ready"
    return await render(request, "my.html", {"cards": cards, "next_before": next_before})
