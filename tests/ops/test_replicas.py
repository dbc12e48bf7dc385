"""Read replicas (pixelfox.db.replicas) against a real PostgreSQL primary and streaming replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, text
from ulid import ULID

from pixelfox.config import DatabaseSettings
from pixelfox.db import migrate
from pixelfox.db.engine import make_engine
from pixelfox.db.models import User
from pixelfox.db.replicas import routing_sessions
from tests.ops.pg import Postgres, start_replica

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def replica(postgres: Postgres) -> Iterator[tuple[str, str]]:
    primary_url = postgres.create_db("replicated")

    async def schema() -> None:  # one event loop for the engine's whole life
        engine = make_engine(DatabaseSettings(url=primary_url))
        try:
            await migrate.prepare(engine)
        finally:
            await engine.dispose()

    asyncio.run(schema())
    rep = start_replica(postgres)
    try:
        assert rep.psql("SELECT pg_is_in_recovery()").strip() == "t"
        yield primary_url, rep.url("replicated")
    finally:
        rep.stop()


async def _scenario(primary_url: str, replica_url: str) -> None:
    primary = make_engine(DatabaseSettings(url=primary_url))
    rep = make_engine(DatabaseSettings(url=replica_url))
    sessions = routing_sessions(primary, [rep])
    try:
        async with sessions() as s:  # a plain read goes to the replica
            assert (await s.execute(text("SELECT pg_is_in_recovery()"))).scalar() is True
        name = f"u{ULID()}"[:30]
        async with sessions() as s:  # a write goes to the primary (the replica would refuse it)
            s.add(User(id=str(ULID()), name=name, password_hash="x", role="user"))
            await s.commit()
            # read-your-writes: after writing, this session reads from the primary
            assert (await s.execute(text("SELECT pg_is_in_recovery()"))).scalar() is False
            assert (await s.execute(select(func.count()).where(User.name == name))).scalar() == 1
        async with sessions(info={"primary": True}) as s:  # pinned to the primary
            assert (await s.execute(text("SELECT pg_is_in_recovery()"))).scalar() is False
        deadline = time.monotonic() + 10
        while True:  # and the replica catches up
            async with sessions() as s:
                if (await s.execute(select(func.count()).where(User.name == name))).scalar() == 1:
                    break
            assert time.monotonic() < deadline, "replica did not catch up"
            await asyncio.sleep(0.1)
    finally:
        await primary.dispose()
        await rep.dispose()


def test_reads_go_to_the_replica_and_writes_to_the_primary(replica: tuple[str, str]) -> None:
    asyncio.run(_scenario(*replica))
