"""``expiration`` of an upload (Chevereto's ``/api/1/upload``, ``POST /api/v1/images``): an ISO 8601
duration (Chevereto: ``PT5M``, ``P3D``) or plain seconds (ImgBB: ``600``)."""

from __future__ import annotations

import re

from pixelfox import errors
from pixelfox.uploadstate import MAX_EXPIRE_AFTER_S

# ASCII digits only, as in plain seconds; a "T" must be followed by a time part (ISO 8601: "P1DT" is malformed)
DURATION = re.compile(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?",
                      re.ASCII)
MAX_EXPIRATION_S = MAX_EXPIRE_AFTER_S  # ten years: the manager's limit, said here in years
UNIT_S = (365 * 86400, 30 * 86400, 7 * 86400, 86400, 3600, 60, 1)  # Y M W D H M S (years/months approximate)


def parse_duration(text: str) -> int:
    """Seconds in an ISO 8601 duration (``PT5M`` = 300), or plain seconds as ImgBB sends them
    (``600``); BadRequest when malformed, zero or over :data:`MAX_EXPIRATION_S` (ten years)."""
    plain = text.strip()
    if plain.isascii() and plain.isdigit():  # ImgBB: seconds
        digits = plain.lstrip("0") or "0"
        seconds = int(digits) if len(digits) <= 12 else MAX_EXPIRATION_S + 1
    else:
        m = DURATION.fullmatch(plain.upper())
        if not m or not any(m.groups()):
            raise errors.BadRequest(f"expiration {text[:40]!r} is neither an ISO 8601 duration such as PT5M or "
                                    "P3D nor a number of seconds")
        if any(v and len(v.lstrip("0")) > 9 for v in m.groups()):  # P0000000001D is one day
            raise errors.BadRequest(f"expiration longer than {MAX_EXPIRATION_S // UNIT_S[0]} years")
        seconds = sum(int(v) * u for v, u in zip(m.groups(), UNIT_S, strict=True) if v)
    if seconds <= 0:
        raise errors.BadRequest("expiration must be longer than zero")
    if seconds > MAX_EXPIRATION_S:
        raise errors.BadRequest(f"expiration longer than {MAX_EXPIRATION_S // UNIT_S[0]} years")
    return seconds
