"""``before`` cursors of the newest-first lists (ListImages, ListAlbums, the admin's images).

A listing hands out the row id (a ULID: time-ordered, so ``id < cursor`` is "older than") of the
last item of a page as the next page's cursor. An id stays a valid position after its row is
deleted, so a script that pages through its images while deleting some never starts over. The
slug of a row the caller may list is still taken (links made before ids were handed out). Any
other value is refused: it used to be ignored silently, which answered the first page again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from pixelfox import errors, ids


async def before_id(s: AsyncSession, model: Any, before: str, owner_id: str | None = None) -> str | None:
    """The row id a ``before`` cursor stands for, or None for no cursor (the first page).

    ``model`` is a mapped class with ``id``, ``slug`` and (when ``owner_id`` is given) ``user_id``
    columns; a slug counts only for a row of ``owner_id``. Raises BadRequest for a value that is
    neither a row id nor such a slug (another user's slug is as unknown as a made-up one).
    """
    if not before:
        return None
    row = (await s.execute(select(model.id, *([model.user_id] if owner_id is not None else []))
                           .where(model.slug == before))).first()
    if row is not None and (owner_id is None or row[1] == owner_id):
        return str(row[0])
    if ids.ULID.fullmatch(before.upper()):  # ULIDs are case-insensitive; stored upper case
        return before.upper()
    raise errors.BadRequest(f"before: {before[:64]!r} is not a cursor from this list (use the next_before a "
                            "page gave, or leave it out for the first page)")
