"""Which lost keys the repair asks the storage nodes for (:class:`nodes.manager.lostfind.LostFinder`), on a real
SQLite database: at most ``batch`` per pass, a key asked again only after ``every_s``, never a key with a copy on
a live node nor one no image names (such a key takes its turn, so it never holds a named one back). The node
asked is a closed port: it answers nothing, so every key stays lost (``tests/e2e/test_lost_found.py`` finds
copies on real nodes)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nodes.manager.lostfind import LostFinder
from nodes.manager.registry import NodeRecord
from pixelfox.db.models import Image, ObjectLocation, ReplicaDebt, Upload
from pixelfox.v1 import common_pb2
from tests.dbkit import open_db


async def _asks(db: Path) -> list[list[str]]:
    """The keys each of five passes took its turn with (batch 2, every_s 0.6 s; the fifth after 0.6 s)."""
    async with open_db(db) as (_, sessions):
        async with sessions() as s:
            for i in range(5):  # k0..k3 lost and named; k4 named but held by the live node s1
                s.add(Upload(id=f"u{i}", size=10, expires_at=datetime.now(UTC) + timedelta(hours=1)))
                await s.flush()
                s.add(Image(id=f"i{i}", slug=f"s{i}", upload_id=f"u{i}", sha256="0" * 64, bytes=10, format="png",
                            mime="image/png", width=1, height=1, original_key=f"k{i}"))
            s.add(ObjectLocation(key="k4", node_id="s1", size=10))
            s.add(ObjectLocation(key="k3", node_id="gone9", size=10))  # a node that is not live: still lost
            s.add_all(ReplicaDebt(key=k, have=0, want=2) for k in ("k0", "k1", "k2", "k3", "k4", "nameless"))
            await s.commit()
        finder = LostFinder(sessions, "secret", batch=2, every_s=0.6)
        closed = NodeRecord(node_id="s9", role=common_pb2.NODE_ROLE_STORAGE, grpc_address="127.0.0.1:1",
                            last_heartbeat=time.time())
        asked: list[list[str]] = []
        for i in range(5):
            if i == 4:
                await asyncio.sleep(0.7)
            before = dict(finder._asked)
            assert await finder.find(["s1", "s9"], [closed]) == {}
            asked.append(sorted(k for k, t in finder._asked.items() if before.get(k) != t))
        return asked


def test_lost_keys_are_asked_in_batches_with_a_back_off(tmp_path: Path) -> None:
    assert asyncio.run(_asks(tmp_path / "db.sqlite")) == [
        ["k0", "k1"],  # never asked: in key order, at most the batch
        ["k2", "k3"],
        ["nameless"],  # its turn, though no image names it: no Stat, and it never takes a named key's place
        [],  # every lost key asked within every_s: no Stat at all
        ["k0", "k1"],  # after every_s: the least recently asked first
    ]
