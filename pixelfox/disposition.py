"""``Content-Disposition: attachment`` for downloads (RFC 6266, ``filename*`` as RFC 8187/5987 say).

The web node picks the name (:func:`download_name`, from the uploaded file name) and puts it, signed,
in the storage URL's ``download`` parameter; the storage node checks it again
(:func:`is_download_name`) and sends :func:`attachment`. A name is never a path, holds no control
character, bidi control or double quote, and is at most :data:`~pixelfox.text.MAX_FILENAME`
characters, so the header cannot be split or redirect the save anywhere but the user's own folder.
"""

from __future__ import annotations

from urllib.parse import quote

from pixelfox.text import safe_filename

#: extensions that name the same format (compared in lower case)
_SAME_FORMAT = {"jpeg": "jpg", "jpe": "jpg", "tif": "tiff"}
#: RFC 8187 attr-char beyond letters and digits (quote() keeps ``_.-~`` and alphanumerics itself)
_ATTR_CHARS = "!#$&+-.^_`|~"


def _clean(raw: str) -> str:
    return safe_filename(raw.replace('"', ""), default="")


def _format(ext: str) -> str:
    ext = ext.lower()
    return _SAME_FORMAT.get(ext, ext)


def download_name(filename: str, slug: str, ext: str) -> str:
    """The name a file served with extension ``ext`` (``"jpg"``) is saved under: the uploaded
    ``filename`` cleaned (last path part, no controls or quotes, at most 255 characters), its
    extension replaced by ``ext`` when it names another format (an AVIF served as its JPEG
    rendition) or added when it has none (``jpeg`` added as ``jpg``); ``<slug>.<ext>`` when
    nothing usable is left."""
    name, ext = _clean(filename), _format(ext)
    if not name:
        return _clean(f"{slug}.{ext}") or "download"
    if name.startswith("."):  # no hidden file: ".png" is saved as "<slug>.png"
        name = _clean(slug + name)
    stem, dot, own = name.rpartition(".")
    if dot and stem and _format(own) == ext:
        return name
    return _clean(f"{stem if dot and stem else name}.{ext}") or _clean(f"{slug}.{ext}") or "download"


def is_download_name(value: str) -> bool:
    """True when ``value`` is already what :func:`download_name` makes: non-empty and unchanged by
    cleaning and not hidden (so no path part, control, quote, leading dot or leading/trailing space,
    at most 255 characters)."""
    return bool(value) and not value.startswith(".") and _clean(value) == value


def attachment(name: str) -> str:
    """The header value ``attachment; filename="<ASCII name>"; filename*=UTF-8''<percent-encoded>``
    for a name that passed :func:`is_download_name`; non-ASCII characters become ``_`` in the
    plain ``filename`` that old clients read. ASCII only, so it is a valid header value."""
    plain = "".join(ch if " " <= ch < "\x7f" and ch not in '"\\' else "_" for ch in name)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe=_ATTR_CHARS)}"
