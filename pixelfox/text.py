"""Text that users give PixelFox to store (titles, descriptions, report reasons, key labels, file names).

Control characters are refused: PostgreSQL cannot store NUL (U+0000) in a text column at all
(asyncpg's "invalid byte sequence for encoding UTF8: 0x00" became a 500, and a SQLite database
holding one could not be migrated to PostgreSQL), and the other C0/C1 controls only break pages,
logs and terminal output. Tab and line breaks are allowed where text may span lines. So are
bidirectional controls refused (:data:`_BIDI`): an override makes a title read as other text
("abc<U+202E>gnp.exe" shows as "abcexe.png"); right-to-left letters need none of them.
"""

from __future__ import annotations

import os
import re
import unicodedata

from pixelfox import errors

#: C0 controls except tab, LF and CR; DEL; C1 controls
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: every C0 control (tab and line breaks too); DEL; C1 controls
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: bidirectional controls: embeddings and overrides (U+202A-U+202E), isolates (U+2066-U+2069) and the
#: marks LRM, RLM and ALM (U+200E, U+200F, U+061C)
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: the Unicode line and paragraph separators (U+2028, U+2029): line breaks too, refused in one-line text
_SEPARATORS = re.compile("[\u2028\u2029]")


def checked(value: str, field: str, *, multiline: bool = False) -> str:
    """``value`` stripped of surrounding white space; BadRequest naming ``field`` and the code point
    when it holds a control character (tab and line breaks allowed when ``multiline``), a line or
    paragraph separator in one-line text (:data:`_SEPARATORS`) or a bidirectional control (:data:`_BIDI`).

    Multi-line text comes back with every line break as LF: a browser submits a textarea's line
    breaks as CRLF (HTML's form-data newline normalization) while its ``maxlength`` counts each as
    one character, so a description typed up to the limit was over it here, and form saves stored
    CRLF where the JSON API stored LF. A lone CR (old Mac) is a line break too."""
    found = (_CONTROL_MULTILINE if multiline else _CONTROL).search(value)
    if found:
        raise errors.BadRequest(f"{field} contains a control character (U+{ord(found.group()):04X})")
    found = None if multiline else _SEPARATORS.search(value)
    if found:
        raise errors.BadRequest(f"{field} contains a line separator (U+{ord(found.group()):04X}): it is one line")
    found = _BIDI.search(value)
    if found:
        raise errors.BadRequest(f"{field} contains a bidirectional control character (U+{ord(found.group()):04X})")
    if multiline:
        value = lf_line_breaks(value)
    return _trimmed(value)


def normalized(value: str, *, multiline: bool = False) -> str:
    """``value`` as :func:`checked` stores it, without its checks: LF line breaks when ``multiline``,
    no white space or invisible characters at either end. For counting a length as the stored text's
    (an API's ``max_length`` counted the spaces the manager then trimmed)."""
    return _trimmed(lf_line_breaks(value) if multiline else value)


def lf_line_breaks(value: str) -> str:
    """``value`` with every CRLF and lone CR as LF (one character per line break, as a textarea's
    ``maxlength`` counts them)."""
    return value.replace("\r\n", "\n").replace("\r", "\n")


#: invisible characters that join or mark nothing at the ends of a text: zero-width space, word joiner,
#: zero-width no-break space (BOM), soft hyphen, Mongolian vowel separator (the joiners U+200C/U+200D
#: are kept: they shape scripts and bind emoji)
_INVISIBLE = "\u200b\u2060\ufeff\u00ad\u180e"


def _trimmed(value: str) -> str:
    """``value`` without white space or :data:`_INVISIBLE` characters at either end: a title of only
    U+200B read as a title but showed nothing; inside the text they stay."""
    start, end = 0, len(value)
    while start < end and (value[start].isspace() or value[start] in _INVISIBLE):
        start += 1
    while end > start and (value[end - 1].isspace() or value[end - 1] in _INVISIBLE):
        end -= 1
    return value[start:end]


def same_text(given: str, stored: str | None) -> bool:
    """Whether ``given`` (from a form or the API) is ``stored`` unchanged: equal once line breaks are
    LF and surrounding white space is gone (a browser sends a textarea's lines with CRLF)."""
    if stored is None:
        return False
    return given.replace("\r\n", "\n").strip() == stored.replace("\r\n", "\n").strip()


MAX_TITLE = 255  # characters of an image's or album's title (the column is String(255))


def checked_title(value: str) -> str:
    """An image title as :func:`checked` returns it; BadRequest past :data:`MAX_TITLE` characters."""
    title = checked(value, "title")
    if len(title) > MAX_TITLE:
        raise errors.BadRequest(f"title longer than {MAX_TITLE} characters")
    return title


def escaped_controls(value: str) -> str:
    """``value`` with each control or other non-printable character as its Python escape (``\\n``,
    ``\\x1b``): a client's file name shown on one terminal line as it is (a line break split it)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in value)


def printable(value: str) -> str:
    """``value`` without control (Unicode ``Cc``) or surrogate (``Cs``) characters, stripped: for
    client-given names (a file name, a content type) that are only shown, never trusted, so
    they are cleaned rather than refused."""
    return "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Cs")).strip()


MAX_FILENAME = 255  # characters, as most file systems allow (NAME_MAX is 255 bytes on Linux)
MAX_EXTENSION = 16  # characters after the last dot that count as an extension when a long name is cut


#: bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): in a file name they only
#: disguise it ("abc<U+202E>gnp.exe" shows as "abcexe.png")
_BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def safe_filename(raw: str | None, default: str = "upload") -> str:
    """A client's file name fit to store and show: the last path part (``/`` or ``\\``),
    :func:`printable`, without bidi controls, at most :data:`MAX_FILENAME` characters (a longer
    name loses the end of its stem, never its extension); ``default`` when nothing is left or only
    dots are (``..``). Never a path."""
    name = printable(os.path.basename((raw or "").replace("\\", "/")).translate(_BIDI_CONTROLS))
    if not name.strip("."):
        return default
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        keep = dot and stem and 0 < len(ext) <= MAX_EXTENSION
        name = f"{stem[:MAX_FILENAME - len(ext) - 1].rstrip()}.{ext}" if keep else name[:MAX_FILENAME]
    return name.strip() or default


_POPS = {0x202C: None, 0x2069: None}  # PDF, PDI: dropped inside an isolate we close ourselves
_ISOLATE_OPENERS = (0x2066, 0x2067, 0x2068)  # LRI, RLI, FSI


def isolated(text: str) -> str:
    """``text`` wrapped in FIRST STRONG ISOLATE .. POP DIRECTIONAL ISOLATE (U+2068, U+2069) when it
    holds a bidi control (U+202A..U+202E, U+2066..U+2069), else unchanged: for plain-text places
    that ``<bdi>`` cannot reach (``<title>``, ``og:title``, oEmbed), so a title's right-to-left
    override cannot reorder the text after it. The text's own PDF/PDI are dropped (a stray PDI
    would close our isolate early) and one PDI per isolate it opens is added, so our final PDI
    closes our FSI; that PDI also ends every embedding and override opened inside (UAX #9, BD9)."""
    if not any(ord(ch) in _BIDI_CONTROLS for ch in text):
        return text
    inner = text.translate(_POPS)
    opened = sum(inner.count(chr(c)) for c in _ISOLATE_OPENERS)
    return f"\u2068{inner}{chr(0x2069) * opened}\u2069"


def human_bytes(n: int) -> str:
    """``n`` bytes for people, in binary units: ``"512 B"``, ``"1.5 KiB"``, ``"44.5 MiB"``, ``"53.0 GiB"``
    (GiB is the largest unit)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


_LINE_BREAKS = re.compile("[\t\r\n\v\f\u2028\u2029]+")


def one_line(value: str) -> str:
    """``value`` with each run of tabs and line breaks (U+2028 and U+2029 too) made one space: what a
    browser form's text field holds after a paste, for a one-line field (a title) that refuses control
    characters."""
    return _LINE_BREAKS.sub(" ", value)

