"""An EXIF summary for image pages (camera, lens, exposure, date), never location.

The processing node returns the useful EXIF fields with its result and the manager stores them
(``Image.exif``); those are shown. For images processed before that, the web node reads only the
stored original's first
:data:`HEAD_BYTES` with an HTTP ``Range`` request to the storage origin (where JPEG, and most
cameras' EXIF, lives), parses the tags with Pillow (no pixels are decoded) and caches the result
in Redis by content hash (``pixelfox:{exif}:<sha256>``, the same bytes always give the same
answer). GPS, maker notes and thumbnails are never read into the summary. Anything that goes
wrong yields an empty summary: it is a nicety, never a reason for an error page.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
from fractions import Fraction
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from PIL import Image
from redis.exceptions import RedisError

from pixelfox.v1 import common_pb2

logger = logging.getLogger(__name__)

HEAD_BYTES = 256 * 1024
FETCH_TIMEOUT_S = 2.0
CACHE_TTL_S = 30 * 24 * 3600
EXIF_IFD = 0x8769
#: (ifd, tag, label); GPS (0x8825) is deliberately absent
TAGS = (
    (None, 0x010F, "Camera make"),
    (None, 0x0110, "Camera model"),
    (EXIF_IFD, 0xA434, "Lens"),
    (EXIF_IFD, 0x829A, "Exposure"),
    (EXIF_IFD, 0x829D, "Aperture"),
    (EXIF_IFD, 0x8827, "ISO"),
    (EXIF_IFD, 0x920A, "Focal length"),
    (EXIF_IFD, 0x9003, "Taken"),
)


def _fmt(label: str, value: Any) -> str:
    if isinstance(value, tuple):
        value = value[0] if value else ""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        if label == "Exposure":
            f = Fraction(float(value)).limit_denominator(8000)
            return f"{f.numerator}/{f.denominator} s" if f < 1 else f"{float(f):g} s"
        if label == "Aperture":
            return f"f/{float(value):.1f}"
        if label == "Focal length":
            return f"{float(value):g} mm"
    except (TypeError, ValueError, ZeroDivisionError):
        return ""
    return str(value).strip("\x00 ")[:80]


def parse(data: bytes) -> list[tuple[str, str]]:
    """``[(label, text)]`` from the EXIF in the first bytes of an image; ``[]`` if none or unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            exif = im.getexif()
            ifds = {None: exif, EXIF_IFD: exif.get_ifd(EXIF_IFD)}
            out = []
            for ifd, tag, label in TAGS:
                value = ifds[ifd].get(tag)
                text = _fmt(label, value) if value not in (None, "", b"") else ""
                if text:
                    out.append((label, text))
            return out
    except Exception:  # truncated or exotic files simply have no summary
        return []


_EXIF_DATE = re.compile(r"^(\d{4}):(\d{2}):(\d{2})(?=[ T]|$)")  # EXIF 2.3 DateTime: "YYYY:MM:DD HH:MM:SS"

#: ``Image.exif`` field -> label, in display order (the processing node's EXIF data, issue 3)
FIELDS = (("make", "Camera make"), ("model", "Camera model"), ("lens", "Lens"), ("exposure_time", "Exposure"),
          ("f_number", "Aperture"), ("iso", "ISO"), ("focal_length", "Focal length"), ("taken_at", "Taken"))


async def summary(redis: aioredis.Redis, image: common_pb2.Image) -> list[tuple[str, str]]:
    """``[(label, text)]`` for ``image``: from the EXIF fields the processing node stored with it,
    or - for images processed before those were stored - read from the original's first bytes
    and cached. ``[]`` while processing."""
    return [(label, readable_date(text) if label == "Taken" else text) for label, text in await _summary(redis, image)]


def readable_date(text: str) -> str:
    """An EXIF date ``"2013:08:17 18:54:52"`` as people write it, ``"2013-08-17 18:54:52"``; any other
    text unchanged. The API's ``exif.taken_at`` keeps the EXIF form."""
    return _EXIF_DATE.sub(r"\1-\2-\3", text, count=1)


async def _summary(redis: aioredis.Redis, image: common_pb2.Image) -> list[tuple[str, str]]:
    if image.exif:
        return [(label, image.exif[name]) for name, label in FIELDS if image.exif.get(name)]
    if not image.original_url or not image.sha256 or image.status != common_pb2.IMAGE_STATUS_READY:
        return []
    key = f"pixelfox:{{exif}}:{image.sha256}"
    with contextlib.suppress(RedisError, OSError, ValueError, TypeError):  # Redis trouble: read the file
        raw = await redis.get(key)
        if raw is not None:
            return [(str(a), str(b)) for a, b in json.loads(raw)]
    try:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(
            image.original_url, headers={"Range": f"bytes=0-{HEAD_BYTES - 1}"}
        ) as r:
            if r.status not in (200, 206):
                return []
            data = await r.content.read(HEAD_BYTES)
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.info("no EXIF summary for %s: %s", image.slug, exc)
        return []
    result = await asyncio.to_thread(parse, data)
    with contextlib.suppress(RedisError, OSError):
        await redis.set(key, json.dumps(result), ex=CACHE_TTL_S)
    return result
