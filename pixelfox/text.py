"""Text that users give PixelFox to store (titles, descriptions, report reasons, key labels, file names).

Control characters are refused: PostgreSQL cannot store NUL (U+0000) in a text column at all
(asyncpg's "invalid byte sequence for encoding UTF8: 0x00" became a 500, and a SQLite database
holding one could not be migrated to PostgreSQL), and the other C0/C1 controls only break pages,
logs and terminal output. Tab and line breaks are allowed where text may span lines.
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


def checked(value: str, field: str, *, multiline: bool = False) -> str:
    """``value`` stripped of surrounding white space; BadRequest naming ``field`` and the code point
    when it holds a control character (tab and line breaks allowed when ``multiline``)."""
    found = (_CONTROL_MULTILINE if multiline else _CONTROL).search(value)
    if found:
        raise errors.BadRequest(f"{field} contains a control character (U+{ord(found.group()):04X})")
    return value.strip()


def printable(value: str) -> str:
    """``value`` without control (Unicode ``Cc``) or surrogate (``Cs``) characters, stripped: for
    client-given names (a file name, a content type) that are only shown, never trusted, so
    they are cleaned rather than refused."""
    return "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Cs")).strip()


def safe_filename(raw: str | None, default: str = "upload") -> str:
    """A client's file name fit to store and show: the last path part (``/`` or ``\\``),
    :func:`printable`, at most 255 characters; ``default`` when nothing is left. Never a path."""
    name = os.path.basename((raw or "").replace("\\", "/"))
    return printable(name)[:255].strip() or default
