"""Disabling users (:meth:`nodes.manager.account_ops.AccountOps.set_disabled`) on SQLite and the
cluster's real Redis: the last enabled admin stays, disabling deletes the user's web sessions, and
disabling (enabling) a user who already is disabled (enabled) says it changed nothing."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from ulid import ULID

from nodes.manager.account_ops import AccountOps
from nodes.manager.accounts import Accounts
from pixelfox import errors
from pixelfox.db.models import User
from pixelfox.session_index import index_key, index_session, session_key
from tests.dbkit import open_db


async def _run(redis_url: str, db: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with open_db(db) as (_, sessions), contextlib.aclosing(aioredis.from_url(redis_url)) as redis:
        ops = AccountOps(sessions, Accounts(sessions), redis)
        boss, deputy, user = (User(id=str(ULID()), name=f"u{ULID()}", password_hash="x", role=role)
                              for role in ("admin", "admin", "user"))
        async with sessions() as s:
            s.add_all([boss, deputy, user])
            await s.commit()
        sid = f"S{ULID()}".ljust(43, "x")
        await redis.set(session_key(sid), b"{}")
        await index_session(redis, user.id, sid, 60)

        out["boss"] = boss.name
        row, unchanged = await ops.set_disabled(None, True, user.name, True)
        out["user"] = (row.disabled_at is not None, unchanged)
        out["session left"] = await redis.exists(session_key(sid), index_key(user.id))
        out["user again"] = (await ops.set_disabled(None, True, user.name, True))[1]  # already disabled
        out["deputy"] = (await ops.set_disabled(boss, False, deputy.name, True))[0].disabled_at is not None
        with pytest.raises(errors.Conflict) as exc:  # the cluster credential (local admin), the last admin
            await ops.set_disabled(None, True, boss.name, True)
        out["refusal"] = exc.value.message
        row, unchanged = await ops.set_disabled(None, True, deputy.name, False)
        out["enabled again"] = (row.disabled_at is None, unchanged)
        out["enabled twice"] = (await ops.set_disabled(None, True, deputy.name, False))[1]  # already enabled
        out["boss now"] = (await ops.set_disabled(None, True, boss.name, True))[0].disabled_at is not None
        return out


def test_the_last_admin_stays_and_disabling_ends_sessions(cluster: Any, tmp_path: Path) -> None:
    out = asyncio.run(_run(cluster.redis_url, tmp_path / "m.db"))
    assert out["user"] == (True, False) and out["session left"] == 0
    assert out["user again"] is True  # the second disable changed nothing, and says so
    assert out["deputy"]
    assert out["refusal"] == f"{out['boss']} is the last enabled admin; make another admin first"
    assert out["enabled again"] == (True, False) and out["enabled twice"] is True and out["boss now"]
