"""``pixelfox.db.engine.begin_write`` on a real SQLite file: read-modify-write sessions never lose
an update, and a rolled-back writer leaves nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from pixelfox.db.engine import begin_write
from tests.dbkit import open_db


async def _run(db: Path) -> int:
    async with open_db(db, tables=False) as (engine, sessions):
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
            await conn.execute(text("INSERT INTO counter VALUES (0)"))

        async def bump() -> None:
            async with sessions() as s:
                await begin_write(s)
                n = (await s.execute(text("SELECT n FROM counter"))).scalar_one()
                await asyncio.sleep(0.005)  # other sessions run here: without the lock they read the same n
                await s.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
                await s.commit()

        async def abandon() -> None:
            async with sessions() as s:
                await begin_write(s)
                await s.execute(text("UPDATE counter SET n = -1000"))
                await s.rollback()

        await asyncio.gather(*(bump() for _ in range(30)), abandon())
        async with sessions() as s:
            return int((await s.execute(text("SELECT n FROM counter"))).scalar_one())


def test_read_modify_write_sessions_never_lose_an_update(tmp_path: Path) -> None:
    assert asyncio.run(_run(tmp_path / "lock.db")) == 30  # every increment counted; the rolled-back -1000 left nothing


async def _late(db: Path) -> tuple[str, int]:
    async with open_db(db, tables=False) as (_, sessions):
        async with sessions() as s:
            await s.execute(text("SELECT 1"))  # the read a write lock taken now would not cover
            refused = ""
            try:
                await begin_write(s)
            except RuntimeError as exc:
                refused = str(exc)
            await s.commit()
            await begin_write(s)  # right after a commit: a new transaction, allowed
            n = int((await s.execute(text("SELECT 2"))).scalar_one())
            await s.rollback()
        return refused, n


def test_begin_write_after_a_query_is_refused(tmp_path: Path) -> None:
    refused, n = asyncio.run(_late(tmp_path / "late.db"))
    assert refused == "begin_write() must start the session's transaction: call it before the first query"
    assert n == 2
