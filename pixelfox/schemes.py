"""Headers shaped ``<scheme> <value>``: ``Authorization`` (web nodes' API keys, upload nodes' tus tickets)
and tus' ``Upload-Checksum`` (``<algorithm> <base64 digest>``); and headers that must come once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pixelfox import errors

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy


def refuse_repeated(headers: CIMultiDictProxy[str], names: Iterable[str]) -> None:
    """Raise BadRequest (400) naming the first of ``names`` sent more than once. A repeated
    ``Authorization`` or ``Upload-Offset`` is ambiguous (which one counts?); aiohttp's ``get``
    took the first silently."""
    for name in names:
        if len(headers.getall(name, ())) > 1:
            raise errors.BadRequest(f"{name} was sent more than once: send it once")


def split_scheme(value: str) -> tuple[str, str]:
    """``(scheme, value)`` of a header value such as ``Authorization: Bearer <token>``, both
    stripped; ``("", "")`` for an empty header, ``(scheme, "")`` for a scheme alone.

    The scheme is returned as sent: compare it case-insensitively (RFC 9110 §11.1, ``bearer`` is
    ``Bearer``). Any whitespace may separate it from the credentials (RFC 9110 §11.4)."""
    scheme, *rest = value.strip().split(None, 1) or [""]
    return scheme, rest[0].strip() if rest else ""
