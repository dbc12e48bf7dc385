"""A metadata database for tests that drive the manager's classes in this process: a real SQLite
file (or any database URL) opened the way the manager opens it, tables made without Alembic."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pixelfox.config import DatabaseSettings
from pixelfox.db.engine import create_all_tables, make_engine, session_factory


class Db(NamedTuple):
    """An open test database: its engine and the manager's session factory on it."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


@contextlib.asynccontextmanager
async def open_db(where: Path | str, *, tables: bool = True) -> AsyncIterator[Db]:
    """The database at ``where`` (a SQLite file path, made with its folder if missing, or a database
    URL) through :func:`pixelfox.db.engine.make_engine` (WAL, busy timeout), with every table of the
    models made (``create_all_tables``) unless ``tables`` is false. The engine is disposed of on exit."""
    url = where if isinstance(where, str) else f"sqlite+aiosqlite:///{where}"
    engine = make_engine(DatabaseSettings(url=url))
    try:
        if tables:
            async with engine.begin() as conn:
                await conn.run_sync(create_all_tables)
        yield Db(engine, session_factory(engine))
    finally:
        await engine.dispose()
