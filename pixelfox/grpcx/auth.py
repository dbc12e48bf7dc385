"""Who is calling: cluster members (shared secret) and API-key clients.

Metadata keys (lower case, as gRPC requires):

* ``pixelfox-cluster-token``: the cluster secret; proves the caller is a node of this cluster.
* ``authorization``: ``Bearer <api key>`` for clients (CLI, scripts).
* ``pixelfox-acting-user``: user id a cluster member (the web node) acts for.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pixelfox import errors

CLUSTER_TOKEN_KEY = "pixelfox-cluster-token"
ACTING_USER_KEY = "pixelfox-acting-user"
AUTHORIZATION_KEY = "authorization"

Metadata = Sequence[tuple[str, str | bytes]]
_METADATA_SAFE = re.compile(r"[\x21-\x7e]{1,512}")  # what a gRPC metadata value can carry (printable ASCII)


@dataclass(frozen=True)
class Caller:
    """Identity claims read from call metadata; verification of the API key is the manager's job."""

    cluster: bool = False
    api_key: str = ""
    acting_user: str = ""


def read_caller(metadata: Metadata | None, secret: str) -> Caller:
    """Parse ``metadata``; ``cluster`` is true only for a constant-time match of ``secret``."""
    values: dict[str, str] = {}
    for key, value in metadata or ():
        values[key.lower()] = value.decode() if isinstance(value, bytes) else value
    token = values.get(CLUSTER_TOKEN_KEY, "")
    cluster = bool(secret) and hmac.compare_digest(token.encode(), secret.encode())
    auth = values.get(AUTHORIZATION_KEY, "")
    api_key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    return Caller(cluster=cluster, api_key=api_key, acting_user=values.get(ACTING_USER_KEY, "") if cluster else "")


def node_metadata(secret: str, acting_user: str = "") -> tuple[tuple[str, str], ...]:
    """Metadata a cluster member sends on every call."""
    md: tuple[tuple[str, str], ...] = ((CLUSTER_TOKEN_KEY, secret),)
    if acting_user:
        md += ((ACTING_USER_KEY, acting_user),)
    return md


def api_key_metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    """Metadata an API-key client sends; ``()`` for ``""``. Raises ``Unauthenticated`` ("invalid API key",
    the manager's words for an unknown key) for a key that is not 1..512 printable ASCII characters: gRPC
    refuses such a metadata value client-side with an INTERNAL error, which must not become a 500."""
    if not api_key:
        return ()
    if not _METADATA_SAFE.fullmatch(api_key):
        raise errors.Unauthenticated("invalid API key")
    return ((AUTHORIZATION_KEY, f"Bearer {api_key}"),)
