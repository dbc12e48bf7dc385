"""The web application factory: ``create_app(settings)`` (aiohttp-demos ``main.py`` shape).

Long-lived resources (Redis client, manager channel) live in ``cleanup_ctx`` and are
reached through the typed keys in :mod:`web.keys`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import aiohttp_session
import jinja2
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Middleware

from pixelfox import redisx
from pixelfox.client.images import public_status
from pixelfox.text import human_bytes, isolated
from web.bodies import body_idle_middleware
from web.cluster import Manager
from web.config import WebSettings
from web.keys import BODIES, MANAGER, REDIS, SETTINGS, STATE, RuntimeState
from web.middlewares import error_middleware, headers_middleware
from web.proxied import ThroughProxy
from web.routes import setup_routes
from web.sessions import SessionStore
from web.views.common import context_processor

TEMPLATES = Path(__file__).parent / "templates"


async def _resources(app: web.Application) -> AsyncIterator[None]:
    manager = app[MANAGER]
    manager.open()
    yield
    await manager.close()
    await app[REDIS].aclose()


def forwarded_for(trusted: str) -> Middleware | None:
    """:class:`web.proxied.ThroughProxy` for one proxy hop of ``trusted`` (comma-separated addresses
    or networks): ``request.remote`` becomes the address that proxy saw; a request from anywhere else
    (or forged with an extra hop) is refused with 400 saying why, except the health probes. ``None``
    when empty. Raises ValueError for a malformed address."""
    hop = [t.strip() for t in trusted.split(",") if t.strip()]
    if not hop:
        return None
    return ThroughProxy(hop).middleware


def create_app(settings: WebSettings) -> web.Application:
    """A ready-to-run application; nothing connects until the app starts."""
    if redisx.mode(settings.redis.url) == "single":
        redis = aioredis.Redis.from_url(settings.redis.url, socket_timeout=5, socket_connect_timeout=2)
    else:  # Sentinel or Cluster (a RedisCluster): the same factory as the other nodes
        redis = redisx.connect(settings.redis)
    store = SessionStore(redis, max_age=settings.session_max_age_s, secure=settings.cookie_secure)
    # the client address first (limits key on it), then headers (every answer gets them), then errors,
    # then the body watch (a body that stops arriving is a 408, web/bodies.py), then sessions (saved even
    # on 3xx/4xx)
    middlewares = [headers_middleware, error_middleware, body_idle_middleware,
                   aiohttp_session.session_middleware(store)]
    if proxies := forwarded_for(settings.trusted_proxies):
        middlewares.insert(0, proxies)
    app = web.Application(middlewares=middlewares, client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    app[REDIS] = redis
    app[MANAGER] = Manager(settings)
    app[STATE] = RuntimeState(public_url=settings.base_url())
    app[BODIES] = Counter()
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "xml"], default=True),
        context_processors=[context_processor, aiohttp_jinja2.request_processor],
    )
    env.filters["human_bytes"] = human_bytes
    env.filters["isolated"] = isolated
    env.filters["public_status"] = public_status  # an Image message's status word ("lost" too), not its enum number
    env.globals["static"] = lambda path: app.router["static"].url_for(filename=path)
    env.globals["vendor"] = lambda path: app.router["vendor"].url_for(filename=path)
    app.cleanup_ctx.append(_resources)
    setup_routes(app)
    return app
