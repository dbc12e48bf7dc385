"""The ``pixelfox`` command's argparse parser class: a usage error is one ``pixelfox:`` line with a
hint where to look (exit 2), not argparse's usage block, and it names a missing or mistyped
sub-command in words (``a nodes command: maintenance, forget``), not by its internal ``dest``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from importlib import metadata
from typing import Any, NoReturn


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

    _given: tuple[str, ...] = ()  # the arguments this parser was last given (a sub-parser: its command's)

    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> Any:
        """As argparse's, remembering ``args`` for :meth:`error`'s hint on file names starting with "-"."""
        self._given = tuple(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def _dash_file_hint(self, message: str) -> str:
        """``message`` with how to pass a file whose name starts with "-" when one of the arguments given
        names an existing file that way and argparse took it for an option ("unrecognized arguments:
        -dash.png", or "the following arguments are required: FILE" for ``put -dash.png``): write it
        as ``./-dash.png``, or after ``--``, shown with this command (``pixelfox put -- -dash.png``)."""
        if not message.startswith(("unrecognized arguments:", "the following arguments are required:")):
            return message
        given = self._given[:self._given.index("--")] if "--" in self._given else self._given
        known = {o for a in self._actions for o in a.option_strings}
        name = next((t for t in given if t.startswith("-") and t not in known and os.path.lexists(t)), None)
        if name is None:
            return message
        words, parser = [], self
        for token in given:  # the sub-commands chosen: `pixelfox put`, from the top parser too
            sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
            if sub is None or token not in sub.choices:
                continue
            words.append(token)
            parser = sub.choices[token]
        command = " ".join([self.prog, *words])
        return (f"{message}; {name} starts with '-', so it was read as an option: to pass a file of that "
                f"name, write ./{name}, or put it after `--`: `{command} -- {name}`")

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
        message = self._dash_file_hint(self._command_words(message))
        self.exit(2, f"pixelfox: {message} (see `{self.prog} --help`)\n")

