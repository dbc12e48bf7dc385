"""Alembic environment for PixelFox's metadata schema (owned by the manager).

Run programmatically by :mod:`pixelfox.db.migrate` (the manager at start, ``pixelfox
upgrade-db``), which hands over an open connection in ``config.attributes["connection"]``;
or by the ``alembic`` command with ``-x url=...`` / ``PIXELFOX_DATABASE__URL``. SQLite gets
batch mode (its ALTER TABLE is limited). Every ``pixelfox.db`` module is imported so tables
defined outside ``models.py`` (the job outbox, ...) are part of the target metadata.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from pixelfox.db.migrate import target_metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata(), literal_binds=True, dialect_opts={"paramstyle": "named"}
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("PIXELFOX_DATABASE__URL")
        or config.get_main_option("sqlalchemy.url")
        or "sqlite+aiosqlite:///pixelfox.db"
    )


async def _online_async() -> None:
    engine = create_async_engine(_url())
    async with engine.begin() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    _offline()
elif (conn := config.attributes.get("connection")) is not None:
    _run(conn)
else:
    asyncio.run(_online_async())
