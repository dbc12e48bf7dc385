"""Is a database URL one PixelFox can use, and does that database answer?

:func:`check_url` looks at the URL alone (its syntax, a driver we ship, a SQLite file that
exists); :func:`ping` opens one connection; :func:`check_database` does both before a manager
starts (the manager itself, and ``pixelfox up`` before it starts any node). Each raises a domain
error with one line that names the database with its password hidden, so the manager, ``up``
and the database commands (``migrate-db``, ``backup``, ``restore``) say the same thing about
the same mistake.
"""

from __future__ import annotations

import asyncio
import errno
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
#: how long :func:`ping` waits for the first connection (seconds); asyncpg's own default is 60
PING_TIMEOUT_S = 10.0


def redact(url: str) -> str:
    """``url`` with its password hidden (for messages and output)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return hide_password(url)


def check_url(url: str, *, must_exist: bool = False) -> URL:
    """The parsed ``url`` if it is one we can use: ``BadRequest`` naming the form to use otherwise
    (bad syntax, a port that is not a number, a driver other than asyncpg or aiosqlite), and for a
    SQLite file that does not exist when ``must_exist``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise errors.BadRequest(f"{redact(url)!r} is not a database URL: use {POSTGRES_FORM} or {SQLITE_FORM}"
                                ) from None
    try:
        parsed.port  # noqa: B018 - the port is parsed lazily, where asyncpg would fail with a traceback
    except ValueError:
        raise errors.BadRequest(f"{redact(url)}: the port is not a number; use {POSTGRES_FORM}") from None
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


def _where(url: URL) -> str:
    """``host:port`` of a PostgreSQL URL, with asyncpg's defaults."""
    return f"{url.host or 'localhost'}:{url.port or 5432}"


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


async def check_database(url: str, timeout_s: float = PING_TIMEOUT_S) -> None:
    """Whether a manager can use the database at ``url``: :func:`check_url`, then :func:`ping` on a
    throw-away engine (a SQLite file's folder is created, as a manager would). Raises BadRequest (the
    URL) or Unavailable (the database) with one line that starts with :data:`SETTING`."""
    try:
        check_url(url)
        engine = make_engine(DatabaseSettings(url=url))
        try:
            await ping(engine, timeout_s)
        finally:
            await engine.dispose()
    except errors.PixelfoxError as exc:
        raise type(exc)(f"{SETTING}: {exc.message}") from None
