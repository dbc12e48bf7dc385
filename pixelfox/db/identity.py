"""Which database a URL names, whatever its spelling: the guards that keep ``pixelfox migrate-db``,
``backup`` and ``restore`` off the wrong database (the same one twice, or a running cluster's) compare
:func:`identity`."""

from __future__ import annotations

import os

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from pixelfox import errors
from pixelfox.config import DatabaseSettings
from pixelfox.db.checks import check_url, new_sqlite_file, redact, unreachable
from pixelfox.db.engine import make_engine
from pixelfox.db.inuse import manager_uses


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


async def refuse_live(url: str, live_url: str | None, what: str) -> None:
    """``BadRequest`` when ``url`` is a database a running manager uses (:mod:`pixelfox.db.inuse`,
    from any folder) or the same database as ``live_url`` (the one the local running cluster uses),
    so ``what`` (copying into it, restoring over it) cannot replace live rows under it. A SQLite
    file that does not exist yet is no one's: nothing is opened (nor created) for it."""
    if new_sqlite_file(check_url(url)):
        return
    engine = open_engine(url)
    try:
        if await manager_uses(engine):
            raise errors.BadRequest(
                f"{redact(url)} is the database a running manager uses: {what} would replace its live rows. "
                "Stop its managers first, or pick another database")
        if live_url and await _same(engine, live_url):
            raise errors.BadRequest(
                f"{redact(url)} is the database the running cluster uses: {what} would replace its live rows. "
                "Stop the cluster first, or pick another database")
    finally:
        await engine.dispose()


async def _same(engine: AsyncEngine, other_url: str) -> bool:
    """Whether ``other_url`` names the database of ``engine`` (False when either cannot be reached,
    or ``other_url`` no longer names a usable database)."""
    try:
        other = open_engine(other_url)
    except errors.BadRequest:
        return False
    try:
        return await identity(engine) == await identity(other)
    except errors.Unavailable:
        return False
    finally:
        await other.dispose()
