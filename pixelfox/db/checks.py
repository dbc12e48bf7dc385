"""Is a database URL one PixelFox can use, and does that database answer?

:func:`check_url` looks at the URL alone (its syntax, a host and port that parse, a port in
1-65535, a driver we ship, a SQLite file that exists); :func:`ping` opens one connection;
:func:`check_database` does both before a manager starts (the manager itself, and ``pixelfox up``
before it starts any node), and refuses a SQLite file whose folder does not exist
(:func:`new_sqlite_file`). Each raises a domain error with one line that names the database with
its password hidden, so the manager, ``up`` and the database commands (``migrate-db``,
``backup``, ``restore``) say the same thing about the same mistake.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import socket
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from pixelfox import errors
from pixelfox.config import DatabaseSettings, hide_password
from pixelfox.db.engine import make_engine, sqlite_path

#: the setting a manager reads its database URL from
SETTING = "PIXELFOX_DATABASE__URL"
SQLITE_FORM = "sqlite+aiosqlite:///PATH"
POSTGRES_FORM = "postgresql+asyncpg://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
MAX_PORT = 65535
#: the ``scheme://user:`` before a password, as SQLAlchemy's own pattern reads it
_PASSWORD = re.compile(r"^([\w+]+://[^:/]*:)[^@]*@")
#: the ``host[:port]`` part of a URL, as SQLAlchemy's own pattern reads it (user and password skipped)
_HOST_PORT = re.compile(r"[\w+]+://(?:[^:/]*(?::[^@]*)?@)?([^/?]*)")
#: how long :func:`ping` waits for the first connection (seconds); asyncpg's own default is 60
PING_TIMEOUT_S = 10.0


def redact(url: str) -> str:
    """``url`` with its password hidden (for messages and output)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # a password as SQLAlchemy reads it may hold "/" and ":"
        return hide_password(_PASSWORD.sub(r"\1***@", url, count=1))


def check_url(url: str, *, must_exist: bool = False) -> URL:
    """The parsed ``url`` if it is one we can use: ``BadRequest`` naming the form to use otherwise
    (bad syntax, a malformed host or port, a port outside 1-65535, a driver other than asyncpg or
    aiosqlite), and for a SQLite file that does not exist when ``must_exist``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise errors.BadRequest(f"{redact(url)!r} is not a database URL: use {POSTGRES_FORM} or {SQLITE_FORM}"
                                ) from None
    except ValueError:  # SQLAlchemy's int() of the port: "abc", or the ":1" of "[::1" or of "::1"
        raise errors.BadRequest(f"{redact(url)}: {_bad_host_or_port(url)}; use {POSTGRES_FORM}") from None
    if parsed.port is not None and not 1 <= parsed.port <= MAX_PORT:  # asyncpg: OverflowError, or 0 = 5432
        raise errors.BadRequest(f"{redact(url)}: port {parsed.port} is out of range 1-{MAX_PORT}")
    backend, _, driver = parsed.drivername.partition("+")  # not get_driver_name(): it loads the dialect
    if backend == "postgresql" and driver != "asyncpg":
        raise errors.BadRequest(f"{redact(url)}: PixelFox talks to PostgreSQL through asyncpg; use {POSTGRES_FORM}")
    if backend == "sqlite" and driver != "aiosqlite":
        raise errors.BadRequest(f"{redact(url)}: use {SQLITE_FORM}")
    if backend not in ("postgresql", "sqlite"):
        raise errors.BadRequest(f"{redact(url)}: only PostgreSQL ({POSTGRES_FORM}) and SQLite ({SQLITE_FORM}) "
                                "are supported")
    path = sqlite_path(parsed) if backend == "sqlite" else ""
    if must_exist and path not in ("", ":memory:") and not Path(path).is_file():
        raise errors.BadRequest(f"no SQLite database at {path}")
    return parsed


def _bad_host_or_port(url: str) -> str:
    """Why SQLAlchemy could not read the host and port of ``url`` (it read the text after the host's
    first ``:`` as the port, and that is not a whole number). Parsed as SQLAlchemy does, so a
    password with ``/`` or ``:`` in it is skipped, and never shown."""
    found = _HOST_PORT.match(url)
    host_port = found.group(1) if found else ""
    if host_port.startswith("[") and "]" not in host_port:
        return f"the host {host_port!r} is malformed: an IPv6 address needs its closing ']', as in [::1]:5432"
    if not host_port.startswith("[") and host_port.count(":") > 1:
        return f"the host {host_port!r} is malformed: an IPv6 address goes in brackets, as in [::1]:5432"
    port = host_port.rpartition("]")[2] if host_port.startswith("[") else host_port
    return f"the port {port.partition(':')[2]!r} is malformed: it must be a number from 1 to {MAX_PORT}"


def new_sqlite_file(url: URL) -> Path | None:
    """The file a SQLite ``url`` names when it does not exist yet: the manager will create a new,
    empty database there. None when it exists, or when ``url`` names no file (PostgreSQL,
    ``:memory:``). Raises BadRequest when the file's folder does not exist: a typo in the path
    would otherwise start a new, empty site (the engine would create the folder too). The folder
    of ``pixelfox up``'s own database, ``.pixelfox/``, exists by then (``up`` makes it first)."""
    path = sqlite_path(url) if url.get_backend_name() == "sqlite" else ""
    if path in ("", ":memory:"):
        return None
    file = Path(path).absolute()
    if file.exists():
        return None
    if not file.parent.is_dir():
        what = "is not a folder" if file.parent.exists() else "does not exist"
        raise errors.BadRequest(f"{url.render_as_string(hide_password=True)}: folder {file.parent} "
                                f"{what}; create it first, or fix the path")
    return file


def create_private(file: Path) -> bool:
    """Create ``file`` empty with mode 0600 unless it exists (SQLite takes an empty file as a new
    database, and gives its ``-wal`` and ``-shm`` files the same mode): the metadata holds password
    and API-key hashes. Returns whether this call created it. Raises OSError (no right to write there)."""
    try:
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


def remove_sqlite_file(file: Path) -> None:
    """Remove the SQLite database ``file`` with its ``-wal``, ``-shm`` and ``-journal`` files (after a
    failed restore into a file it created); those that do not exist are skipped."""
    for p in (file, *(file.with_name(file.name + s) for s in ("-wal", "-shm", "-journal"))):
        p.unlink(missing_ok=True)


def _where(url: URL) -> str:
    """``host:port`` of a PostgreSQL URL, with asyncpg's defaults."""
    return f"{url.host or 'localhost'}:{5432 if url.port is None else url.port}"


def _reason(url: URL, exc: BaseException) -> str:
    """What went wrong connecting to ``url``, in words; the driver's own first line when we have none."""
    orig = getattr(exc, "orig", None) or exc
    where = _where(url)
    if isinstance(orig, ConnectionRefusedError) or getattr(orig, "errno", None) == errno.ECONNREFUSED:
        return f"connection refused: no database server listens on {where}"
    if isinstance(orig, socket.gaierror):
        return f"host {url.host!r} not found ({orig.strerror})"
    if isinstance(orig, TimeoutError):
        return f"no answer from {where} in time (host down, or a firewall drops the connection?)"
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def unreachable(url: str, exc: BaseException) -> errors.Unavailable:
    """One line for a database that cannot be reached (wrong host/port, no such database, bad password)."""
    try:
        reason = _reason(make_url(url), exc)
    except (ArgumentError, ValueError):
        reason = str(exc)
    return errors.Unavailable(f"cannot use the database {redact(url)}: {reason}")


async def ping(engine: AsyncEngine, timeout_s: float = PING_TIMEOUT_S) -> None:
    """Open one connection on ``engine`` and run ``SELECT 1``, waiting at most ``timeout_s`` seconds.

    Raises Unavailable (:func:`unreachable`) when the server refuses or does not answer, the host is
    unknown, the password or database name is wrong, or a SQLite file cannot be opened.
    """
    url = engine.url.render_as_string(hide_password=False)
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except TimeoutError as exc:
        raise errors.Unavailable(f"cannot use the database {redact(url)}: no answer from {_where(engine.url)} within "
                                 f"{timeout_s:g} s (host down, or a firewall drops the connection?)") from exc
    except (OSError, DBAPIError) as exc:
        raise unreachable(url, exc) from exc


async def check_database(url: str, timeout_s: float = PING_TIMEOUT_S) -> Path | None:
    """Whether a manager can use the database at ``url``: :func:`check_url`, :func:`new_sqlite_file`,
    then :func:`ping` on a throw-away engine. Returns the SQLite file this created (the caller says
    so: "new SQLite database at ..."), else None. Raises BadRequest (the URL, a SQLite folder that
    does not exist) or Unavailable (the database) with one line that starts with :data:`SETTING`.
    A new SQLite file is created private (:func:`create_private`)."""
    try:
        new = new_sqlite_file(check_url(url))
        if new:
            create_private(new)
        engine = make_engine(DatabaseSettings(url=url))
        try:
            await ping(engine, timeout_s)
        finally:
            await engine.dispose()
    except errors.PixelfoxError as exc:
        raise type(exc)(f"{SETTING}: {exc.message}") from None
    return new
