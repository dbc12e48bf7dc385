"""Is a database the one a running manager uses, wherever the question is asked from?

A manager marks its database while it runs (:func:`mark_in_use`), in a way found from the
database itself, so ``pixelfox restore`` and ``migrate-db`` refuse to write over it from any
folder (:func:`manager_uses`):

* SQLite: a shared ``flock`` on ``<database file>.manager-lock`` beside the file (the real path,
  symlinks resolved), held for the manager's life. The kernel drops it when the process ends,
  however it ends, so a lock file left behind by a stopped manager means nothing.
* PostgreSQL: the manager's connections carry the application name :data:`APPLICATION_NAME`,
  seen in ``pg_stat_activity`` by anyone connected to the same database.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from pixelfox.db.engine import sqlite_path

#: the ``application_name`` of a manager's PostgreSQL connections
APPLICATION_NAME = "pixelfox-manager"


def lock_path(url: str) -> Path | None:
    """``<database file>.manager-lock`` for a SQLite file URL (symlinks resolved); None otherwise."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    path = sqlite_path(parsed)
    if not path or path == ":memory:":
        return None
    return Path(os.path.realpath(path) + ".manager-lock")


def mark_in_use(url: str) -> IO[bytes] | None:
    """Mark the SQLite database at ``url`` as used by this process (a manager): the open lock file,
    to keep open as long as the process runs (None for other databases, marked by their
    connections' application name instead). Raises OSError when the lock file cannot be made."""
    path = lock_path(url)
    if path is None:
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    f = os.fdopen(fd, "r+b")
    fcntl.flock(f.fileno(), fcntl.LOCK_SH)  # shared: several managers may use one file
    return f


async def manager_uses(engine: AsyncEngine) -> bool:
    """Whether a running manager (another process) uses the database of ``engine``: the SQLite lock
    file is locked, or a PostgreSQL connection named :data:`APPLICATION_NAME` is open on it.
    False when that cannot be told (no lock file, no right to read it)."""
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "sqlite":
        path = lock_path(url)
        if path is None:
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also releases the lock just taken
        return False
    try:
        async with engine.connect() as conn:
            n = (await conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = :name AND pid <> pg_backend_pid()"), {"name": APPLICATION_NAME})).scalar()
    except DBAPIError:
        return False
    return bool(n)
