"""A replica debt left with a stale count (:meth:`nodes.manager.repair.ReplicaRepair._forget_settled`), on a real SQLite
database: a repair pass that read a storage node as a holder just before it was forgotten wrote ``have`` 1 after
the forget wrote 0 and dropped the node's rows (a full CI run caught it: the lost key kept ``have`` 1 for good).
The next pass sets a named key with no location row on any node back to 0 copies; other debts stay as they are."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from nodes.manager.repair import NO_COPY_LEFT, ReplicaRepair, add_debt
from pixelfox.db.models import Image, ObjectLocation, ReplicaDebt, Upload
from tests.dbkit import open_db


async def _settled(db: Path) -> dict[str, tuple[int, int, str]]:
    async with open_db(db) as (_, sessions):
        async with sessions() as s:
            s.add_all(Upload(id=u, size=10, expires_at=datetime.now(UTC) + timedelta(hours=1)) for u in ("u0", "u1"))
            await s.flush()
            s.add(Image(id="i0", slug="s0", upload_id="u0", sha256="0" * 64, bytes=10, format="png",
                        mime="image/png", width=1, height=1, original_key="lost"))
            s.add(ObjectLocation(key="short", node_id="a", size=10))
            await s.flush()
            s.add(Image(id="i1", slug="s1", upload_id="u1", sha256="1" * 64, bytes=10, format="png",
                        mime="image/png", width=1, height=1, original_key="short"))
            await add_debt(s, "lost", 1, 2, "pool hot: 0 storage nodes take copies")  # the stale write
            await add_debt(s, "short", 1, 2, "pool hot: 0 storage nodes take copies")  # a real short key
            await s.commit()
        repair: Any = ReplicaRepair(sessions, None, None, "secret", replicas=2)  # type: ignore[arg-type]
        await repair._forget_settled(["a"], 2)
        async with sessions() as s:
            return {d.key: (d.have, d.want, d.last_error) for d in (await s.execute(select(ReplicaDebt))).scalars()}


def test_a_lost_keys_stale_count_goes_back_to_zero_and_a_short_key_stays(tmp_path: Path) -> None:
    assert asyncio.run(_settled(tmp_path / "db.sqlite")) == {
        "lost": (0, 2, NO_COPY_LEFT),
        "short": (1, 2, "pool hot: 0 storage nodes take copies"),
    }
