"""The Markdown embed code, read back by a CommonMark parser (markdown-it-py, with GFM's
strikethrough): the image's alt text is its title, character for character."""

from __future__ import annotations

import html
import re

import pytest
from markdown_it import MarkdownIt

from web.embed_codes import markdown_code

PAGE, SRC = "https://pics.example/i/abc", "https://cdn.example/t/abc_thumb.webp"


@pytest.mark.parametrize("title", [
    "_DSC0001_.jpg", "my_holiday_photo.jpg", "snake __init__ file", "a*b*c", "**bold**", "x &amp; y", "R&D",
    "<b>tag</b>", "back`tick`", "~~gone~~", "x](https://evil.example) [y \"z\" \\", "!![a](b)", "100% (raw)",
])
def test_markdown_alt_text_reads_back_as_the_title(title: str) -> None:
    code = markdown_code(PAGE, SRC, title)
    rendered = MarkdownIt("commonmark").enable("strikethrough").renderInline(code)
    alt = re.fullmatch(rf'<a href="{re.escape(PAGE)}"><img src="{re.escape(SRC)}" alt="([^"]*)" /></a>', rendered)
    assert alt, (code, rendered)
    assert html.unescape(alt.group(1)) == title, code


def test_markdown_code_of_a_file_name() -> None:
    assert markdown_code(PAGE, SRC, "_DSC0001_.jpg") == f"[![\\_DSC0001\\_.jpg]({SRC})]({PAGE})"
