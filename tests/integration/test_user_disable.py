"""Disabling users (:meth:`nodes.manager.account_ops.AccountOps.set_disabled`) on SQLite and the
cluster's real Redis: the last enabled admin stays, and disabling deletes the user's web sessions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from ulid import ULID

from nodes.manager.account_ops import AccountOps
from nodes.manager.accounts import Accounts
from pixelfox import errors
from pixelfox.config import DatabaseSettings
from pixelfox.db.engine import create_all_tables, make_engine, session_factory
from pixelfox.db.models import User
from pixelfox.session_index import index_key, index_session, session_key


async def _run(redis_url: str, db: Path) -> dict[str, Any]:
    engine = make_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{db}"))
    redis = aioredis.from_url(redis_url)
    out: dict[str, Any] = {}
    try:
        async with engine.begin() as conn:
            await conn.run_sync(create_all_tables)
        sessions = session_factory(engine)
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
        out["user"] = (await ops.set_disabled(None, True, user.name, True)).disabled_at is not None
        out["session left"] = await redis.exists(session_key(sid), index_key(user.id))
        out["deputy"] = (await ops.set_disabled(boss, False, deputy.name, True)).disabled_at is not None
        with pytest.raises(errors.Conflict) as exc:  # the cluster credential (local admin), the last admin
            await ops.set_disabled(None, True, boss.name, True)
        out["refusal"] = exc.value.message
        out["enabled again"] = (await ops.set_disabled(None, True, deputy.name, False)).disabled_at is None
        out["boss now"] = (await ops.set_disabled(None, True, boss.name, True)).disabled_at is not None
        return out
    finally:
        await redis.aclose()
        await engine.dispose()


def test_the_last_admin_stays_and_disabling_ends_sessions(cluster: Any, tmp_path: Path) -> None:
    out = asyncio.run(_run(cluster.redis_url, tmp_path / "m.db"))
    assert out["user"] and out["session left"] == 0
    assert out["deputy"]
    assert out["refusal"] == f"{out['boss']} is the last enabled admin; make another admin first"
    assert out["enabled again"] and out["boss now"]
