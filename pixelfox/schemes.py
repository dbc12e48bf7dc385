"""Headers shaped ``<scheme> <value>``: ``Authorization`` (web nodes' API keys, upload nodes' tus tickets)
and tus' ``Upload-Checksum`` (``<algorithm> <base64 digest>``); headers that must come once; and an
API key sent as ``Authorization: Basic`` credentials (``curl -u <API key>:``)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pixelfox import errors

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy

#: how every API key starts (the manager makes ``pfx_`` + 43 url-safe characters)
API_KEY_PREFIX = "pfx_"
#: the user ``pixelfox up`` makes on a cluster's first start, whose API key the local commands use
LOCAL_ADMIN_NAME = "admin"
#: the label of the API key ``pixelfox up`` makes for user ``admin`` and keeps in ``.pixelfox/cluster.json``:
#: the ``pixelfox`` commands run on the cluster's host use it (Settings says so next to it)
LOCAL_ADMIN_KEY_LABEL = "local admin"


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


def basic_api_key(credentials: str) -> str:
    """The API key in the credentials of ``Authorization: Basic <credentials>``, or ``""`` when
    they are none (a proxy's ``user:password``, nginx ``auth_basic``).

    Taken as a key: the raw credentials when they start with :data:`API_KEY_PREFIX` (``Basic
    pfx_...``: no base64 has ``_``), else their base64 decoded to ``pfx_...`` (a script that
    encoded the key alone), ``pfx_...:<anything>`` (``curl -u pfx_...:``, the key as user name, as
    Stripe takes it) or ``<anything>:pfx_...`` (the key as password, as GitHub takes a token).
    Surrounding whitespace (``echo key | base64`` adds a newline) is dropped. Raises BadRequest
    when the user name and the password are two different keys (which one would count?)."""
    if credentials.startswith(API_KEY_PREFIX):
        return credentials
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""
    user, _, password = decoded.partition(":")
    keys = {part.strip() for part in (user, password) if part.strip().startswith(API_KEY_PREFIX)}
    if len(keys) > 1:
        raise errors.BadRequest("two different API keys in Authorization: Basic (user name and password); "
                                "send one key")
    return keys.pop() if keys else ""
