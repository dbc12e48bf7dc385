"""Signed, expiring URLs for private images' files (issue 5, DESIGN.md "The main flow" step 5).

A private image's objects live under ``p/<salt>/...`` keys (:func:`pixelfox.storage.keys.private_key`)
and a storage node serves them only for ``/o/<key>?exp=<unix s>&sig=<signature>`` where

    signature = base64url(HMAC-SHA256(k, "<key>\\n<exp>"))   (no padding, 43 characters)

A download link adds ``&download=<file name>`` (:mod:`pixelfox.disposition`), and the name is
signed with the rest: ``HMAC-SHA256(k, "<key>\\n<exp>\\n<name>")`` (a name holds no line break).

and ``k`` is derived from a secret with :func:`derive_key` (HMAC-SHA256 of a fixed label, so the
cluster secret itself never signs anything). The manager signs with the first key; verifiers
accept any of their keys, so a secret can be rotated by listing the new one first and keeping
the old one until the longest expiry has passed (``PIXELFOX_URL_SIGNING__KEYS``).

Expiry times are rounded up to a whole ``bucket_s`` so the same image yields the same URL for a
while and a browser cache can reuse the bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel, Field, SecretStr

from pixelfox.numbers import is_ascii_digits

_LABEL = b"pixelfox url signing v1"


class UrlSigningSettings(BaseModel):
    """Signing keys beyond the cluster secret, and URL lifetime (``PIXELFOX_URL_SIGNING__*``)."""

    keys: list[SecretStr] = Field(
        default_factory=list,
        description="extra secrets, newest first; the cluster secret is used when empty, and always accepted",
    )
    ttl_s: int = Field(3600, gt=0, description="lifetime of a signed URL, seconds")
    bucket_s: int = Field(600, gt=0, description="expiry rounding, seconds (stable URLs for caching)")


def derive_key(secret: str) -> bytes:
    """A 32-byte signing key from ``secret`` (HMAC-SHA256 over a fixed label)."""
    return hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()


def keys_from(cluster_secret: str, settings: UrlSigningSettings | None = None) -> list[bytes]:
    """Signing keys in order: configured ones first (the first signs), then the cluster secret's."""
    extra = [s.get_secret_value() for s in (settings.keys if settings else []) if s.get_secret_value()]
    secrets = [*extra, cluster_secret] if cluster_secret else extra
    return [derive_key(s) for s in dict.fromkeys(secrets)]


def _mac(key: bytes, object_key: str, exp: int, download: str = "") -> str:
    message = f"{object_key}\n{exp}\n{download}" if download else f"{object_key}\n{exp}"
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def expiry(ttl_s: int, bucket_s: int, now: float | None = None) -> int:
    """``now + ttl_s`` rounded up to a multiple of ``bucket_s`` (unix seconds)."""
    t = int(now if now is not None else time.time()) + ttl_s
    return -(-t // bucket_s) * bucket_s


def sign(key: bytes, object_key: str, exp: int, download: str = "") -> str:
    """The query string ``exp=<exp>&sig=<signature>`` for ``object_key``; with ``download`` (a file
    name) ``exp=<exp>&download=<name>&sig=<signature>``, the name covered by the signature."""
    query = {"exp": str(exp), **({"download": download} if download else {})}
    return urlencode({**query, "sig": _mac(key, object_key, exp, download)})


def verify(keys: Sequence[bytes], object_key: str, exp: str | None, sig: str | None, now: float | None = None,
           download: str = "") -> bool:
    """True when ``sig`` is a valid signature of ``object_key`` (and of ``download``, the
    ``download`` parameter or ``""``) by any of ``keys`` and ``exp`` is in the future."""
    if not exp or not sig or not is_ascii_digits(exp, max_digits=12) or len(sig) > 64:
        return False
    if int(exp) < (now if now is not None else time.time()):
        return False
    return any(hmac.compare_digest(_mac(k, object_key, int(exp), download), sig) for k in keys)


def download_url(url: str, name: str, key: bytes, exp: int) -> str:
    """``url``, a storage origin's ``<origin>/o/<object key>`` (any ``?exp=&sig=`` is dropped),
    signed by ``key`` until ``exp`` with ``download=<name>`` so the origin sends it as an attachment
    named ``name``. Raises ValueError when ``url`` names no object."""
    base = url.partition("?")[0]
    object_key = urlsplit(base).path.partition("/o/")[2]
    if not object_key:
        raise ValueError(f"not a storage object URL: {base[:200]}")
    return f"{base}?{sign(key, object_key, exp, name)}"
