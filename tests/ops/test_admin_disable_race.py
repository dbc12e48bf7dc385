"""Two admins who disable each other at the same moment leave one enabled admin, on SQLite and on
PostgreSQL (:meth:`nodes.manager.account_ops.AccountOps.set_disabled`): each call read the other admin
as enabled before either wrote, both succeeded and the site had no enabled admin left."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from ulid import ULID

from nodes.manager.account_ops import AccountOps
from nodes.manager.accounts import Accounts
from pixelfox import errors
from pixelfox.db.models import User
from tests.dbkit import open_db
from tests.ops.conftest import metadata_url

ROUNDS = 8


async def _race(redis_url: str, db_url: str) -> list[tuple[int, int, int]]:
    """Per round: (calls that succeeded, calls refused as the last admin, enabled admins left)."""
    rounds = []
    async with open_db(db_url) as (_, sessions), contextlib.aclosing(aioredis.from_url(redis_url)) as redis:
        ops = AccountOps(sessions, Accounts(sessions), redis)
        for _ in range(ROUNDS):
            a, b = (User(id=str(ULID()), name=f"a{ULID()}", password_hash="x", role="admin") for _ in range(2))
            async with sessions() as s:
                await s.execute(User.__table__.update().values(role="user"))  # only a and b are admins
                s.add_all([a, b])
                await s.commit()
            got = await asyncio.gather(ops.set_disabled(a, False, b.name, True),
                                       ops.set_disabled(b, False, a.name, True), return_exceptions=True)
            for res in got:
                if isinstance(res, BaseException) and not isinstance(res, errors.Conflict):
                    raise res
            async with sessions() as s:
                left = await s.scalar(select(func.count()).select_from(User).where(
                    User.role == "admin", User.disabled_at.is_(None)))
            rounds.append((sum(isinstance(r, tuple) for r in got), sum(isinstance(r, errors.Conflict) for r in got),
                           int(left or 0)))
        return rounds


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_admins_disabling_each_other_leave_one(backend: str, cluster: Any, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    url = metadata_url(backend, tmp_path, request, "admin_race")
    rounds = asyncio.run(_race(cluster.redis_url, url))
    assert rounds == [(1, 1, 1)] * ROUNDS, rounds
