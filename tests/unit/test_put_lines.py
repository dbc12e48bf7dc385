"""``pixelfox put``'s lines for people: a file name is printed as it is, on one line.

A name with ``[``...``]`` was read as rich markup: ``a[/]b.png`` ended the run with a MarkupError
traceback and ``[bold]x[/bold].png`` was printed as ``x.png``; a name with a line break split its line
(found by a fresh tester through ``up --import``)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pixelfox.cli.put import _say

NAMES = ["a[/]b.png", "[bold]x[/bold].png", "two\nlines.png", "tab\there[1].png", "é[red].png"]


def _line(out: dict[str, object]) -> str:
    buf = io.StringIO()
    _say(out, False, Console(file=buf, width=500, color_system=None, highlight=False))
    return buf.getvalue()


@pytest.mark.parametrize("name", NAMES)
def test_an_uploaded_file_is_named_as_it_is_on_one_line(name: str) -> None:
    url = "http://127.0.0.1:8080/i/AbC[x]"
    said = _line({"file": f"/p/{name}", "url": url, "status": "ready", "deduplicated": False,
                  "deletion_url": "", "error": None})
    shown = name.replace("\n", "\\n").replace("\t", "\\t")
    assert said == f"✓ /p/{shown} → {url}  ready\n", said


@pytest.mark.parametrize("name", NAMES)
def test_a_refused_file_and_its_reason_are_printed_as_they_are(name: str) -> None:
    said = _line({"file": name, "url": None, "status": "rejected", "deduplicated": False, "deletion_url": "",
                  "error": {"code": "unsupported-format", "message": "not an image ([text])"}})
    shown = name.replace("\n", "\\n").replace("\t", "\\t")
    assert said.splitlines()[0] == f"✗ {shown}: not an image ([text])", said
