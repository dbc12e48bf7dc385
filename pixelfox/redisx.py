"""One factory for Redis clients, so every part of PixelFox connects the same way."""

from __future__ import annotations

import redis.asyncio as aioredis

from pixelfox.config import RedisSettings


def connect(settings: RedisSettings) -> aioredis.Redis:
    """A ``redis.asyncio.Redis`` for ``settings.url`` (``redis://``, ``rediss://`` or ``unix://``).

    Sentinel and Cluster modes arrive with the scale-out work; keys are already named
    ``pixelfox:{tag}:...`` so multi-key operations stay in one hash slot.
    """
    return aioredis.from_url(settings.url, decode_responses=False, health_check_interval=10)
