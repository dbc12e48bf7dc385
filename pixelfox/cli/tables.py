"""Where the CLI prints its tables (``pixelfox status``, ``pixelfox jobs``)."""

from __future__ import annotations

import sys

from rich.console import Console

PIPE_WIDTH = 200
"""Columns when stdout is not a terminal (a pipe, a file, CI logs): rich would assume 80 and cut
every cell of a wide table to "manag…"; 200 fits the status table of a long host name."""


def table_console() -> Console:
    """A rich Console for stdout: the terminal's width, or :data:`PIPE_WIDTH` columns when piped."""
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
