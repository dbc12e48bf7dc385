"""Text that users give PixelFox to store (titles, descriptions, report reasons, key labels, file names).

Control characters are refused: PostgreSQL cannot store NUL (U+0000) in a text column at all
(asyncpg's "invalid byte sequence for encoding UTF8: 0x00" became a 500, and a SQLite database
holding one could not be migrated to PostgreSQL), and the other C0/C1 controls only break pages,
logs and terminal output. Tab and line breaks are allowed where text may span lines.
"""

from __future__ import annotations

import re

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


def printable_name(value: str, default: str = "") -> str:
    """A client-given name (a file name, a content type) with control characters dropped: it is
    only shown, never trusted, so it is cleaned rather than refused."""
    return _CONTROL.sub("", value).strip() or default
