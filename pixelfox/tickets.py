"""Upload tickets: short-lived JWTs (PyJWT, HS256) the manager signs and upload nodes check.

A ticket binds one upload: claims ``sub`` (upload id), ``uid`` (user id or ""), ``max``
(the declared size in bytes, which the upload must match exactly), ``typ`` (declared
content type, informational only), ``iat`` and ``exp``. Any upload node of the cluster checks
it offline with the shared ticket key. Leeway for clock skew is :data:`LEEWAY_S` seconds by default
(RELIABILITY.md B8; ``PIXELFOX_LIMITS__TICKET_LEEWAY_S``, the same on every manager and upload node).
Only HS256 is accepted, so ``alg: none`` and algorithm swaps fail.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import jwt

from pixelfox import errors

ALGORITHM = "HS256"
LEEWAY_S = 30
ISSUER = "pixelfox-manager"


@dataclass(frozen=True)
class Ticket:
    upload_id: str
    user_id: str
    size: int  # bytes
    content_type: str
    expires_at: int  # unix seconds


def derive_key(cluster_secret: str) -> bytes:
    """Ticket signing key derived from the cluster secret (HMAC-SHA256 with a fixed label)."""
    if not cluster_secret:
        raise errors.BadRequest("cluster secret is empty: cannot sign tickets")
    return hmac.new(cluster_secret.encode(), b"pixelfox-upload-ticket-v1", hashlib.sha256).digest()


def usable_until(expires_at: int, leeway_s: int = LEEWAY_S) -> int:
    """The last unix second a ticket expiring at ``expires_at`` is accepted (its ``exp`` plus
    ``leeway_s``, the cluster's clock-skew leeway): after it no upload node takes a new stream or PATCH
    for it, so nothing can resume the upload any more (one already running may still complete:
    ``verify(allow_expired)``)."""
    return expires_at + leeway_s


def sign(key: bytes, upload_id: str, user_id: str, size: int, content_type: str, ttl_s: int,
         now: int | None = None) -> str:
    """Return the encoded ticket for one upload, valid ``ttl_s`` seconds from ``now`` (unix seconds,
    default the present)."""
    now = int(time.time()) if now is None else now
    claims = {
        "iss": ISSUER,
        "sub": upload_id,
        "uid": user_id,
        "max": size,
        "typ": content_type,
        "iat": now,
        "exp": now + ttl_s,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(key: bytes, token: str, *, allow_expired: bool = False, leeway_s: int = LEEWAY_S) -> Ticket:
    """Decode and check ``token``, accepting it up to ``leeway_s`` seconds past its ``exp`` (clock
    skew); raise :class:`~pixelfox.errors.InvalidTicket` with the reason.

    ``allow_expired`` skips the expiry check only (signature, issuer and claims still hold): for
    the manager completing an upload whose bytes all came through a stream or PATCH the upload
    node admitted with a live ticket, which may end after the ticket does.
    """
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            leeway=leeway_s,
            options={"require": ["exp", "iat", "sub", "max", "iss"], "verify_exp": not allow_expired},
        )
    except jwt.ExpiredSignatureError as exc:
        raise errors.InvalidTicket("upload ticket expired") from exc
    except jwt.InvalidSignatureError as exc:
        raise errors.InvalidTicket("upload ticket signature is not valid") from exc
    except jwt.DecodeError as exc:  # not base64url JSON: PyJWT's words ("Invalid crypto padding") help nobody
        raise errors.InvalidTicket("upload ticket is malformed: send the 'ticket' string of the upload's answer "
                                   "exactly as given") from exc
    except jwt.PyJWTError as exc:
        raise errors.InvalidTicket(f"upload ticket is not valid: {exc}") from exc
    try:
        return Ticket(
            upload_id=str(claims["sub"]),
            user_id=str(claims.get("uid", "")),
            size=int(claims["max"]),
            content_type=str(claims.get("typ", "")),
            expires_at=int(claims["exp"]),
        )
    except (TypeError, ValueError) as exc:
        raise errors.InvalidTicket("upload ticket claims are malformed") from exc
