"""The database *generation*: a random id in the one-row table ``database_generation``.

It names the contents of one database: two databases have different generations, and
``pixelfox restore`` and ``migrate-db`` give their target a new one, in the same transaction
as the rows they write. A manager reads it at start (:func:`current`, which writes the first
one) and empties the Redis read model when the cache was filled from another generation
(:func:`pixelfox.readmodel.follow_database`), so images a restore removed are not served from
the cache. The table is not part of backups or of ``migrate-db``'s copy (:data:`TABLE`).
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pixelfox.db.models import DatabaseGeneration

#: the table's name (left out of backups and copies)
TABLE = DatabaseGeneration.__tablename__
_ROW = 1


def _insert(conn: AsyncConnection, value: str):  # type: ignore[no-untyped-def]
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        DatabaseGeneration).values(id=_ROW, generation=value)


async def current(engine: AsyncEngine) -> str:
    """The database's generation (32 hex characters), writing a new one when it has none yet.
    Safe with several managers starting at once: the first insert wins, the others read it."""
    async with engine.begin() as conn:
        await conn.execute(_insert(conn, secrets.token_hex(16)).on_conflict_do_nothing(index_elements=["id"]))
        return str((await conn.execute(select(DatabaseGeneration.generation).where(
            DatabaseGeneration.id == _ROW))).scalar_one())


async def renew(conn: AsyncConnection) -> str:
    """Give the database a new generation inside ``conn``'s transaction (committed with it); returns it."""
    value = secrets.token_hex(16)
    ins = _insert(conn, value)
    await conn.execute(ins.on_conflict_do_update(index_elements=["id"], set_={"generation": value}))
    return value
