"""The ``pixelfox`` command's argparse parser class: a usage error is one ``pixelfox:`` line with a
hint where to look (exit 2), not argparse's usage block, and it names a missing or mistyped
sub-command in words (``a nodes command: maintenance, forget``), not by its internal ``dest``."""

from __future__ import annotations

import argparse
from importlib import metadata
from typing import NoReturn


def version() -> str:
    """The installed ``pixelfox`` distribution's version ("0.1.0"), or "unknown" when it is run from a
    source tree that was never installed."""
    try:
        return metadata.version("pixelfox")
    except metadata.PackageNotFoundError:
        return "unknown"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` (its sub-parsers are this class too) whose ``error`` prints
    ``pixelfox: MESSAGE (see `pixelfox nodes --help`)`` to stderr and exits 2."""

    def _command_words(self, message: str) -> str:
        """``message`` with each sub-command's internal name (``nodes_cmd``) put in words."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and action.dest not in (None, argparse.SUPPRESS):
                parent = self.prog.removeprefix("pixelfox").strip()
                what = f"a {parent} command" if parent else "a command"
                names = ", ".join(action.choices)
                message = message.replace(f"the following arguments are required: {action.dest}",
                                          f"missing {what}: {names}")
                message = message.replace(f"argument {action.dest}: ", f"{what}: ")
        return message

    def error(self, message: str) -> NoReturn:
        """Print the one-line usage error and exit 2 (argparse calls this for every bad argument)."""
        self.exit(2, f"pixelfox: {self._command_words(message)} (see `{self.prog} --help`)\n")

