"""How ``pixelfox scrub --fix`` settles a missing copy (:func:`nodes.manager.scrub._settle`), on a real SQLite
database, including its races with deletes: a key an image names loses the row and gets a debt (``have``: the
copies still recorded) in one transaction; a key whose image was deleted meanwhile, or a row already gone,
changes nothing (``tests/e2e/test_scrub.py`` runs the whole scrub on a real cluster)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from nodes.manager.objects import Objects
from nodes.manager.scrub import MissingCopy, _settle
from pixelfox.db.models import Image, ObjectLocation, ReplicaDebt, Upload
from tests.dbkit import open_db


async def _settled(db: Path) -> dict[str, Any]:
    async with open_db(db) as (_, sessions):
        async with sessions() as s:
            s.add(Upload(id="u0", size=10, expires_at=datetime.now(UTC) + timedelta(hours=1)))
            await s.flush()
            s.add(Image(id="i0", slug="s0", upload_id="u0", sha256="0" * 64, bytes=10, format="png",
                        mime="image/png", width=1, height=1, original_key="k0"))
            s.add_all(ObjectLocation(key=k, node_id=n, size=10)
                      for k, n in (("k0", "a"), ("k0", "b"), ("k1", "a"), ("k0x", "a")))
            await s.commit()
        objects = Objects(sessions, None, None, "secret", replicas=2)  # type: ignore[arg-type]
        named = MissingCopy("k0", "a")
        deleted = MissingCopy("k1", "a")  # no image names k1 any more: deleted while the scrub ran
        gone = MissingCopy("k0", "c")  # no row names k0 on c (already forgotten)
        counts = {"named": await _settle(objects, "k0", [named]),
                  "deleted": await _settle(objects, "k1", [deleted]),
                  "gone": await _settle(objects, "k0", [gone])}
        async with sessions() as s:
            rows = {(k, n) for k, n in (await s.execute(select(ObjectLocation.key, ObjectLocation.node_id))).all()}
            debts = {d.key: (d.image_id, d.have, d.want, d.last_error)
                     for d in (await s.execute(select(ReplicaDebt))).scalars()}
        return {"counts": counts, "fixed": (named.fixed, deleted.fixed, gone.fixed), "rows": rows, "debts": debts}


def test_a_missing_copy_is_settled_only_while_an_image_names_it_and_its_row_is_there(tmp_path: Path) -> None:
    got = asyncio.run(_settled(tmp_path / "db.sqlite"))
    assert got["counts"] == {"named": 1, "deleted": 0, "gone": 0}
    assert got["fixed"] == (True, False, False)
    assert got["rows"] == {("k0", "b"), ("k1", "a"), ("k0x", "a")}
    assert got["debts"] == {"k0": ("i0", 1, 2, "the copy on storage node a was missing when scrubbed")}
