"""Per-client-IP upload rate at the HTTP edge (only the web node sees client addresses).

``pixelfox:{limits}:ip:<address>:<minute>`` is INCR'd with a 120 s expiry for every upload a
client starts (``POST /api/v1/images``, ``/api/v1/uploads``, ``/api/1/upload``); more than
``limits.ip_uploads_per_minute`` in one clock minute gets 429 ``rate-limited``. The address is
``request.remote`` (behind a trusted proxy, the forwarded one when the proxy middleware is on).
Per-user limits (rate, open uploads, quota) are the manager's (:mod:`nodes.manager.upload_limits`).
"""

from __future__ import annotations

import time

from aiohttp import web

from pixelfox import errors
from web.keys import REDIS, SETTINGS


async def check_ip(request: web.Request) -> None:
    """Count one upload for the caller's IP; raises RateLimited past the per-minute limit."""
    limit = request.app[SETTINGS].limits.ip_uploads_per_minute
    if not limit:
        return
    now = time.time()
    key = f"pixelfox:{{limits}}:ip:{request.remote or 'unknown'}:{int(now // 60)}"
    redis = request.app[REDIS]
    async with redis.pipeline(transaction=True) as p:
        p.incr(key)
        p.expire(key, 120)
        count, _ = await p.execute()
    if count > limit:
        raise errors.RateLimited(f"more than {limit} uploads a minute from this address; wait {60 - int(now % 60)} s")
