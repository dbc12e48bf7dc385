"""Whole numbers from untrusted text (headers, query strings, signed-URL fields).

``str.isdigit()`` is true for non-ASCII digits such as ``"²"`` or ``"٣"``, which ``int()`` then
refuses or reads differently, so a check built on it turns odd input into a 500. Everything
that reads a number from a request goes through :func:`ascii_int`.
"""

from __future__ import annotations

#: digits accepted at most (an int64 has 19), so a huge value is refused before any arithmetic
MAX_DIGITS = 18


def is_ascii_digits(text: str, max_digits: int = MAX_DIGITS) -> bool:
    """True for ``"0"``-``"9"`` only, 1 to ``max_digits`` of them (no sign, space or Unicode digit)."""
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def ascii_int(text: str | None, default: int | None = None, max_digits: int = MAX_DIGITS) -> int | None:
    """``int(text)`` when :func:`is_ascii_digits`, else ``default``."""
    return int(text) if text is not None and is_ascii_digits(text, max_digits) else default
