"""Deletion tokens: the secret part of an uploader's deletion URL (web ``/api/v1/delete/...``).

``token = base64url(HMAC-SHA256(k, "<slug>:<owner id>")[:16])`` (22 characters, 128 bits), where
``k`` is HMAC-SHA256 of the label ``pixelfox-deletion-v1`` keyed with the cluster secret, and the
owner id is "" for an anonymous upload. The web node checks a token before it shows the
confirmation page; the manager checks it again before it deletes, so a token is the only
authority an anonymous uploader needs (and has). Tokens never expire, like Chevereto's and
Imgur's deletion links. :func:`url` builds the whole link (the web node for its uploaders, the
manager for ``pixelfox put``'s anonymous uploads).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

_LABEL = b"pixelfox-deletion-v1"


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()


def token(secret: str, slug: str, owner_id: str) -> str:
    """The deletion token of image ``slug`` owned by ``owner_id`` ("" = anonymous): 22 characters."""
    mac = hmac.new(_key(secret), f"{slug}:{owner_id}".encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def valid(secret: str, slug: str, owner_id: str, given: str) -> bool:
    """True when ``given`` is the deletion token of ``slug`` and ``owner_id`` (constant-time compare)."""
    return hmac.compare_digest(given.encode(), token(secret, slug, owner_id).encode())


#: the owner part of an anonymous upload's deletion URL
ANONYMOUS = "anonymous"


def url(site: str, secret: str, slug: str, owner_id: str) -> str:
    """The absolute deletion URL ``<site>/api/v1/delete/<slug>/<owner id or "anonymous">/<token>`` of image
    ``slug`` owned by ``owner_id`` ("" = anonymous); ``site`` is the public base URL (no trailing ``/``)."""
    return f"{site}/api/v1/delete/{slug}/{owner_id or ANONYMOUS}/{token(secret, slug, owner_id)}"
