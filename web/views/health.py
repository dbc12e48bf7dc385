"""``/healthz`` (the process answers; no dependencies) and ``/readyz`` (Redis + manager, not draining)."""

from __future__ import annotations

import asyncio

import redis.exceptions
from aiohttp import web

from web.keys import MANAGER, REDIS, STATE


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _redis_ok(request: web.Request) -> bool:
    try:
        return bool(await asyncio.wait_for(request.app[REDIS].ping(), 1.0))
    except (redis.exceptions.RedisError, TimeoutError, OSError):
        return False


async def readyz(request: web.Request) -> web.Response:
    if request.app[STATE].draining:
        return web.json_response({"status": "draining"}, status=503)
    redis_ok, manager_ok = await asyncio.gather(_redis_ok(request), request.app[MANAGER].ready())
    body = {
        "status": "ok" if redis_ok and manager_ok else "unavailable",
        "redis": "ok" if redis_ok else "down",
        "manager": "ok" if manager_ok else "down",
    }
    return web.json_response(body, status=200 if redis_ok and manager_ok else 503)
