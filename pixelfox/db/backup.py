"""``pixelfox backup`` and ``restore``: the metadata database to a file and back, verified with the
row counts and table checksums of :mod:`pixelfox.db.rows`.

* :func:`backup` writes JSON Lines (gzip when the file name ends in ``.gz``, any case): a header with
  the schema revision and each table's count and checksum, then one line per row. The file
  is private (0600) and only ever replaces a regular file, never a symlink, device or FIFO.
* :func:`restore` loads a backup into a database, refusing a non-empty one unless ``force``
  (then it empties the tables first), and verifies against the header. A backup at an older
  schema revision is loaded into the schema of that revision and upgraded to the current one
  by the migration scripts, in the same transaction; one at a newer revision is refused.

PostgreSQL sequences behind integer primary keys are moved past the restored ids afterwards.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Table, delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError, InvalidRequestError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pixelfox import errors
from pixelfox.db import generation, migrate
from pixelfox.db.checks import create_private, new_sqlite_file, remove_sqlite_file
from pixelfox.db.identity import identity, open_engine
from pixelfox.db.rows import TableSum, decode, metadata_tables, reset_sequences, stream, table_sum

BACKUP_FORMAT = "pixelfox-metadata-backup"
BACKUP_VERSION = 1


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
        return metadata_tables()
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
        async for rows in stream(conn, t, 1000):
            for r in rows:
                f.write(json.dumps({"t": t.name, "r": r}, separators=(",", ":")) + "\n")
    return header


async def backup(url: str, path: Path | None, *, out: IO[str] | None = None) -> dict[str, Any]:
    """Write the database at ``url`` to ``path`` (JSON Lines, gzip for ``.gz``, see module doc), or to
    ``out`` (default standard output) when ``path`` is None; returns the header.

    The file is written as ``<path>.part`` with mode 0600 (it holds password and API-key hashes)
    and renamed over ``path`` when complete. Raises ``BadRequest`` for a ``path`` that is a
    symlink or not a regular file, or whose folder does not exist (:func:`check_backup_file`); an
    OSError naming ``path`` when it cannot be written (a full disk: ``.part`` removed, ``path`` untouched).
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
            except OSError as exc:
                if exc.filename is None:  # a write or close that failed (a full disk) names no file: this one
                    raise OSError(exc.errno, exc.strerror, str(path)) from exc
                raise
            finally:
                tmp.unlink(missing_ok=True)
    finally:
        await engine.dispose()
    return header


def _why(exc: BaseException) -> str:
    """A reading error in a word: its type's name, or "damaged compressed data" for zlib's bare ``error`` and
    for ``BadGzipFile`` (a file is read as gzip only when it starts with the gzip magic: a later "member"
    with a bad header is garbled data too; which of the two garbage gives depends on its bytes)."""
    return "damaged compressed data" if isinstance(exc, zlib.error | gzip.BadGzipFile) else type(exc).__name__


def read_header(path: Path) -> dict[str, Any]:
    """The header of the backup at ``path``; ``BadRequest`` for a file that does not exist
    (``no such file: PATH``), is not a regular file, is not a PixelFox backup, or is in another
    file format version. ``pixelfox restore`` reads it before it touches any database."""
    if not path.exists():
        raise errors.BadRequest(f"no such file: {path}")
    if not path.is_file():
        raise errors.BadRequest(f"{path} is not a file")
    try:
        with _read(path) as f:
            header = json.loads(f.readline())
    except (ValueError, EOFError, gzip.BadGzipFile, zlib.error) as exc:  # JSON, UTF-8 or gzip errors
        raise errors.BadRequest(f"{path} is not a PixelFox metadata backup ({_why(exc)})") from exc
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
    except (ValueError, KeyError, TypeError, gzip.BadGzipFile, zlib.error) as exc:  # zlib: damaged compressed data
        raise errors.BadRequest(f"{path} is truncated or damaged at line {n} ({_why(exc)})") from exc


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
    """Insert the backup's rows in batches of ``batch``. BadRequest (the caller's transaction rolls
    back) for a row with a column its table lacks (it was dropped without a word) and for rows that
    break the schema's constraints (a row twice, a parent missing: it was a raw database error, exit 1)."""
    current: Table | None = None
    rows: list[dict[str, Any]] = []

    async def flush() -> None:
        assert current is not None
        try:
            await conn.execute(insert(current), rows)
        except IntegrityError as exc:
            raise errors.BadRequest(f"{path} is damaged: its rows of table {current.name} break the schema's "
                                    f"constraints ({str(exc.orig).splitlines()[0]})") from exc
        except (StatementError, InvalidRequestError) as exc:  # a row without a value its table requires
            raise errors.BadRequest(f"{path} is damaged: a row of table {current.name} cannot be stored "
                                    f"({str(getattr(exc, 'orig', None) or exc).splitlines()[0]})") from exc

    for t, row in _items(path, tables):  # the file is in FK order (parents first), table after table
        if rows and (t is not current or len(rows) >= batch):
            await flush()
            rows = []
        current = t
        if not isinstance(row, dict):
            raise errors.BadRequest(f"{path} is damaged: a row of table {t.name} is not an object")
        if unknown := sorted(set(row) - set(t.columns.keys())):
            raise errors.BadRequest(f"{path} is damaged: a row of table {t.name} has a column that table does not "
                                    f"have ({', '.join(unknown[:5])})")
        rows.append(decode(t, row))
    if rows:
        await flush()


async def _verify(conn: AsyncConnection, header: dict[str, Any], tables: dict[str, Table]) -> dict[str, TableSum]:
    """The checksums of ``tables`` as written (uncommitted); ``BadRequest`` unless they match the header."""
    sums = {n: await table_sum(conn, t) for n, t in tables.items()}
    bad = {n: {"want": want, "got": {"rows": sums[n].rows, "sha256": sums[n].sha256}}
           for n, want in header["tables"].items()
           if n in sums and (want["rows"], want["sha256"]) != (sums[n].rows, sums[n].sha256)}
    if bad:  # raised inside the transaction: it rolls back, the database stays as it was
        raise errors.BadRequest(f"restore verification failed (the database was left as it was): {bad}")
    return sums


async def _restore_into(engine: AsyncEngine, path: Path, header: dict[str, Any], revision: str, force: bool,
                        batch: int) -> dict[str, TableSum]:
    """The work of :func:`restore` on an open engine; the restored tables' checksums."""
    head = migrate.head_revision()
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
            tables = {t.name: t for t in metadata_tables()}
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
        await reset_sequences(conn)
        await generation.renew(conn)  # committed with the rows: managers then empty the read model
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
    A SQLite file that does not exist yet is created with mode 0600 (:func:`pixelfox.db.checks.create_private`),
    and removed again when the restore fails.
    Returns ``{"restored", "revision" (now head), "backup_revision", "rows": {table: count}}``.

    Raises ``BadRequest`` for a file that does not exist, is not a PixelFox backup or is truncated, for a
    revision this code does not know (a newer one), for a table the schema at that revision
    lacks, for a non-empty target without ``force``, and when the restored counts or checksums
    differ from the header.
    """
    header = read_header(path)
    revision = _restorable(path, header)
    engine = open_engine(url)
    created = new_sqlite_file(engine.url)
    if created:
        create_private(created)
    done = False
    try:
        sums = await _restore_into(engine, path, header, revision, force, batch)
        done = True
    finally:
        await engine.dispose()
        if created and not done:  # leave nothing behind in a file this restore made
            remove_sqlite_file(created)
    head = migrate.head_revision()
    return {"restored": True, "revision": head, "backup_revision": revision,
            "rows": {n: s.rows for n, s in sums.items()}}
