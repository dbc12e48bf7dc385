"""Engine and session factory for the metadata database.

SQLite (the single-machine default) runs in WAL mode with a busy timeout so readers never
block the writer; any other URL (PostgreSQL via asyncpg) is used as given.

Python's sqlite3 driver opens a transaction only before the first INSERT/UPDATE/DELETE: reads
run outside one, so they never hold a snapshot or queue behind writers. A session that reads
rows and then writes on what it read calls :func:`begin_write` first: ``BEGIN IMMEDIATE`` takes
the write lock before those reads (waiting up to :data:`BUSY_TIMEOUT_MS`), so no other writer
can change them in between; on PostgreSQL the same paths lock their rows with
``SELECT ... FOR UPDATE`` (``with_for_update=True``), and ``begin_write`` pins the session to
the primary so those reads never come from a lagging replica (:mod:`pixelfox.db.replicas`). The busy
timeout is long because 500 uploads completing at once queue up to 15 writers (the pool) on
the one SQLite write lock; at 5 s some of them failed with "database is locked".
"""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from pixelfox.config import DatabaseSettings
from pixelfox.db.models import Base

#: how long a SQLite statement waits for another connection's lock (ms)
BUSY_TIMEOUT_MS = 15_000
#: pause between tries of a journal-mode switch SQLite refused at once (s)
WAL_RETRY_S = 0.05


def set_wal_mode(cur: Any, budget_s: float = BUSY_TIMEOUT_MS / 1000) -> None:
    """Run ``PRAGMA journal_mode=WAL`` on the DB-API cursor ``cur``, trying again every
    :data:`WAL_RETRY_S` s for up to ``budget_s`` s while SQLite answers "database is locked".

    Switching a database out of rollback-journal mode needs an exclusive lock, and when two
    connections switch a new file at the same moment SQLite returns SQLITE_BUSY at once instead
    of calling the busy handler (it would deadlock; https://sqlite.org/c3ref/busy_handler.html:
    "If SQLite determines that invoking the busy handler could result in a deadlock, it will go
    ahead and return SQLITE_BUSY"). Two connections opening a new file within microseconds of
    each other failed so in about 1 try of 10 here, and a CI run lost a manager to it at start-up
    (two managers, one new database). A database already in WAL mode takes the pragma without a lock. The pause blocks
    the caller (a new connection, rare and short). Raises the driver's OperationalError for any
    other error, or when the lock is still refused after ``budget_s``."""
    deadline = time.monotonic() + budget_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:
            if "database is locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(WAL_RETRY_S)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    set_wal_mode(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.close()


async def begin_write(session: AsyncSession) -> None:
    """Start ``session``'s transaction as a writer; call it first in a fresh session (or right
    after a commit/rollback) that reads rows and then writes on them.

    The session is pinned to the primary database (reads too, with replicas configured). On
    SQLite it runs ``BEGIN IMMEDIATE``: the write lock now, waiting up to
    :data:`BUSY_TIMEOUT_MS` (see module doc); on PostgreSQL row locks come from the caller's
    ``SELECT ... FOR UPDATE``. The transaction ends with the session's commit or rollback.
    Raises ``sqlalchemy.exc.OperationalError``: "database is locked" when the lock stays taken
    for the whole busy timeout. Raises RuntimeError when the session's transaction already
    began (a query ran before): rows read earlier would not be covered by the write lock."""
    if session.in_transaction():
        raise RuntimeError("begin_write() must start the session's transaction: call it before the first query")
    session.sync_session.info["primary"] = True
    bind = session.bind
    if bind is not None and bind.dialect.name == "sqlite":
        await session.execute(text("BEGIN IMMEDIATE"))


def sqlite_path(url: URL) -> str:
    """The file path a SQLite URL names: with ``?uri=true`` the database part is a URI filename
    (``file:/x/y.db``, ``file:///x/y.db``; https://sqlite.org/uri.html) and gives its path part,
    percent-decoded (``:memory:`` with ``mode=memory``); otherwise the database part as is (""
    and ``:memory:`` included)."""
    database = url.database or ""
    if database.startswith("file:") and str(url.query.get("uri", "")).lower() in ("true", "1"):
        if str(url.query.get("mode", "")).lower() == "memory":  # file:name?mode=memory: no file at all
            return ":memory:"
        return urllib.parse.unquote(urllib.parse.urlsplit(database).path)
    return database


def make_engine(settings: DatabaseSettings, application_name: str = "") -> AsyncEngine:
    """Create the async engine; for SQLite, create the file's folder and set WAL pragmas. On
    PostgreSQL the connections carry ``application_name`` when given (``pg_stat_activity`` shows it)."""
    url = make_url(settings.url)
    kwargs: dict[str, Any] = {"echo": settings.echo, "pool_pre_ping": True}
    if application_name and url.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"server_settings": {"application_name": application_name}}
    if url.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_MS / 1000}
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


async def create_schema(engine: AsyncEngine) -> None:
    """Bring the schema to the current revision at start-up (:func:`pixelfox.db.migrate.prepare`).

    An empty database gets every table and is stamped at the newest Alembic revision; an
    older one is upgraded by the migration scripts. Several managers may call this at once.
    """
    from pixelfox.db.migrate import prepare

    await prepare(engine)


def create_all_tables(conn: Any) -> None:
    """``Base.metadata.create_all`` on a sync connection (tests and tools without Alembic)."""
    Base.metadata.create_all(conn)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
