"""The copy-and-paste codes on an image page (share link, direct link, HTML, Markdown, BBCode).

Titles and file names come from uploaders, so each code escapes them the way its own format
needs; the page template then escapes the whole code once more for its ``value=""``. The
codes are one line: whitespace and control characters in a title become single spaces.
"""

from __future__ import annotations

import html

#: a backslash before every character Markdown reads as syntax in link text (CommonMark lets any ASCII
#: punctuation be escaped): brackets and parentheses end the text or the link, ``* _ ` ~`` are emphasis,
#: code and strikethrough (``_DSC0001_.jpg`` lost its underscores), ``< &`` start HTML and entities
_MD_TEXT = str.maketrans({c: "\\" + c for c in "\\[]()*_`~<>&"})
_MD_URL = str.maketrans({"(": "%28", ")": "%29", " ": "%20", "<": "%3C", ">": "%3E", "\\": "%5C"})
_BB_URL = str.maketrans({"[": "%5B", "]": "%5D"})


def one_line(text: str) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def html_code(page_url: str, src: str, alt: str) -> str:
    e = html.escape
    return f'<a href="{e(page_url)}"><img src="{e(src)}" alt="{e(one_line(alt), quote=True)}"></a>'


def markdown_code(page_url: str, src: str, alt: str) -> str:
    text = one_line(alt).translate(_MD_TEXT)
    return f"[![{text}]({src.translate(_MD_URL)})]({page_url.translate(_MD_URL)})"


def bbcode(page_url: str, src: str) -> str:
    return f"[url={page_url.translate(_BB_URL)}][img]{src.translate(_BB_URL)}[/img][/url]"


def share_codes(page_url: str, direct_url: str, src: str, title: str) -> list[tuple[str, str]]:
    """``(label, code)`` pairs in the order the page shows them."""
    return [
        ("Share page", page_url),
        ("Direct link", direct_url),
        ("HTML", html_code(page_url, src, title)),
        ("Markdown", markdown_code(page_url, src, title)),
        ("BBCode", bbcode(page_url, src)),
    ]
