"""Optional read replicas: plain reads go to a replica, writes and read-your-writes to the primary.

Set ``PIXELFOX_DATABASE__READ_URLS='["postgresql+asyncpg://...@replica1/pixelfox"]'`` (a JSON
list; PostgreSQL streaming replicas of the primary in ``PIXELFOX_DATABASE__URL``). Sessions
from :func:`routing_sessions` then send (ECOSYSTEM.md §3, SQLAlchemy's "custom vertical
partitioning" recipe):

* every flush and every ``INSERT``/``UPDATE``/``DELETE`` to the primary;
* every statement of a session that has written, or that was opened with
  ``sessions(info={"primary": True})`` (read-your-writes paths), to the primary;
* ``SELECT ... FOR UPDATE`` to the primary;
* other reads to a replica (round robin over them).

Replicas lag: a path that must see what the same request just wrote must pin the primary.
Migrations run against the primary only. With no read URLs this is the plain factory.
"""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import Delete, Insert, Select, Update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from pixelfox.config import DatabaseSettings
from pixelfox.db.engine import make_engine


class RoutingSession(Session):
    """A sync ``Session`` whose ``get_bind`` picks the primary or a replica (see module doc).

    ``info["engines"]`` holds ``(primary, [replicas])`` sync engines, set by :func:`routing_sessions`.
    """

    def get_bind(self, mapper: Any = None, clause: Any = None, **kw: Any) -> Engine:
        primary, replicas, cycle = self.info["engines"]
        writes = isinstance(clause, (Insert, Update, Delete))
        locking = isinstance(clause, Select) and clause._for_update_arg is not None
        if self._flushing or writes or locking:
            self.info["wrote"] = True
        if not replicas or self.info.get("wrote") or self.info.get("primary") or writes or locking or self._flushing:
            return primary  # type: ignore[no-any-return]
        return next(cycle)  # type: ignore[no-any-return]


def routing_sessions(primary: AsyncEngine, replicas: list[AsyncEngine]) -> async_sessionmaker[AsyncSession]:
    """An ``async_sessionmaker`` over ``primary`` whose sessions route reads to ``replicas``."""
    sync_replicas = [r.sync_engine for r in replicas]
    engines = (primary.sync_engine, sync_replicas, itertools.cycle(sync_replicas) if sync_replicas else None)

    class _Bound(RoutingSession):
        def __init__(self, **kw: Any) -> None:
            info = dict(kw.pop("info", None) or {})
            info["engines"] = engines
            super().__init__(info=info, **kw)

    return async_sessionmaker(primary, expire_on_commit=False, sync_session_class=_Bound)


def make_replica_engines(settings: DatabaseSettings) -> list[AsyncEngine]:
    """One engine per URL in ``settings.read_urls`` (same options as the primary)."""
    return [make_engine(DatabaseSettings(url=u, echo=settings.echo)) for u in settings.read_urls]
