"""Typed ``AppKey``s for the long-lived resources a web app holds (aiohttp-demos ``typedefs``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiohttp import web

from web.cluster import Manager
from web.config import WebSettings


@dataclass
class RuntimeState:
    """Mutable process state: draining flag (SIGTERM seen) and requests in flight (heartbeat load)."""

    draining: bool = False
    in_flight: int = 0
    public_url: str = ""
    extra: dict[str, str] = field(default_factory=dict)


SETTINGS = web.AppKey("settings", WebSettings)
REDIS = web.AppKey("redis", aioredis.Redis)
MANAGER = web.AppKey("manager", Manager)
STATE = web.AppKey("state", RuntimeState)
#: one-shot upload bodies being read on this node, per caller (web/bodies.py)
BODIES = web.AppKey("bodies", Counter)
