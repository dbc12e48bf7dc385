"""tus ``Upload-Metadata`` (creation extension): ``<key> <base64 value>`` pairs, checked as tus 1.0.0 says.

"The key MUST NOT contain spaces and commas and MUST NOT be empty. The key SHOULD be ASCII encoded
and the value MUST be Base64 encoded. All keys MUST be unique. The value MAY be empty. In these
cases, the space, which would normally separate the key and the value, MAY be left out." A header
that breaks this was taken silently; it is a 400 naming the fault and the key.
"""

from __future__ import annotations

import base64
import binascii

from pixelfox import errors

SHOWN_KEY = 40  # characters of a key quoted in an error


def parse_upload_metadata(raw: str) -> dict[str, bytes]:
    """The pairs of ``Upload-Metadata`` header value ``raw`` as ``{key: decoded value}``; ``{}`` when
    ``raw`` is empty or blank (tuspy sends the header empty when it has no metadata).

    Pairs are split at commas and their surrounding whitespace dropped, so ``a YQ==, b Yg==`` reads
    as two pairs; a value may lack its trailing ``=`` padding (some encoders drop it). Raises
    BadRequest for an empty key (``,,``, a trailing comma), a pair with a second space (a key with
    a space in it, or a value with one: base64 has none; the key quoted is up to the first space),
    a value that is not base64 and a key sent twice; the message quotes the key, unprintable
    characters escaped, cut at :data:`SHOWN_KEY` characters."""
    found: dict[str, bytes] = {}
    if not raw.strip():
        return found
    for pair in raw.split(","):
        key, _, value = pair.strip().partition(" ")
        if not key:
            raise errors.BadRequest("Upload-Metadata has an empty key: send '<key> <base64 value>' pairs "
                                    "separated by commas, none empty")
        if " " in value:  # "file name <base64>", or a value with a space: which, only its sender knows
            raise errors.BadRequest(f"Upload-Metadata pair of key {_shown(key)} has a second space: a key may "
                                    "not contain spaces or commas, and a base64 value has none")
        if key in found:
            raise errors.BadRequest(f"Upload-Metadata key {_shown(key)} is sent twice: keys must be unique")
        found[key] = _value(key, value)
    return found


def _value(key: str, value: str) -> bytes:
    """``value`` decoded from base64 (its padding may be left out); BadRequest naming ``key`` otherwise."""
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except binascii.Error:
        raise errors.BadRequest(f"Upload-Metadata value of key {_shown(key)} is not base64: send "
                                "'<key> <base64 value>'") from None


def _shown(key: str) -> str:
    """``key`` quoted for an error: unprintable characters escaped, cut at :data:`SHOWN_KEY` characters."""
    return repr(key[:SHOWN_KEY]) + ("..." if len(key) > SHOWN_KEY else "")
