"""Content-addressed object keys: the only names a storage node reads or writes.

Two shapes (plus ``p/<32 hex salt>/`` in front of either for a private image's copy), both
lower-case ASCII, fanned out by the first two byte pairs of a SHA-256 so no
directory grows past 65,536 entries:

* originals: ``o/ab/cd/<sha256>.<ext>``, where ``<sha256>`` is the hash of the stored bytes;
* variants: ``v/ab/cd/<source sha256>/r<recipe version>/<name>.<fmt>``, where the hash is that of
  the *source* original and the recipe version changes whenever the output bytes would.

Either way the bytes behind a key never change, which is what makes immutable HTTP caching
safe. :func:`validate_key` accepts nothing else: no ``..``, no absolute paths, no backslashes,
NUL or %-encodings, only ``[a-z0-9/._-]`` and only the extensions in :data:`MIME_BY_EXT`. A key
that passes is a safe relative path.
"""

from __future__ import annotations

import re
from types import MappingProxyType

from pixelfox.errors import BadRequest

#: extension -> exact Content-Type served for it
MIME_BY_EXT = MappingProxyType(
    {
        "jpg": "image/jpeg",
        "jpeg": "image/jpeg",
        "png": "image/png",
        "gif": "image/gif",
        "webp": "image/webp",
        "avif": "image/avif",
    }
)

MAX_KEY_LENGTH = 256
MAX_RECIPE_VERSION = 999_999

#: a SHA-256 as keys (and images) hold it: 64 hex digits in lower case
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: what a declared sha256 (``CreateUpload``, ``POST /api/v1/uploads``) that is not 64 hex digits is told
SHA256_RULE = "sha256 must be 64 hexadecimal characters (the file's SHA-256), or left out"
_SHA = rf"(?P<sha>{SHA256_HEX.pattern})"
_FAN = r"(?P<p1>[0-9a-f]{2})/(?P<p2>[0-9a-f]{2})"
_EXT = "(?P<ext>" + "|".join(MIME_BY_EXT) + ")"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ORIGINAL_RE = re.compile(rf"o/{_FAN}/{_SHA}\.{_EXT}")
_VARIANT_RE = re.compile(rf"v/{_FAN}/{_SHA}/r(?:0|[1-9][0-9]{{0,5}})/[a-z0-9][a-z0-9_-]{{0,63}}\.{_EXT}")


def declared_sha256(value: str) -> str:
    """A declared SHA-256 (``CreateUpload``, ``POST /api/v1/uploads``, an upload stream's header) as images
    store it: 64 hex digits in either case come back in lower case, ``""`` (not declared) as it is.
    Raises BadRequest (:data:`SHA256_RULE`) for anything else."""
    sha = value.lower()
    if sha and not SHA256_HEX.fullmatch(sha):
        raise BadRequest(SHA256_RULE)
    return sha


def _sha(value: str, what: str) -> str:
    sha = value.lower()
    if not SHA256_HEX.fullmatch(sha):
        raise BadRequest(f"{what} must be 64 hex digits")
    return sha


def _ext(value: str) -> str:
    ext = value.lower().removeprefix(".")
    if ext not in MIME_BY_EXT:
        raise BadRequest(f"unsupported extension {value[:16]!r}")
    return ext


def original_key(sha256: str, ext: str) -> str:
    """``o/ab/cd/<sha256>.<ext>`` for an original whose bytes hash to ``sha256``."""
    sha = _sha(sha256, "sha256")
    return f"o/{sha[:2]}/{sha[2:4]}/{sha}.{_ext(ext)}"


def variant_key(source_sha256: str, recipe_version: int, name: str, fmt: str) -> str:
    """``v/ab/cd/<source sha256>/r<version>/<name>.<fmt>`` for a variant of an original."""
    sha = _sha(source_sha256, "source_sha256")
    if not 0 <= recipe_version <= MAX_RECIPE_VERSION:
        raise BadRequest("recipe_version out of range")
    if not _NAME_RE.fullmatch(name):
        raise BadRequest("variant name must match [a-z0-9][a-z0-9_-]{0,63}")
    return f"v/{sha[:2]}/{sha[2:4]}/{sha}/r{recipe_version}/{name}.{_ext(fmt)}"


_PRIVATE_RE = re.compile(r"p/(?P<salt>[0-9a-f]{32})/(?P<rest>.+)")
#: a private image's salt: 32 hex digits in lower case
PRIVATE_SALT = re.compile(r"[0-9a-f]{32}")


def checked_salt(salt: str) -> str:
    """``salt`` if it is a private salt (:data:`PRIVATE_SALT`), else BadRequest."""
    if not PRIVATE_SALT.fullmatch(salt):
        raise BadRequest("private salt must be 32 hex digits")
    return salt


def private_key(key: str, salt: str) -> str:
    """``p/<salt>/<key>``: the copy of a public key that a private image uses (issue 5).

    ``salt`` is 32 hex digits drawn per image when it goes private, so the old public URL
    and any earlier private URL stop naming the bytes. Served only with a signed URL. ``key``
    may itself be private (under any salt): its public key is used. Raises BadRequest for a
    malformed ``salt``.
    """
    return f"p/{checked_salt(salt)}/{public_key(key)}"


def keyed_for(key: str, salt: str) -> str:
    """The key of ``key``'s bytes (``key`` public or under any salt) for an image keyed by ``salt``:
    :func:`private_key` for a private image's salt, the public key for ``""`` (a public image).
    Raises BadRequest for a malformed non-empty ``salt``."""
    return private_key(key, salt) if salt else public_key(key)


def public_key(key: str) -> str:
    """The content-addressed key behind ``key`` (itself for a public key)."""
    m = _PRIVATE_RE.fullmatch(key)
    return m["rest"] if m else key


def is_private_key(key: str) -> bool:
    return key.startswith("p/")


def is_original_key(key: str) -> bool:
    """True for an original's key, public (``o/...``) or private (``p/<salt>/o/...``)."""
    return key.startswith("o/") or (key.startswith("p/") and key.split("/", 2)[-1].startswith("o/"))


def needs_signature(key: str) -> bool:
    """Keys served over HTTP only with a signed, expiring URL: private copies, and every original.

    Originals are signed even for public images because a public variant's key names the original's
    SHA-256, from which its key could be derived, and the original keeps the uploader's metadata
    (EXIF, GPS) unless the owner opted in (DESIGN.md main flow step 5).
    """
    return is_private_key(key) or is_original_key(key)


def validate_key(key: str) -> str:
    """Return ``key`` if it is a well-formed object key, else raise :class:`BadRequest`."""
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        raise BadRequest("invalid object key")
    pm = _PRIVATE_RE.fullmatch(key)
    inner = pm["rest"] if pm else key
    m = _ORIGINAL_RE.fullmatch(inner) or _VARIANT_RE.fullmatch(inner)
    if m is None or m["sha"][:2] != m["p1"] or m["sha"][2:4] != m["p2"]:
        raise BadRequest("invalid object key")
    return key


def key_sha256(key: str) -> str | None:
    """The content hash an original's key promises (``None`` for variants, whose hash is the source's)."""
    validate_key(key)
    inner = public_key(key)
    return inner.rsplit("/", 1)[1].split(".", 1)[0] if inner.startswith("o/") else None


def content_type_for(key: str) -> str:
    """The exact ``Content-Type`` for a (valid) key, from its extension."""
    validate_key(key)
    return MIME_BY_EXT[key.rsplit(".", 1)[1]]
