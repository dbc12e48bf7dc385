"""Headers shaped ``<scheme> <value>``: ``Authorization`` (web nodes' API keys, upload nodes' tus tickets)
and tus' ``Upload-Checksum`` (``<algorithm> <base64 digest>``)."""

from __future__ import annotations


def split_scheme(value: str) -> tuple[str, str]:
    """``(scheme, value)`` of a header value such as ``Authorization: Bearer <token>``, both
    stripped; ``("", "")`` for an empty header, ``(scheme, "")`` for a scheme alone.

    The scheme is returned as sent: compare it case-insensitively (RFC 9110 §11.1, ``bearer`` is
    ``Bearer``). Any whitespace may separate it from the credentials (RFC 9110 §11.4)."""
    scheme, *rest = value.strip().split(None, 1) or [""]
    return scheme, rest[0].strip() if rest else ""
