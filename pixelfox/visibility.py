"""An image's visibility, as an upload asks for it: ``public`` (the default) or ``private``.

A private image exists only for its owner and admins, and its objects live under ``p/<salt>/`` keys
(:func:`pixelfox.storage.keys.private_key`). An upload may ask for either (``CreateUpload``'s
``visibility``, ``POST /api/v1/images``, ``POST /api/v1/uploads``, ``pixelfox put --private``).
"""

from __future__ import annotations

from pixelfox import errors

#: the visibilities an image may have
VISIBILITIES = ("public", "private")
#: why an anonymous upload cannot be private: a private image is only its owner's (and admins') to see
ANONYMOUS_PRIVATE = ("an anonymous upload cannot be private: nobody could see the image; log in or send an API key, "
                     "or upload it public")


def asked_visibility(value: str | None) -> str:
    """The visibility an upload asks for: ``public`` for ``None``, ``""`` or ``public``; ``private``;
    surrounding blanks are ignored. Raises BadRequest naming anything else (its first 20 characters):
    an unknown word ignored would put an image meant to be private up public without a word."""
    word = (value or "").strip() or VISIBILITIES[0]
    if word in VISIBILITIES:
        return word
    raise errors.BadRequest(f"visibility must be public or private, not {value[:20]!r}")
