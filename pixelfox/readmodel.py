"""The image read model: public image messages cached in Redis so pages render without the manager.

One key per image slug, ``pixelfox:{img}:<slug>``, holding one of

* ``I`` + the serialized ``common_pb2.Image`` of a *public, ready* image;
* ``P``: the image is private, ask the manager with the caller's identity;
* ``D``: the image was deleted (pages answer 410 while the marker lives).

The manager writes it whenever it changes an image (update, visibility, delete); a web node
fills a missing entry after reading a public ready image from the manager, with ``SET NX`` so
it never overwrites a marker the manager wrote in between (DESIGN.md: "Pages render from a
read model ... so reads keep working while a manager restarts").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis

from pixelfox.numbers import ascii_int
from pixelfox.v1 import common_pb2

#: lifetime of a cached image (storage origins in its URLs may move), seconds
IMAGE_TTL_S = 3600
#: a cached image leaves the cache this long before its first signed URL expires, seconds
EXPIRY_MARGIN_S = 120
#: lifetime of the private/deleted markers, seconds
MARKER_TTL_S = 7 * 24 * 3600


def key(slug: str) -> str:
    return f"pixelfox:{{img}}:{slug}"


@dataclass(frozen=True)
class Entry:
    """``kind`` is ``image``, ``private`` or ``deleted``; ``image`` is set for ``image``."""

    kind: str
    image: common_pb2.Image | None = None


def decode(raw: bytes | None) -> Entry | None:
    if not raw:
        return None
    tag, body = raw[:1], raw[1:]
    if tag == b"I":
        img = common_pb2.Image()
        try:
            img.ParseFromString(body)
        except Exception:
            return None
        return Entry("image", img)
    if tag == b"P":
        return Entry("private")
    if tag == b"D":
        return Entry("deleted")
    return None


def cacheable(image: common_pb2.Image) -> bool:
    """Only public, ready images are cached (private URLs are signed per caller, processing ones change)."""
    return image.visibility != "private" and image.status == common_pb2.IMAGE_STATUS_READY


def ttl_s(image: common_pb2.Image, now: float | None = None) -> int:
    """How long ``image`` may stay cached, seconds: :data:`IMAGE_TTL_S`, cut short so that no signed
    URL in it (the stored original's is always signed) is handed out after its ``exp`` - less
    :data:`EXPIRY_MARGIN_S` for the page to be used. 0 means do not cache."""
    now = time.time() if now is None else now
    ttl = IMAGE_TTL_S
    for url in (image.original_url, *(v.url for v in image.variants)):
        exp = ascii_int(parse_qs(urlsplit(url).query).get("exp", [""])[0])
        if exp is not None:
            ttl = min(ttl, int(exp - now - EXPIRY_MARGIN_S))
    return max(ttl, 0)


async def read(redis: aioredis.Redis, slug: str) -> Entry | None:
    return decode(await redis.get(key(slug)))


def _shared(image: common_pb2.Image) -> bytes:
    """The image as every visitor may see it, serialized: the owner-only GPS ``location`` is
    removed (the web node may fill the cache from an answer made for the owner)."""
    if not image.HasField("location"):
        return image.SerializeToString()
    copy = common_pb2.Image()
    copy.CopyFrom(image)
    copy.ClearField("location")
    return copy.SerializeToString()


async def fill(redis: aioredis.Redis, image: common_pb2.Image) -> bool:
    """Cache ``image`` if it is cacheable and nothing is stored yet (``SET NX``); True if written."""
    if not cacheable(image) or (ttl := ttl_s(image)) <= 0:
        return False
    return bool(await redis.set(key(image.slug), b"I" + _shared(image), ex=ttl, nx=True))


async def publish(redis: aioredis.Redis, image: common_pb2.Image) -> None:
    """The manager's write after a change: the image, or the private marker, overwriting what is there."""
    if image.visibility == "private":
        await redis.set(key(image.slug), b"P", ex=MARKER_TTL_S)
    elif cacheable(image) and (ttl := ttl_s(image)) > 0:
        await redis.set(key(image.slug), b"I" + _shared(image), ex=ttl)
    else:
        await redis.delete(key(image.slug))


async def mark_deleted(redis: aioredis.Redis, slug: str) -> None:
    await redis.set(key(slug), b"D", ex=MARKER_TTL_S)
