"""``pixelfox migrate-db``: copy the metadata from one database to another (SQLite to PostgreSQL),
verified with the row counts and table checksums of :mod:`pixelfox.db.rows`.

:func:`copy_database` brings the target to the current schema, then copies each table in
batches with *upserts* (``INSERT ... ON CONFLICT DO UPDATE``), so it can run while the
source still takes writes and can be interrupted and started again: a table whose count
and checksum already match is skipped, a half-copied one is completed, rows changed since
are updated; only rows the target lacks or holds otherwise are written (``copied`` in the report),
the rest are counted ``unchanged``. Run it once online, stop the managers, run it again (seconds), verify, and
point ``PIXELFOX_DATABASE__URL`` at the target. Target rows whose primary key is no longer
in the source (deleted, or replaced by a row with a new key) are removed first, children
before parents, so the final pass converges to the source; the report counts them.

PostgreSQL sequences behind integer primary keys are moved past the copied ids afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, delete, insert, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pixelfox import errors
from pixelfox.db import generation, migrate
from pixelfox.db.checks import create_private, new_sqlite_file, redact, remove_sqlite_file
from pixelfox.db.identity import identity, open_engine, refuse_live
from pixelfox.db.rows import canon_row, decode, metadata_tables, reset_sequences, stream, table_sum

logger = logging.getLogger(__name__)


def _upsert(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> Any:
    dialect = conn.dialect.name
    pk = [c.name for c in table.primary_key.columns]
    others = [c.name for c in table.columns if c.name not in pk]
    if dialect in ("postgresql", "sqlite") and pk:
        ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table).values(rows)
        if others:
            return ins.on_conflict_do_update(index_elements=pk, set_={c: ins.excluded[c] for c in others})
        return ins.on_conflict_do_nothing(index_elements=pk)
    return insert(table).values(rows)


async def _keys(conn: AsyncConnection, table: Table, batch: int) -> set[tuple[Any, ...]]:
    result = await conn.stream(select(*table.primary_key.columns).execution_options(yield_per=batch))
    out: set[tuple[Any, ...]] = set()
    async for part in result.partitions(batch):
        out.update(tuple(r) for r in part)
    return out


def _with_keys(table: Table, keys: list[tuple[Any, ...]]) -> Any:
    """The WHERE clause selecting the rows of ``table`` whose primary key is one of ``keys``."""
    pk = list(table.primary_key.columns)
    return pk[0].in_([k[0] for k in keys]) if len(pk) == 1 else tuple_(*pk).in_(keys)


async def _copy_changed(sconn: AsyncConnection, dst: AsyncEngine, table: Table, batch: int) -> tuple[int, int]:
    """Upsert, batch by batch, the source rows of ``table`` the target lacks or holds with other values;
    returns ``(copied, unchanged)``: rows written, and rows the target already held as they are (a
    table without a primary key is written whole)."""
    pk = [c.name for c in table.primary_key.columns]
    copied = unchanged = 0
    async for rows in stream(sconn, table, batch):
        changed = rows
        if pk:
            keyed = {tuple(decode(table, r)[c] for c in pk): r for r in rows}
            async with dst.connect() as dconn:
                have = {tuple(t._mapping[c] for c in pk): canon_row(table, t)
                        for t in await dconn.execute(select(table).where(_with_keys(table, list(keyed))))}
            changed = [r for k, r in keyed.items() if have.get(k) != r]
        if changed:
            async with dst.begin() as dconn:
                await dconn.execute(_upsert(dconn, table, [decode(table, r) for r in changed]))
        copied += len(changed)
        unchanged += len(rows) - len(changed)
    return copied, unchanged


async def _remove_gone(sconn: AsyncConnection, dst: AsyncEngine, table: Table, batch: int) -> int:
    """Delete the target rows of ``table`` whose primary key is no longer in the source; returns how many.

    Runs before the upserts, so a row the source replaced (same unique values, a new key, e.g. a
    reprocessed variant) never collides with the old one in the target.
    """
    pk = list(table.primary_key.columns)
    if not pk:
        return 0
    async with dst.connect() as dconn:
        gone = sorted(await _keys(dconn, table, batch) - await _keys(sconn, table, batch))
    for i in range(0, len(gone), batch):
        async with dst.begin() as dconn:
            await dconn.execute(delete(table).where(_with_keys(table, gone[i:i + batch])))
    return len(gone)


@dataclass
class CopyReport:
    """What :func:`copy_database` did: per table source/target counts and checksums, and whether they match."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return all(t["match"] for t in self.tables.values())

    def as_dict(self) -> dict[str, Any]:
        return {"verified": self.verified, "tables": self.tables}


async def copy_database(source_url: str, target_url: str, batch: int = 500, *,
                        live_url: str | None = None) -> CopyReport:
    """Copy every table from ``source_url`` to ``target_url`` and verify (see module doc).

    The target gets the current schema first (:func:`pixelfox.db.migrate.prepare`); the
    source must already be at the current revision (start a manager on it once). Raises
    ``BadRequest`` before writing anything when the two are the same database, when the
    target is ``live_url`` (the database a running cluster uses: copying would overwrite its
    live rows with the source's), for a URL of the wrong form or a missing SQLite source
    file; ``Unavailable`` when a database cannot be reached. A SQLite target file this call created
    is removed again when it fails before the first table is copied (a refusal, a source it cannot
    read); a copy interrupted later leaves it, for the next run to complete.
    """
    src = open_engine(source_url, must_exist=True)
    dst = open_engine(target_url)
    if new := new_sqlite_file(dst.url):
        create_private(new)  # the metadata holds password and API-key hashes
    report = CopyReport()
    copying = False
    try:
        src_id, dst_id = await identity(src), await identity(dst)
        if src_id == dst_id:
            raise errors.BadRequest(f"--source and --target are the same database ({redact(target_url)})")
        await refuse_live(target_url, live_url, "copying the source into it")
        await migrate.prepare(src)
        await migrate.prepare(dst)
        copying = True
        async with src.connect() as sconn:
            removed = {}
            for table in reversed(metadata_tables()):  # children first: no row still points at a parent removed
                removed[table.name] = await _remove_gone(sconn, dst, table, batch)
            for table in metadata_tables():
                before = await table_sum(sconn, table)
                async with dst.connect() as dconn:
                    have = await table_sum(dconn, table)
                copied, unchanged = 0, before.rows  # a table that already matches is skipped
                if (have.rows, have.sha256) != (before.rows, before.sha256):
                    copied, unchanged = await _copy_changed(sconn, dst, table, batch)
                async with dst.connect() as dconn:
                    after = await table_sum(dconn, table)
                now = await table_sum(sconn, table)
                report.tables[table.name] = {
                    "source_rows": now.rows, "target_rows": after.rows, "copied": copied,
                    "unchanged": unchanged, "removed": removed[table.name],
                    "source_sha256": now.sha256, "target_sha256": after.sha256,
                    "match": (now.rows, now.sha256) == (after.rows, after.sha256),
                }
                logger.info("%s: %d rows copied, %d unchanged, %d removed, match=%s", table.name, copied, unchanged,
                            removed[table.name], report.tables[table.name]["match"])
        async with dst.begin() as dconn:
            await reset_sequences(dconn)
            await generation.renew(dconn)  # new contents: managers started on it empty the read model
    finally:
        await src.dispose()
        await dst.dispose()
        if new and not copying:  # refused: leave no file behind that this run made
            remove_sqlite_file(new)
    return report
