"""Cursor pages over the manager's lists (``ListImages``, ``ListAlbums``): newest first, ``before=<id>``.

The cursor is the row id of a page's last item (nodes/manager/cursors.py): it stays a valid
position after that item is deleted. Slugs are still taken from older links.

A page carries the cursor of the next one only when there is a next one: the manager is asked for
one item more than the page shows. It answers at most :data:`MANAGER_MAX` items, so a full page of
that size asks once more, for one item, to find out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from aiohttp import web

from pixelfox import errors

MANAGER_MAX = 200  # the most items one ListImages/ListAlbums answer holds (nodes/manager)


class HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=HasId)
Fetch = Callable[[int, str], Awaitable[Sequence[T]]]  # (limit, before) -> items, newest first


async def fetch_page(fetch: Fetch[T], limit: int, before: str) -> tuple[list[T], str]:
    """Up to ``limit`` items older than ``before``, and the next page's cursor ("" on the last page)."""
    items = list(await fetch(min(limit + 1, MANAGER_MAX), before))
    if len(items) > limit:
        return items[:limit], items[limit - 1].id
    if limit >= MANAGER_MAX and len(items) == limit and await fetch(1, items[-1].id):
        return items, items[-1].id
    return items, ""


def first_page_instead(request: web.Request) -> web.HTTPSeeOther:
    """For an HTML page whose ``?before=`` cursor the manager refused (an old link naming a deleted
    image's slug, a hand-edited URL): a 303 to the same page without it, the first page. A browser
    user gets the list rather than a 400 page; the JSON API keeps its 400."""
    query = {k: v for k, v in request.rel_url.query.items() if k != "before"}
    return web.HTTPSeeOther(str(request.rel_url.with_query(query)))


async def fetch_html_page(request: web.Request, fetch: Fetch[T], limit: int) -> tuple[list[T], str]:
    """:func:`fetch_page` with the request's ``?before=`` (at most 64 characters); a cursor the
    manager refuses (BadRequest) raises :func:`first_page_instead`."""
    before = request.query.get("before", "")[:64]
    try:
        return await fetch_page(fetch, limit, before)
    except errors.BadRequest:
        if not before:
            raise
        raise first_page_instead(request) from None
