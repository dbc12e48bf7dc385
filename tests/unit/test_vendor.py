"""Which browser libraries the pages offer (web/vendor.py)."""

from __future__ import annotations

from aiohttp import web

from web.vendor import TUS_JS, setup_vendor_routes, tus_available


def test_tus_js_is_offered_only_when_its_route_was_registered_at_start() -> None:
    started_without = web.Application()  # a node started before `npm ci` made web/node_modules
    assert tus_available(started_without) is False  # even once the file exists: no route serves it
    app = web.Application()
    setup_vendor_routes(app)
    assert tus_available(app) is TUS_JS.exists()
    assert TUS_JS.exists(), "scripts/install runs npm ci in web/; the suite expects tus-js-client"
