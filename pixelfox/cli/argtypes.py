"""argparse value types shared by the CLI's commands: numbers checked where they are typed, so a bad
one is argparse's one-line usage error, not a traceback or a silent no-op later."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from pixelfox import errors
from pixelfox.ids import ULID
from pixelfox.text import checked_title


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """A ``type=`` for ``low <= n <= high`` (no upper bound when ``high`` is ``None``); anything
    else raises ``argparse.ArgumentTypeError`` naming the range."""
    span = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def parse(text: str) -> int:
        digits = text.strip().removeprefix("-")
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 12:  # int() also reads "２" and "1_0"
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        value = int(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: give a whole number {span}")
        return value

    parse.__name__ = "whole number"  # argparse names the type in its messages
    return parse


POSITIVE = whole_number(1)
"""1, 2, 3, ...: counts, limits, batch sizes."""


def row_id(text: str) -> str:
    """A ``type=`` for a row id (:data:`pixelfox.ids.ULID`, any case; returned upper case): a mistyped
    one raises ``argparse.ArgumentTypeError`` instead of matching nothing, or everything after it."""
    value = text.strip().upper()
    if value and not ULID.fullmatch(value):  # "" is the default: none (argparse types defaults too)
        raise argparse.ArgumentTypeError(f"{text!r} is not an image id (26 letters and digits, as "
                                         "`pixelfox reprocess` printed it)")
    return value


row_id.__name__ = "image id"


def upload_id(text: str) -> str:
    """A ``type=`` for an upload id (``uploads cancel ID``; returned stripped, upper case as stored): an
    empty or blank one raises ``argparse.ArgumentTypeError`` (the manager answered "no such upload")."""
    value = text.strip().upper()
    if not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not an upload id: give one that `pixelfox uploads` lists")
    return value


upload_id.__name__ = "upload id"


def image_title(text: str) -> str:
    """A ``type=`` for an image title, checked as the manager checks it (:func:`pixelfox.text.checked_title`:
    at most 255 characters once stripped, no control character): a bad one raises
    ``argparse.ArgumentTypeError`` before any file is sent, not one refusal per file."""
    try:
        return checked_title(text)
    except errors.BadRequest as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


image_title.__name__ = "title"


def decimal_number(low: float, high: float | None = None, what: str = "number") -> Callable[[str], float]:
    """A ``type=`` for a finite decimal number with ``low <= x <= high`` (no upper bound when ``high``
    is ``None``), written in ASCII (``float()`` also reads "２" and "1_0"); anything else, ``nan`` and
    ``inf`` included, raises ``argparse.ArgumentTypeError`` naming the range in ``what`` units."""
    span = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"

    def parse(text: str) -> float:
        try:
            if not text.isascii() or "_" in text:
                raise ValueError(text)
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what}") from None
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a {what} {span}")
        return value

    parse.__name__ = what
    return parse


def seconds_or_days(low: float, what: str = "number") -> Callable[[str], float]:
    """A ``type=`` for a finite decimal number of at least ``low`` (seconds, days): see
    :func:`decimal_number`."""
    return decimal_number(low, None, what)


_RATE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}


def byte_rate(text: str) -> int:
    """A ``type=`` for bytes a second: ``500000``, ``512K``, ``1.5M``, ``1G`` (binary units, as curl's
    ``--limit-rate``), at least 1 KiB; anything else raises ``argparse.ArgumentTypeError``."""
    number, scale = text.strip(), 1
    if number and number[-1].upper() in _RATE_UNITS:
        number, scale = number[:-1], _RATE_UNITS[number[-1].upper()]
    elif number[-1:].isalpha():  # "10T", "5k/s"...: name the units rather than call it too small
        raise argparse.ArgumentTypeError(f"{text!r}: a rate's unit is K, M or G (bytes a second: 512K, 2M)")
    try:
        value = decimal_number(0, None, "rate")(number) * scale if number else 0.0
    except argparse.ArgumentTypeError:  # negative, nan, not a number: one refusal below for every bad rate
        value = -1.0
    if not math.isfinite(value):  # 1e300G: past a float (int() of it raised OverflowError, a traceback)
        raise argparse.ArgumentTypeError(f"{text!r} is too large a rate (bytes a second: 512K, 2M)")
    if value < 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate of at least 1K (bytes a second: 512K, 2M)")
    return int(value)
