"""Moving the metadata: ``pixelfox migrate-db`` (SQLite to PostgreSQL), ``backup`` and ``restore``.

All three work table by table in foreign-key order over every table the code defines
(:func:`pixelfox.db.migrate.target_metadata`), and verify with a row count and a SHA-256
*table checksum*: the rows in primary-key order, each value in a canonical form (times as
UTC ISO 8601, so SQLite's naive and PostgreSQL's aware timestamps compare equal), hashed as
JSON. Two databases with equal checksums for every table hold the same metadata.

* :func:`copy_database` brings the target to the current schema, then copies each table in
  batches with *upserts* (``INSERT ... ON CONFLICT DO UPDATE``), so it can run while the
  source still takes writes and can be interrupted and started again: a table whose count
  and checksum already match is skipped, a half-copied one is completed, rows changed since
  are updated; only rows the target lacks or holds otherwise are written (``copied`` in the report),
  the rest are counted ``unchanged``. Run it once online, stop the managers, run it again (seconds), verify, and
  point ``PIXELFOX_DATABASE__URL`` at the target. Target rows whose primary key is no longer
  in the source (deleted, or replaced by a row with a new key) are removed first, children
  before parents, so the final pass converges to the source; the report counts them.
* :func:`backup` writes JSON Lines (gzip when the file name ends in ``.gz``, any case): a header with
  the schema revision and each table's count and checksum, then one line per row. The file
  is private (0600) and only ever replaces a regular file, never a symlink, device or FIFO.
* :func:`restore` loads a backup into a database, refusing a non-empty one unless ``force``
  (then it empties the tables first), and verifies against the header. A backup at an older
  schema revision is loaded into the schema of that revision and upgraded to the current one
  by the migration scripts, in the same transaction; one at a newer revision is refused.

PostgreSQL sequences behind integer primary keys are moved past the copied ids afterwards.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import DateTime, Table, delete, func, insert, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pixelfox import errors
from pixelfox.config import DatabaseSettings
from pixelfox.db import generation, migrate
from pixelfox.db.checks import check_url, new_sqlite_file, redact, unreachable
from pixelfox.db.engine import make_engine

logger = logging.getLogger(__name__)

BACKUP_FORMAT = "pixelfox-metadata-backup"
BACKUP_VERSION = 1


def _canon(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _row(table: Table, row: Any) -> dict[str, Any]:
    return {c.name: _canon(row._mapping[c.name]) for c in table.columns}


def _pk_order(table: Table) -> list[Any]:
    return list(table.primary_key.columns) or list(table.columns)


def _tables() -> list[Table]:
    """Every table whose rows are the metadata (the database's own generation is not copied)."""
    return [t for t in migrate.target_metadata().sorted_tables if t.name != generation.TABLE]


async def _stream(conn: AsyncConnection, table: Table, batch: int) -> AsyncIterator[list[dict[str, Any]]]:
    result = await conn.stream(select(table).order_by(*_pk_order(table)).execution_options(yield_per=batch))
    async for part in result.partitions(batch):
        yield [_row(table, r) for r in part]


def open_engine(url: str, *, must_exist: bool = False) -> AsyncEngine:
    """:func:`check_url`, then the engine (connections are opened later, see :func:`identity`).

    Raises ``BadRequest`` for a SQLite file whose folder does not exist (:func:`new_sqlite_file`,
    the manager's own start-up check): the engine would otherwise create the folders of a typo."""
    new_sqlite_file(check_url(url, must_exist=must_exist))
    return make_engine(DatabaseSettings(url=url))


async def identity(engine: AsyncEngine) -> tuple[str, ...]:
    """What makes a database itself, whatever URL names it: a SQLite file's device and inode (the
    file SQLite itself reports having opened, so ``file:`` URIs, symlinks and hard links all count as
    the same file); a PostgreSQL server's system identifier (or start time and port, without the
    right to read it) and the database name. Raises ``Unavailable`` when it cannot be reached."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(text("PRAGMA database_list"))).all()
        except (OSError, DBAPIError) as exc:
            raise unreachable(url.render_as_string(hide_password=False), exc) from exc
        path = next((str(r[2]) for r in rows if r[1] == "main"), "")
        if not path:  # an in-memory database: only ever itself
            return ("sqlite-memory", str(id(engine)))
        st = os.stat(path)
        return ("sqlite", str(st.st_dev), str(st.st_ino))
    try:
        async with engine.connect() as conn:
            db = str((await conn.execute(text("SELECT current_database()"))).scalar())
            try:
                async with conn.begin_nested():
                    ident = (await conn.execute(text("SELECT system_identifier FROM pg_control_system()"))).scalar()
                return ("postgresql", str(ident), db)
            except DBAPIError:
                row = (await conn.execute(text("SELECT pg_postmaster_start_time(), inet_server_port()"))).one()
                return ("postgresql", f"{row[0].isoformat()}:{row[1]}", db)
    except (OSError, DBAPIError) as exc:
        raise unreachable(url.render_as_string(hide_password=False), exc) from exc


@dataclass
class TableSum:
    rows: int = 0
    sha256: str = ""


async def table_sum(conn: AsyncConnection, table: Table, batch: int = 1000) -> TableSum:
    """Row count and checksum of ``table`` (see module doc)."""
    h = hashlib.sha256()
    n = 0
    async for rows in _stream(conn, table, batch):
        for r in rows:
            h.update(json.dumps(r, sort_keys=True, separators=(",", ":")).encode())
            h.update(b"\n")
            n += 1
    return TableSum(n, h.hexdigest())


async def checksums(engine: AsyncEngine) -> dict[str, TableSum]:
    """:func:`table_sum` of every table, by name."""
    async with engine.connect() as conn:
        return {t.name: await table_sum(conn, t) for t in _tables()}


def _decode(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for c in table.columns:
        v = out.get(c.name)
        if isinstance(v, str) and isinstance(c.type, DateTime):
            out[c.name] = datetime.fromisoformat(v)
    return out


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


async def _reset_sequences(conn: AsyncConnection) -> None:
    if conn.dialect.name != "postgresql":
        return
    for t in _tables():
        for c in t.primary_key.columns:
            if c.autoincrement is True or (c.autoincrement == "auto" and len(t.primary_key.columns) == 1
                                             and c.type.python_type is int):
                seq = (await conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                          {"t": t.name, "c": c.name})).scalar()
                if seq:
                    await conn.execute(text(f"SELECT setval('{seq}', COALESCE((SELECT MAX({c.name}) FROM "
                                            f"{t.name}), 0) + 1, false)"))


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
    async for rows in _stream(sconn, table, batch):
        changed = rows
        if pk:
            keyed = {tuple(_decode(table, r)[c] for c in pk): r for r in rows}
            async with dst.connect() as dconn:
                have = {tuple(t._mapping[c] for c in pk): _row(table, t)
                        for t in await dconn.execute(select(table).where(_with_keys(table, list(keyed))))}
            changed = [r for k, r in keyed.items() if have.get(k) != r]
        if changed:
            async with dst.begin() as dconn:
                await dconn.execute(_upsert(dconn, table, [_decode(table, r) for r in changed]))
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
    file; ``Unavailable`` when a database cannot be reached.
    """
    src = open_engine(source_url, must_exist=True)
    dst = open_engine(target_url)
    report = CopyReport()
    try:
        src_id, dst_id = await identity(src), await identity(dst)
        if src_id == dst_id:
            raise errors.BadRequest(f"--source and --target are the same database ({redact(target_url)})")
        await refuse_live(target_url, live_url, "copying the source into it")
        await migrate.prepare(src)
        await migrate.prepare(dst)
        async with src.connect() as sconn:
            removed = {}
            for table in reversed(_tables()):  # children first: no row still points at a parent removed
                removed[table.name] = await _remove_gone(sconn, dst, table, batch)
            for table in _tables():
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
            await _reset_sequences(dconn)
            await generation.renew(dconn)  # new contents: managers started on it empty the read model
    finally:
        await src.dispose()
        await dst.dispose()
    return report


def _text(binary: IO[bytes], gz: bool) -> IO[str]:
    raw: IO[bytes] = gzip.GzipFile(fileobj=binary, mode=binary.mode) if gz else binary  # type: ignore[assignment]
    return io.TextIOWrapper(raw, encoding="utf-8", newline="\n")  # type: ignore[arg-type]


def _read(path: Path) -> IO[str]:
    """``path`` as text, gunzipped when it starts with the gzip magic (whatever its name)."""
    f = path.open("rb")
    gz = f.read(2) == b"\x1f\x8b"
    f.seek(0)
    return _text(f, gz)


def check_backup_file(path: Path) -> None:
    """``BadRequest`` unless ``path`` may be written as a backup: its folder exists, and it (and its
    ``.part``) is a regular file or absent; never a symlink, device or FIFO, which a rename would replace."""
    if not path.parent.is_dir():
        raise errors.BadRequest(f"cannot write {path}: the folder {path.parent} does not exist")
    for p in (path, path.with_name(path.name + ".part")):
        if p.is_symlink():
            raise errors.BadRequest(f"{p} is a symbolic link: write the backup to a regular file path")
        if p.exists() and not p.is_file():
            raise errors.BadRequest(f"{p} exists and is not a regular file (a device, FIFO or folder): "
                                    "write the backup to a regular file path, or to - for standard output")


async def _backup_tables(conn: AsyncConnection, revision: str | None) -> list[Table]:
    """The tables a backup of a database at ``revision`` holds: the models' at head (or with no
    revision); at an older revision of the scripts, the tables as the database has them (the
    columns of that revision, as the PixelFox of that revision wrote them). ``BadRequest`` for a
    revision the scripts do not know: a newer PixelFox's database, whose columns this code lacks."""
    if revision is None or revision == migrate.head_revision():
        return _tables()
    if revision not in migrate.revisions():
        raise errors.BadRequest(
            f"the database is at schema revision {revision}, which this PixelFox (schema revision "
            f"{migrate.head_revision()}) does not know: back it up with the PixelFox that runs it, or upgrade PixelFox")
    return await migrate.tables_at(conn, frozenset({generation.TABLE}))


async def _write_backup(conn: AsyncConnection, f: IO[str]) -> dict[str, Any]:
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    revision = await conn.run_sync(migrate._current)
    tables = await _backup_tables(conn, revision)
    sums = {t.name: await table_sum(conn, t) for t in tables}
    header = {"format": BACKUP_FORMAT, "version": BACKUP_VERSION, "revision": revision,
              "created_at": datetime.now(UTC).isoformat(),
              "tables": {k: {"rows": v.rows, "sha256": v.sha256} for k, v in sums.items()}}
    f.write(json.dumps(header) + "\n")
    for t in tables:
        async for rows in _stream(conn, t, 1000):
            for r in rows:
                f.write(json.dumps({"t": t.name, "r": r}, separators=(",", ":")) + "\n")
    return header


async def backup(url: str, path: Path | None, *, out: IO[str] | None = None) -> dict[str, Any]:
    """Write the database at ``url`` to ``path`` (JSON Lines, gzip for ``.gz``, see module doc), or to
    ``out`` (default standard output) when ``path`` is None; returns the header.

    The file is written as ``<path>.part`` with mode 0600 (it holds password and API-key hashes)
    and renamed over ``path`` when complete. Raises ``BadRequest`` for a ``path`` that is a
    symlink or not a regular file, or whose folder does not exist (:func:`check_backup_file`).
    Reads in one transaction, so the file is a consistent snapshot on PostgreSQL (REPEATABLE
    READ) and on SQLite (one read transaction in WAL mode).
    """
    if path is not None:
        check_backup_file(path)
    engine = open_engine(url, must_exist=True)
    try:
        await identity(engine)  # one clear error for a database that cannot be reached
        async with engine.connect() as conn:
            if path is None:
                return await _write_backup(conn, out or sys.stdout)
            tmp = path.with_name(path.name + ".part")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                os.fchmod(fd, 0o600)
                with _text(os.fdopen(fd, "wb"), path.suffix.lower() == ".gz") as f:
                    header = await _write_backup(conn, f)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    finally:
        await engine.dispose()
    return header


def _read_header(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise errors.BadRequest(f"{path} is not a file")
    try:
        with _read(path) as f:
            header = json.loads(f.readline())
    except (ValueError, EOFError, gzip.BadGzipFile) as exc:  # JSON, UTF-8 or gzip errors
        raise errors.BadRequest(f"{path} is not a PixelFox metadata backup ({type(exc).__name__})") from exc
    if not isinstance(header, dict) or header.get("format") != BACKUP_FORMAT:
        raise errors.BadRequest(f"{path} is not a PixelFox metadata backup")
    if header.get("version") != BACKUP_VERSION:
        raise errors.BadRequest(f"{path} is a backup in file format version {header.get('version')!r}; this "
                                f"PixelFox reads version {BACKUP_VERSION}: restore with the PixelFox that wrote it")
    return header


def _items(path: Path, tables: dict[str, Table]) -> Iterator[tuple[Table, dict[str, Any]]]:
    """The rows of a backup after its header; ``BadRequest`` for a truncated or damaged file."""
    n = 1
    try:
        with _read(path) as f:
            f.readline()
            for line in f:
                n += 1
                item = json.loads(line)
                yield tables[item["t"]], item["r"]
    except EOFError as exc:
        raise errors.BadRequest(f"{path} is truncated (the compressed data ends early, after line {n})") from exc
    except (ValueError, KeyError, TypeError, gzip.BadGzipFile) as exc:
        raise errors.BadRequest(f"{path} is truncated or damaged at line {n} ({type(exc).__name__})") from exc


async def refuse_live(url: str, live_url: str | None, what: str) -> None:
    """``BadRequest`` when ``url`` is the same database as ``live_url`` (the one a running cluster
    uses), so ``what`` (copying into it, restoring over it) cannot replace live rows under it."""
    if not live_url:
        return
    engine = open_engine(url)
    try:
        live = open_engine(live_url)
    except errors.BadRequest:  # the recorded live URL no longer names a usable database
        await engine.dispose()
        return
    try:
        try:
            same = await identity(engine) == await identity(live)
        except errors.Unavailable:
            return  # one of them cannot be reached: not the same running database
    finally:
        await engine.dispose()
        await live.dispose()
    if same:
        raise errors.BadRequest(
            f"{redact(url)} is the database the running cluster uses: {what} would replace its live rows. "
            "Stop the cluster first, or pick another database")


def _restorable(path: Path, header: dict[str, Any]) -> str:
    """The backup's schema revision when this code can restore it: its head or an older revision
    of its scripts; ``BadRequest`` naming both revisions otherwise (a newer PixelFox wrote it)."""
    revision = header.get("revision")
    if revision not in migrate.revisions():
        raise errors.BadRequest(
            f"{path} is a backup at schema revision {revision}, which this PixelFox (schema revision "
            f"{migrate.head_revision()}) does not know: a newer PixelFox wrote it; upgrade PixelFox to restore it")
    return str(revision)


async def _insert_rows(conn: AsyncConnection, path: Path, tables: dict[str, Table], batch: int) -> None:
    current: Table | None = None
    rows: list[dict[str, Any]] = []
    for t, row in _items(path, tables):  # the file is in FK order (parents first), table after table
        if rows and (t is not current or len(rows) >= batch):
            await conn.execute(insert(current), rows)  # type: ignore[arg-type]
            rows = []
        current = t
        rows.append(_decode(t, row))
    if rows:
        await conn.execute(insert(current), rows)  # type: ignore[arg-type]


async def _verify(conn: AsyncConnection, header: dict[str, Any], tables: dict[str, Table]) -> dict[str, TableSum]:
    """The checksums of ``tables`` as written (uncommitted); ``BadRequest`` unless they match the header."""
    sums = {n: await table_sum(conn, t) for n, t in tables.items()}
    bad = {n: {"want": want, "got": {"rows": sums[n].rows, "sha256": sums[n].sha256}}
           for n, want in header["tables"].items()
           if n in sums and (want["rows"], want["sha256"]) != (sums[n].rows, sums[n].sha256)}
    if bad:  # raised inside the transaction: it rolls back, the database stays as it was
        raise errors.BadRequest(f"restore verification failed (the database was left as it was): {bad}")
    return sums


async def restore(path: Path, url: str, force: bool = False, batch: int = 500) -> dict[str, Any]:
    """Load the backup at ``path`` into the database at ``url`` and verify it, all in one
    transaction (emptying the tables with ``force``, the inserts, the verification): any failure,
    a truncated file or a verification that does not match included, rolls it back and leaves the
    database as it was.

    A backup at the code's revision: only the schema (:func:`pixelfox.db.migrate.prepare`) is
    committed before. A backup at an older revision of the code's scripts: the transaction also
    drops PixelFox's tables and builds them as the scripts do up to that revision
    (:func:`pixelfox.db.migrate.rebuild_at`), loads and verifies the rows there, then upgrades to
    head (:func:`pixelfox.db.migrate.upgrade_in`); DDL is transactional on PostgreSQL, and on
    SQLite once the transaction is begun explicitly (:func:`pixelfox.db.migrate.lock_schema`).
    Either way the database gets a new generation (managers then empty the read model).
    Returns ``{"restored", "revision" (now head), "backup_revision", "rows": {table: count}}``.

    Raises ``BadRequest`` for a file that is not a PixelFox backup or is truncated, for a
    revision this code does not know (a newer one), for a table the schema at that revision
    lacks, for a non-empty target without ``force``, and when the restored counts or checksums
    differ from the header.
    """
    header = _read_header(path)
    revision = _restorable(path, header)
    head = migrate.head_revision()
    engine = open_engine(url)
    try:
        await identity(engine)
        if revision == head:
            await migrate.prepare(engine)
        async with engine.begin() as conn:
            await migrate.lock_schema(conn)
            existing = await migrate.tables_at(conn, frozenset({generation.TABLE}))
            counts = [(await conn.execute(select(func.count()).select_from(t))).scalar() for t in existing]
            if any(counts) and not force:
                raise errors.BadRequest("the target database is not empty (use --force to replace its contents)")
            if revision == head:
                for t in reversed(existing):
                    await conn.execute(delete(t))
                tables = {t.name: t for t in _tables()}
            else:  # the schema as the backup knew it, in this transaction
                await migrate.rebuild_at(conn, revision)
                tables = {t.name: t for t in await migrate.tables_at(conn, frozenset({generation.TABLE}))}
            if missing := sorted(set(header["tables"]) - set(tables)):
                raise errors.BadRequest(f"{path} holds tables {missing}, which the schema at revision "
                                        f"{revision} does not have")
            await _insert_rows(conn, path, tables, batch)
            sums = await _verify(conn, header, tables)
            if revision != head:
                if conn.dialect.name == "postgresql":  # the checksums' cursors stay open until then, and
                    await conn.execute(text("CLOSE ALL"))  # PostgreSQL refuses ALTER TABLE on their tables
                await migrate.upgrade_in(conn)
            await _reset_sequences(conn)
            await generation.renew(conn)  # committed with the rows: managers then empty the read model
    finally:
        await engine.dispose()
    return {"restored": True, "revision": head, "backup_revision": revision,
            "rows": {n: s.rows for n, s in sums.items()}}
