"""Accept negotiation of URLs that answer people and programs (web/accept.py)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from web.accept import prefers_html

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


@pytest.mark.parametrize(("accept", "html"), [
    (BROWSER, True),
    ("text/html", True),
    ("TEXT/HTML", True),  # media types are case-insensitive
    ("text/*, application/json;q=0.5", True),
    (None, False),  # curl without -H, requests, ShareX
    ("*/*", False),
    ("application/json", False),
    ("application/json, text/html;q=0.5", False),  # the old substring test said HTML
    ("text/html;q=0, */*", False),  # HTML explicitly refused
    ("text/html;q=0.9, application/json;q=0.9", False),  # a tie goes to JSON
    ("image/png", False),
    ("garbage;;q=x", False),  # unparseable: JSON, no error
])
def test_html_only_when_ranked_above_json(accept: str | None, html: bool) -> None:
    headers = {} if accept is None else {"Accept": accept}
    assert prefers_html(make_mocked_request("GET", "/api/v1/delete/x", headers=headers)) is html
