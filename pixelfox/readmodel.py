"""The image read model: public image messages cached in Redis so pages render without the manager.

One key per image slug, ``pixelfox:{img}:<slug>``, holding one of

* ``I`` + placement token + ``|`` + the serialized ``common_pb2.Image`` of a *public, ready* image;
* ``P``: the image is private, ask the manager with the caller's identity;
* ``D``: the image was deleted, or ``Dexpired <unix seconds>`` when the expiry sweeper deleted it then
  (:mod:`nodes.manager.expiry`): pages and the API answer 404 saying so while the marker lives
  (:data:`MARKER_TTL_S`), "no such image" after it. A reader that knows only ``D`` reads both as deleted.

The manager writes it whenever it changes an image (update, visibility, delete); a web node
fills a missing entry after reading a public ready image from the manager, with ``SET NX`` so
it never overwrites a marker the manager wrote in between (DESIGN.md: "Pages render from a
read model ... so reads keep working while a manager restarts").

The image's URLs name storage nodes, so a cached image is only good for the *placement* it was
built under: which storage nodes are healthy and where they listen. The managers keep a token of
it in :data:`PLACEMENT_KEY` (:meth:`nodes.manager.registry.Registry.publish_placement`, every
second); an entry stamped with another token is *stale*: the reader asks the manager again and
replaces it, so URLs move to a healthy holder about a second after the registry marks a node
unhealthy, or after a node comes back on another port (docs/storage.md "Replicas").

The cache belongs to one database *generation* (:mod:`pixelfox.db.generation`), recorded in
:data:`GENERATION_KEY`: a manager that starts on another one (a restore, another database)
empties it first (:func:`follow_database`), so no image the database no longer holds is shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis

from pixelfox.numbers import ascii_int
from pixelfox.redisx import script
from pixelfox.v1 import common_pb2

#: lifetime of a cached image (storage origins in its URLs may move), seconds
IMAGE_TTL_S = 3600
#: a cached image leaves the cache this long before its first signed URL expires, seconds
EXPIRY_MARGIN_S = 120
#: lifetime of the private/deleted markers, seconds
MARKER_TTL_S = 7 * 24 * 3600
#: the current placement token (no expiry; "~" is never in a slug, and the tag is the images' own)
PLACEMENT_KEY = "pixelfox:{img}:~placement"

# replace a stale entry only if it is still the one read: never a marker or a newer image written since
_REPLACE = script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
""")


#: the database generation the cached entries were read from
GENERATION_KEY = "pixelfox:readmodel:generation"
#: how many keys :func:`follow_database` deletes per command
_DELETE_BATCH = 500


def key(slug: str) -> str:
    return f"pixelfox:{{img}}:{slug}"


@dataclass(frozen=True)
class Entry:
    """``kind`` is ``image``, ``private``, ``deleted`` or ``stale`` (an image cached under another
    placement); ``image`` is set for ``image``, ``expired_at`` (unix seconds) for an image ``deleted``
    because it expired. ``raw`` is the stored value of a ``stale`` entry and ``placement`` the token
    current when it was read (both for :func:`fill`)."""

    kind: str
    image: common_pb2.Image | None = None
    raw: bytes = b""
    placement: bytes = b""
    expired_at: int = 0


def decode(raw: bytes | None, placement: bytes | None = None) -> Entry | None:
    """The entry stored as ``raw``; with ``placement`` (the current token, b"" if none is known) an
    image stamped with another token is ``stale``. None for nothing or an unknown value."""
    if not raw:
        return None
    tag, body = raw[:1], raw[1:]
    if tag == b"I":
        stamp, _, body = body.partition(b"|")
        if placement is not None and (not placement or stamp != placement):
            return Entry("stale", raw=raw, placement=placement)
        img = common_pb2.Image()
        try:
            img.ParseFromString(body)
        except Exception:
            return None
        return Entry("image", img)
    if tag == b"P":
        return Entry("private")
    if tag == b"D":
        reason, _, at = body.partition(b" ")
        expired_at = ascii_int(at.decode("ascii", "replace")) if reason == b"expired" else None
        return Entry("deleted", expired_at=expired_at or 0)
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
    """The entry of ``slug`` checked against the current placement (one ``MGET``); None if nothing is cached."""
    raw, token = cast(list[bytes | None], await redis.mget(key(slug), PLACEMENT_KEY))  # decode_responses=False
    return decode(raw, token or b"")


async def placement(redis: aioredis.Redis) -> bytes:
    """The current placement token; b"" while no manager has written one (nothing is cached then)."""
    return cast(bytes | None, await redis.get(PLACEMENT_KEY)) or b""


async def set_placement(redis: aioredis.Redis, token: bytes) -> None:
    """The managers' write of the placement token (see module doc)."""
    await redis.set(PLACEMENT_KEY, token)


def _shared(image: common_pb2.Image) -> bytes:
    """The image as every visitor may see it, serialized: the owner-only GPS ``location`` is
    removed (the web node may fill the cache from an answer made for the owner)."""
    if not image.HasField("location"):
        return image.SerializeToString()
    copy = common_pb2.Image()
    copy.CopyFrom(image)
    copy.ClearField("location")
    return copy.SerializeToString()


async def fill(redis: aioredis.Redis, image: common_pb2.Image, seen: Entry | None) -> bool:
    """Cache ``image``, read from the manager after :func:`read` gave ``seen``: stamped with the
    placement token read then (read before the manager built ``image``: a change since makes it
    stale, never wrongly fresh). Written if it is cacheable and nothing is stored yet (``SET NX``),
    or in place of the ``stale`` entry read if that is still there. True if written."""
    token = seen.placement if seen is not None else await placement(redis)
    if not token or not cacheable(image) or (ttl := ttl_s(image)) <= 0:
        return False
    value = _image_value(token, image)
    if seen is not None and seen.kind == "stale":
        return bool(await _REPLACE(keys=[key(image.slug)], args=[seen.raw, value, ttl], client=redis))
    return bool(await redis.set(key(image.slug), value, ex=ttl, nx=True))


async def publish(redis: aioredis.Redis, image: common_pb2.Image, token: bytes) -> None:
    """The manager's write after a change: the image, or the private marker, overwriting what is there.
    ``token`` is the placement read (:func:`placement`) *before* building ``image``."""
    if image.visibility == "private":
        await redis.set(key(image.slug), b"P", ex=MARKER_TTL_S)
    elif token and cacheable(image) and (ttl := ttl_s(image)) > 0:
        await redis.set(key(image.slug), _image_value(token, image), ex=ttl)
    else:
        await redis.delete(key(image.slug))


async def mark_deleted(redis: aioredis.Redis, slug: str, expired_at: float = 0) -> None:
    """Say that ``slug`` was deleted, for :data:`MARKER_TTL_S`; ``expired_at`` > 0 (unix seconds): by the
    expiry sweeper, at that time."""
    value = b"Dexpired %d" % int(expired_at) if expired_at > 0 else b"D"
    await redis.set(key(slug), value, ex=MARKER_TTL_S)


def _image_value(token: bytes, image: common_pb2.Image) -> bytes:
    """The stored value of a cached image: ``I``, the placement ``token``, ``|``, the shared message."""
    return b"I" + token + b"|" + _shared(image)


async def follow_database(redis: aioredis.Redis, generation: str) -> int | None:
    """Make the cache belong to the database ``generation``: when :data:`GENERATION_KEY` names
    another one (or none), delete every cached entry (``SCAN`` + ``DEL``, markers included), then
    record ``generation``. Returns how many keys were deleted, None when the cache already
    belonged to it. Called by each manager at start; two managers on one database both record
    the same generation, and a second flush only costs cache misses."""
    if (await redis.get(GENERATION_KEY) or b"").decode() == generation:
        return None
    deleted = 0
    batch: list[bytes] = []
    async for k in redis.scan_iter(match=key("*"), count=_DELETE_BATCH):
        batch.append(k)
        if len(batch) >= _DELETE_BATCH:
            deleted += await redis.delete(*batch)
            batch = []
    if batch:
        deleted += await redis.delete(*batch)
    await redis.set(GENERATION_KEY, generation)
    return deleted
