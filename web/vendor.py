"""Browser libraries the pages load, installed from npm by ``scripts/install`` (``npm ci`` in
``web/``, versions pinned in ``web/package-lock.json``) and served under ``/static/vendor/``.

They are never committed; a checkout without ``web/node_modules`` still serves every page,
and the upload page falls back to a plain multipart POST.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

NODE_MODULES = Path(__file__).resolve().parent / "node_modules"
TUS_DIST = NODE_MODULES / "tus-js-client" / "dist"
TUS_JS = TUS_DIST / "tus.min.js"
"""tus-js-client's browser build (UMD: ``window.tus``)."""


def setup_vendor_routes(app: web.Application) -> None:
    """``GET /static/vendor/<file>`` from tus-js-client's ``dist/`` (route name ``vendor``), if installed.

    Register before ``/static/``: aiohttp matches static prefixes in registration order.
    """
    if TUS_DIST.is_dir():
        app.router.add_static("/static/vendor/", TUS_DIST, name="vendor", append_version=True)


def tus_available(app: web.Application) -> bool:
    """Whether the pages may load tus-js-client: its route was registered at start-up (a
    ``web/node_modules`` installed while the node runs is picked up at its next start, not
    half-way, which made ``/`` a 500) and the file is still there."""
    return "vendor" in app.router.named_resources() and TUS_JS.exists()
