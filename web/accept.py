"""HTTP content negotiation for the few URLs that answer both people and programs.

A deletion link (``/api/v1/delete/...``) is an API URL that people also open from a chat or an
upload tool's history; it answers HTML to a browser and JSON to everything else.
"""

from __future__ import annotations

import mimeparse
from aiohttp import web

#: what such a URL can answer; on a tie (``*/*``, no preference) the last one wins: JSON
_OFFERED = ["text/html", "application/json"]


def prefers_html(request: web.Request) -> bool:
    """Whether the request's ``Accept`` header ranks ``text/html`` above ``application/json``
    (RFC 9110 §12.5.1, q-values included, media types in any case, by python-mimeparse). No
    header, ``*/*``, an equal
    rank, ``text/html;q=0`` or an unparseable header all mean JSON."""
    try:
        return mimeparse.best_match(_OFFERED, request.headers.get("Accept", "").lower()) == "text/html"
    except ValueError:  # MimeTypeParseException: a malformed media range
        return False
