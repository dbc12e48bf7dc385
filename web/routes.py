"""Every URL of the web node, in one place."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from web.deletion import setup_deletion_routes
from web.expect import continue_from_handler
from web.routes_community import setup_community_routes
from web.vendor import setup_vendor_routes
from web.views import api, api_v1, auth, chevereto, health, pages, sharex, uploads

STATIC_DIR = Path(__file__).parent / "static"


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", pages.index, name="index")
    r.add_get("/i/{slug:[A-Za-z0-9_-]{1,64}}", pages.image_page, name="image")
    r.add_get("/my", pages.my_images, name="my")
    r.add_get("/register", auth.register_page, name="register")
    r.add_post("/register", auth.register, name="register_post")
    r.add_get("/login", auth.login_page, name="login")
    r.add_post("/login", auth.login_post, name="login_post")
    r.add_post("/logout", auth.logout_post, name="logout")
    r.add_post("/sharex", sharex.sharex_config, name="sharex")
    # one-shot uploads answer Expect: 100-continue themselves, once the headers pass (web/expect.py)
    r.add_post("/api/v1/images", api.upload, name="api_upload", expect_handler=continue_from_handler)
    r.add_get("/api/v1/images/{slug:[A-Za-z0-9_-]{1,64}}", api_v1.get_image, name="api_image")
    r.add_get("/api/v1/me", api.me, name="api_me")
    r.add_post("/api/v1/uploads", uploads.create_upload, name="api_create_upload")
    r.add_get("/api/v1/uploads", uploads.list_uploads, name="api_list_uploads")
    r.add_post("/api/1/upload", chevereto.upload, name="chevereto_upload", expect_handler=continue_from_handler)
    r.add_route("*", "/api/1/upload", chevereto.not_allowed)  # every other method: 405, Chevereto-shaped
    setup_deletion_routes(app)
    r.add_get("/api/v1/uploads/{id}", uploads.get_upload, name="api_get_upload")
    r.add_delete("/api/v1/uploads/{id}", uploads.cancel_upload, name="api_cancel_upload")
    r.add_post("/api/v1/uploads/{id}/ticket", uploads.renew_ticket, name="api_renew_upload_ticket")
    r.add_get("/healthz", health.healthz, name="healthz")
    r.add_get("/readyz", health.readyz, name="readyz")
    setup_vendor_routes(app)  # /static/vendor/ (npm-installed browser libraries) before /static/
    r.add_static("/static/", STATIC_DIR, name="static", append_version=True)
    r.add_get("/favicon.ico", favicon, name="favicon")  # asked for by clients that do not read <link rel=icon>
    setup_community_routes(app)


async def favicon(request: web.Request) -> web.StreamResponse:
    """``/favicon.ico``: a permanent redirect to the SVG icon the pages link (no 404 in every console)."""
    raise web.HTTPMovedPermanently(str(request.app.router["static"].url_for(filename="favicon.svg")))

