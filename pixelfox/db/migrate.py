"""Schema migrations (Alembic) for the metadata database, run by the manager at start.

The migration scripts live in ``pixelfox/db/migrations/versions/``. :func:`prepare` is what
a manager calls before serving, so a single box still starts with no extra step:

* an empty database gets the whole schema (``create_all``) and is stamped at ``head``;
* a database with an ``alembic_version`` row is upgraded to ``head``;
* a database with tables but no version (made by PixelFox before migrations existed) is
  stamped at the first revision and upgraded from there.

After that, any table the code knows but no migration created yet is created (a safety net
while a change is in development; :func:`drift` and the test suite report it). Several
managers may start at once against one database: PostgreSQL takes an advisory lock for the
whole step; a SQLite file is guarded by an exclusive ``flock`` on ``<file>.schema-lock`` (SQLite
runs DDL outside the transaction, so a second manager could otherwise see half a schema; the file
is removed when the step is done); any
other transient error is retried.
``pixelfox upgrade-db`` runs :func:`upgrade` as an explicit step (Kubernetes init job).

``pixelfox restore`` of a backup made at an older revision uses :func:`lock_schema`,
:func:`rebuild_at`, :func:`tables_at` and :func:`upgrade_in` to build the schema of the
backup's revision, load it and upgrade it to ``head``, all in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import logging
import os
import pkgutil
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, Table, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pixelfox import errors
from pixelfox.db.engine import sqlite_path

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"  # the first revision: the schema as it was when migrations arrived
_LOCK_ID = 0x5069786C  # "Pixl": PostgreSQL advisory lock id for schema changes
_SKIP = {"migrate", "migrations", "engine", "tools", "replicas", "checks"}


def target_metadata() -> MetaData:
    """The metadata of every table PixelFox defines (imports each ``pixelfox.db`` module)."""
    import pixelfox.db
    from pixelfox.db.models import Base

    for mod in pkgutil.iter_modules(pixelfox.db.__path__):
        if mod.name not in _SKIP:
            importlib.import_module(f"pixelfox.db.{mod.name}")
    return Base.metadata


def alembic_config() -> Config:
    """An Alembic ``Config`` pointing at the packaged migration scripts (no ini file needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest revision id among the scripts."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def revisions() -> list[str]:
    """Every revision id of the scripts, oldest first (``BASELINE`` ... :func:`head_revision`)."""
    return [s.revision for s in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))]


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def check_known(version: str | None) -> None:
    """Raise ``BadRequest`` (one line naming both revisions) when ``version``, a database's
    ``alembic_version``, is not among the scripts: a newer PixelFox wrote it, and Alembic would
    only say "Can't locate revision". ``None`` (no version yet) passes."""
    if version is not None and version not in revisions():
        raise errors.BadRequest(
            f"the database is at schema revision {version}, which this PixelFox (newest {head_revision()}) "
            "does not know: it was written by a newer PixelFox; upgrade this one, or restore a backup into "
            "a new database")


def _with_conn(fn: Any, *args: Any) -> Any:
    def run(conn: Connection) -> Any:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        return fn(cfg, *args)

    return run


def _prepare_sync(conn: Connection) -> str:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    meta = target_metadata()
    tables = set(inspect(conn).get_table_names())
    version = _current(conn)
    check_known(version)
    if not (tables - {"alembic_version"}):
        meta.create_all(conn)
        _with_conn(command.stamp, "head")(conn)
        action = "created"
    else:
        if version is None:
            _with_conn(command.stamp, BASELINE)(conn)
        _with_conn(command.upgrade, "head")(conn)
        missing = [t for t in meta.sorted_tables if t.name not in set(inspect(conn).get_table_names())]
        if missing:
            logger.warning("tables without a migration yet, created directly: %s", [t.name for t in missing])
            meta.create_all(conn, tables=missing)
        action = "upgraded" if version != head_revision() else "current"
    return action


@contextlib.asynccontextmanager
async def _sqlite_file_lock(engine: AsyncEngine, timeout_s: float = 120.0) -> Any:
    """Hold an exclusive ``flock`` on ``<database file>.schema-lock`` (no-op for other databases);
    the file (mode 0600) is removed when the step is done. A process that got the lock on a file
    another one removed meanwhile opens the new one and tries again.

    Raises ``TimeoutError`` after ``timeout_s`` seconds (another process holds it that long).
    """
    db = sqlite_path(engine.url) if engine.dialect.name == "sqlite" else None
    if not db or db == ":memory:":
        yield
        return
    path = f"{db}.schema-lock"
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        fd = await asyncio.to_thread(os.open, path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{path} held by another process for {timeout_s:.0f} s") from None
            await asyncio.sleep(0.1)
            continue
        if _same_file(fd, path):
            break
        os.close(fd)  # locked a file its holder removed when done: take the current one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # still holding the lock: a waiter on this file sees it gone and retries
        os.close(fd)  # closing the file releases the lock


def _same_file(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


async def prepare(engine: AsyncEngine, attempts: int = 5) -> str:
    """Bring the database to the current schema (see module doc); returns created|upgraded|current.

    Raises the database error if it persists after ``attempts`` tries 0.5 s apart (a
    concurrent manager doing the same step is the expected transient cause), ``BadRequest``
    for a revision the scripts do not know (:func:`check_known`), or
    ``TimeoutError`` if another process holds a SQLite file's schema lock for 120 s.
    """
    for attempt in range(1, attempts + 1):
        try:
            async with _sqlite_file_lock(engine), engine.begin() as conn:
                action: str = await conn.run_sync(_prepare_sync)
            logger.info("database schema %s (revision %s)", action, head_revision())
            return action
        except DBAPIError as exc:
            if attempt == attempts:
                raise
            logger.info("schema step raced another manager (%s); retrying", exc.__class__.__name__)
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def upgrade(url: str, revision: str = "head") -> None:
    """``alembic upgrade`` the database at ``url`` (an empty one gets the full schema via :func:`prepare`)."""
    from pixelfox.config import DatabaseSettings
    from pixelfox.db.engine import make_engine

    engine = make_engine(DatabaseSettings(url=url))
    try:
        if revision == "head":
            await prepare(engine)
            return
        async with engine.begin() as conn:
            await conn.run_sync(_with_conn(command.upgrade, revision))
    finally:
        await engine.dispose()


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """``alembic downgrade`` to ``revision`` (``base`` drops everything the migrations made)."""
    async with engine.begin() as conn:
        await conn.run_sync(_with_conn(command.downgrade, revision))


async def migrate_only(engine: AsyncEngine, revision: str = "head") -> None:
    """Run the migration scripts alone (no ``create_all``): what tests use to check the scripts."""
    async with engine.begin() as conn:
        await conn.run_sync(_with_conn(command.upgrade, revision))


async def lock_schema(conn: AsyncConnection) -> None:
    """Start ``conn``'s transaction as the one that changes the schema; call it first.

    PostgreSQL: the advisory lock :func:`prepare` takes (DDL is transactional there). SQLite:
    ``BEGIN IMMEDIATE``, so the DDL that follows is part of the transaction and rolls back with
    it (Python's sqlite3 opens a transaction only before INSERT/UPDATE/DELETE: DDL run first
    would be committed statement by statement). Raises the database error, "database is
    locked" when another connection keeps the SQLite write lock for the busy timeout."""
    if conn.dialect.name == "sqlite":
        await conn.execute(text("BEGIN IMMEDIATE"))
    elif conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})


def _rebuild_sync(conn: Connection, revision: str) -> None:
    known = set(target_metadata().tables) | {"alembic_version"}
    old = MetaData()
    old.reflect(conn, only=[t for t in inspect(conn).get_table_names() if t in known])
    old.drop_all(conn)  # children first
    _with_conn(command.upgrade, revision)(conn)


async def rebuild_at(conn: AsyncConnection, revision: str) -> None:
    """Inside ``conn``'s transaction (begun with :func:`lock_schema`): drop every table PixelFox
    knows, with its rows, and run the scripts from the start up to ``revision``; other tables
    are left alone. Raises the database or Alembic error (``CommandError`` for an unknown revision)."""
    await conn.run_sync(_rebuild_sync, revision)


def _reflect_sync(conn: Connection, skip: frozenset[str]) -> list[Table]:
    known = set(target_metadata().tables) - skip
    meta = MetaData()
    meta.reflect(conn, only=[t for t in inspect(conn).get_table_names() if t in known])
    return list(meta.sorted_tables)


async def tables_at(conn: AsyncConnection, skip: frozenset[str] = frozenset()) -> list[Table]:
    """The tables PixelFox knows, as the database holds them now (reflected: the columns of its
    revision, which may be older than the models'), parents before children, without ``skip``."""
    result: list[Table] = await conn.run_sync(_reflect_sync, skip)
    return result


async def upgrade_in(conn: AsyncConnection) -> str:
    """Upgrade to ``head`` inside ``conn``'s transaction, as a manager at start would (see module
    doc); returns created|upgraded|current. On SQLite begin the transaction with :func:`lock_schema`."""
    action: str = await conn.run_sync(_prepare_sync)
    return action


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def drift(engine: AsyncEngine) -> list[Any]:
    """Differences between the database and the models (Alembic autogenerate ops); [] when in step."""

    def diff(conn: Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, target_metadata()))

    async with engine.connect() as conn:
        return await conn.run_sync(diff)


async def new_revision(message: str) -> None:
    """Write a new migration script for what the models changed since ``head`` (Alembic autogenerate).

    Runs the existing scripts on a throw-away SQLite file, compares with the models and writes
    ``versions/<next id>_<message>.py``; review it before committing. Usage::

        .venv/bin/python -c "import asyncio; from pixelfox.db.migrate import new_revision as n; asyncio.run(n('add x'))"
    """
    import tempfile

    from sqlalchemy.ext.asyncio import create_async_engine

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp}/head.db")
        try:
            await migrate_only(engine)
            next_id = f"{int(head_revision()) + 1:04d}"
            async with engine.begin() as conn:
                await conn.run_sync(_with_conn(
                    lambda cfg: command.revision(cfg, message=message, autogenerate=True, rev_id=next_id)))
        finally:
            await engine.dispose()
