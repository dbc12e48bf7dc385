"""The rows of the metadata tables in canonical form, and their *table checksums*: what
``pixelfox migrate-db`` (:mod:`pixelfox.db.dbcopy`), ``backup`` and ``restore``
(:mod:`pixelfox.db.backup`) move and verify.

They work table by table in foreign-key order over every table the code defines
(:func:`pixelfox.db.migrate.target_metadata`). A table's checksum is the SHA-256 of its rows in
primary-key order, each value in a canonical form (times as UTC ISO 8601, so SQLite's naive and
PostgreSQL's aware timestamps compare equal; bytes as base64), hashed as JSON. Two databases with
equal row counts and checksums for every table hold the same metadata.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import DateTime, Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pixelfox.db import generation, migrate


def canon(value: Any) -> Any:
    """``value`` as a JSON value that compares equal across databases: a datetime as UTC ISO 8601 with
    microseconds (a naive one taken as UTC), a date as ISO 8601, bytes as base64; others unchanged."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def canon_row(table: Table, row: Any) -> dict[str, Any]:
    """A result ``row`` of ``table`` as ``{column: canon(value)}``."""
    return {c.name: canon(row._mapping[c.name]) for c in table.columns}


def decode(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """A canonical row back into values to insert into ``table`` (ISO 8601 strings of its
    ``DateTime`` columns as datetimes; SQLAlchemy takes the rest as they are)."""
    out = dict(row)
    for c in table.columns:
        v = out.get(c.name)
        if isinstance(v, str) and isinstance(c.type, DateTime):
            out[c.name] = datetime.fromisoformat(v)
    return out


def metadata_tables() -> list[Table]:
    """Every table whose rows are the metadata, parents first (the database's own generation is not copied)."""
    return [t for t in migrate.target_metadata().sorted_tables if t.name != generation.TABLE]


def _pk_order(table: Table) -> list[Any]:
    return list(table.primary_key.columns) or list(table.columns)


async def stream(conn: AsyncConnection, table: Table, batch: int) -> AsyncIterator[list[dict[str, Any]]]:
    """The canonical rows of ``table`` in primary-key order, ``batch`` rows at a time."""
    result = await conn.stream(select(table).order_by(*_pk_order(table)).execution_options(yield_per=batch))
    async for part in result.partitions(batch):
        yield [canon_row(table, r) for r in part]


@dataclass
class TableSum:
    """A table's row count and checksum (hex SHA-256, see module doc)."""

    rows: int = 0
    sha256: str = ""


async def table_sum(conn: AsyncConnection, table: Table, batch: int = 1000) -> TableSum:
    """Row count and checksum of ``table`` (see module doc)."""
    h = hashlib.sha256()
    n = 0
    async for rows in stream(conn, table, batch):
        for r in rows:
            h.update(json.dumps(r, sort_keys=True, separators=(",", ":")).encode())
            h.update(b"\n")
            n += 1
    return TableSum(n, h.hexdigest())


async def checksums(engine: AsyncEngine) -> dict[str, TableSum]:
    """:func:`table_sum` of every table of :func:`metadata_tables`, by name."""
    async with engine.connect() as conn:
        return {t.name: await table_sum(conn, t) for t in metadata_tables()}


async def reset_sequences(conn: AsyncConnection) -> None:
    """Move PostgreSQL's sequences behind integer primary keys past the ids the tables hold (after
    rows were inserted with their ids); nothing on SQLite."""
    if conn.dialect.name != "postgresql":
        return
    for t in metadata_tables():
        for c in t.primary_key.columns:
            if c.autoincrement is True or (c.autoincrement == "auto" and len(t.primary_key.columns) == 1
                                             and c.type.python_type is int):
                seq = (await conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                          {"t": t.name, "c": c.name})).scalar()
                if seq:
                    await conn.execute(text(f"SELECT setval('{seq}', COALESCE((SELECT MAX({c.name}) FROM "
                                            f"{t.name}), 0) + 1, false)"))
