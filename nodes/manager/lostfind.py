"""Finding lost objects again: ask the live storage nodes for a key with no recorded copy.

A replica debt whose key has no ``object_locations`` row on a live storage node is *lost* (its only holder
was forgotten, :mod:`nodes.manager.gone`; ``lost_objects`` in ``pixelfox status``). Yet a copy may still be
on a live node whose row is missing: a record lost in a crash, a node added again with its old disk under a
new id, an operator who put the files back into a node's store folder. So each repair pass
(:mod:`nodes.manager.repair`) takes at most ``batch`` lost keys an image still names, those not asked within
``every_s`` first (the least recently asked next), and ``Stat``\\ s each on every reachable storage node (one
client per node, the nodes at once, a node that fails is not asked again in that pass). A copy whose size and
SHA-256 match what the database knows of the image or variant (when it knows them) gets its location row
back, one ``INFO`` line and a count in ``pixelfox_objects_lost_found_total``; the repair then copies it up to
the factor as for any short key. A copy that does not match is logged (``WARNING``) and not recorded.

The back-off is kept in memory by the manager holding the ``repair`` lease: a site with thousands of truly
lost objects gets at most ``batch`` Stats per node per pass, and each key once per ``every_s``; another
manager that takes the lease over asks each lost key once more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from prometheus_client import Counter
from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.registry import NodeRecord
from pixelfox import errors
from pixelfox.db.models import Image, ObjectLocation, ReplicaDebt, Variant
from pixelfox.storage.client import StorageClient
from pixelfox.v1 import storage_pb2

logger = logging.getLogger(__name__)

FOUND = Counter("pixelfox_objects_lost_found_total",
                "Lost objects (replica debts with no recorded copy on a live storage node) found again on a live "
                "storage node by the repair and recorded there")
#: seconds one Stat may take before its node is skipped for the rest of the pass
STAT_TIMEOUT_S = 10.0


def held_on(node_ids: list[str]) -> ColumnElement[bool]:
    """SQL condition on :class:`ReplicaDebt` rows: the debt's key has a recorded copy on one of ``node_ids``.
    A debt without one is *lost* for those nodes (the live ones here; every registered storage node in
    :mod:`nodes.manager.pools`)."""
    return exists().where(ObjectLocation.key == ReplicaDebt.key, ObjectLocation.node_id.in_(node_ids))


@dataclass(frozen=True)
class Expected:
    """What the database knows of a key's bytes: ``size`` in bytes (0: unknown) and ``sha256`` hex ("": unknown)."""

    size: int
    sha256: str

    def matches(self, size: int, sha256: str) -> bool:
        """True if a copy of ``size`` bytes with ``sha256`` agrees with every figure known here."""
        return (not self.size or self.size == size) and (not self.sha256 or self.sha256 == sha256)


class LostFinder:
    """Asks the live storage nodes for lost keys (see module doc); one per :class:`ReplicaRepair`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], secret: str, batch: int, every_s: float) -> None:
        self.sessions = sessions
        self.secret = secret
        self.batch = batch
        self.every_s = every_s
        self._asked: dict[str, float] = {}  # lost key -> time.monotonic() of its last ask

    async def find(self, live: list[str], ask: list[NodeRecord]) -> dict[str, list[tuple[str, int]]]:
        """Ask the nodes ``ask`` for the lost keys due (no location on a node in ``live``, ids); record the
        copies found. Returns ``{key: [(node id, size in bytes), ...]}`` for every key found on some node.
        Raises what the database raises (SQLAlchemyError, OSError); a node's errors only skip that node."""
        if not ask:
            return {}
        due = await self._due(live)
        if not due:
            return {}
        answers = await asyncio.gather(*(self._ask(rec, list(due)) for rec in ask))
        found: dict[str, list[tuple[str, int]]] = {}
        for rec, held in zip(ask, answers, strict=True):
            for key, (size, sha) in held.items():
                if not due[key].matches(size, sha):
                    logger.warning("lost object %s: the copy on storage node %s differs from the recorded one "
                                   "(%d bytes, sha256 %s; want %d, %s): not recorded", key, rec.node_id, size,
                                   sha, due[key].size, due[key].sha256 or "unknown")
                    continue
                found.setdefault(key, []).append((rec.node_id, size))
        if found:
            async with self.sessions() as s:
                for key, copies in found.items():
                    for node_id, size in copies:
                        await s.merge(ObjectLocation(key=key, node_id=node_id, size=size))
                await s.commit()
            for key, copies in sorted(found.items()):
                self._asked.pop(key, None)
                FOUND.inc()
                logger.info("found lost object %s on storage node%s %s: recorded, the repair copies it to the "
                            "factor", key, "" if len(copies) == 1 else "s", ", ".join(n for n, _ in copies))
        return found

    async def _due(self, live: list[str]) -> dict[str, Expected]:
        """Up to ``batch`` lost keys not asked within ``every_s``, least recently asked first (never asked before
        all), marked asked now; of those, the ones an image names, with what the database knows of their bytes.
        Forgets the asks of keys no longer lost."""
        async with self.sessions() as s:
            lost = list((await s.execute(
                select(ReplicaDebt.key).where(~held_on(live)).order_by(ReplicaDebt.key))).scalars())
            for gone in set(self._asked) - set(lost):
                del self._asked[gone]
            cutoff = time.monotonic() - self.every_s
            keys = sorted((k for k in lost if self._asked.get(k, float("-inf")) <= cutoff),
                          key=lambda k: self._asked.get(k, float("-inf")))[:self.batch]
            if not keys:
                return {}
            now = time.monotonic()
            for key in keys:  # those no image names too: they wait their turn like the others
                self._asked[key] = now
            known: dict[str, Expected] = {}
            for key, sha, size in (await s.execute(select(Variant.key, Variant.sha256, Variant.bytes)
                                                   .where(Variant.key.in_(keys)))).all():
                known[key] = Expected(int(size or 0) if sha else 0, str(sha or ""))
            for key, sha, size in (await s.execute(select(Image.original_key, Image.sha256, Image.bytes)
                                                   .where(Image.original_key.in_(keys)))).all():
                known[key] = Expected(int(size or 0), str(sha or ""))
        return {k: known[k] for k in keys if k in known}  # a key no image names is never brought back

    async def _ask(self, rec: NodeRecord, keys: list[str]) -> dict[str, tuple[int, str]]:
        """``{key: (size, sha256)}`` for the ``keys`` storage node ``rec`` holds; stops at its first error
        (logged), keeping what it answered before."""
        answers, exc = await stat_on(rec, self.secret, keys)
        if exc is not None:
            logger.warning("looking for lost objects on storage node %s failed: %s", rec.node_id, exc)
        return {k: (int(st.size), st.sha256) for k, st in answers.items() if st is not None}


async def stat_on(rec: NodeRecord, secret: str, keys: list[str], *, concurrency: int = 1,
                  timeout_s: float = STAT_TIMEOUT_S) -> tuple[dict[str, storage_pb2.StatResponse | None],
                                                            Exception | None]:
    """``Stat`` each of ``keys`` on storage node ``rec`` (one client, at most ``concurrency`` calls at once,
    each within ``timeout_s`` seconds). Returns ``({key: its Stat answer, or None when the node does not have
    it}, None)``; at the node's first error (a ``PixelfoxError`` other than NotFound, or a timeout) the calls
    stop and that error comes second, with the answers given before it. Raises nothing else of its own."""
    answers: dict[str, storage_pb2.StatResponse | None] = {}
    failed: list[Exception] = []
    todo = iter(keys)

    async def worker(c: StorageClient) -> None:
        for key in todo:  # one iterator shared by the workers: each key is asked once
            if failed:
                return
            try:
                st = await asyncio.wait_for(c.stat(key), timeout_s)
            except errors.NotFound:
                st = None
            except (errors.PixelfoxError, TimeoutError) as exc:
                failed.append(exc)
                return
            answers[key] = st if st is not None and st.exists else None

    try:
        async with StorageClient(rec.grpc_address, secret, timeout_s=timeout_s) as c:
            await asyncio.gather(*(worker(c) for _ in range(max(1, min(concurrency, len(keys))))))
    except (errors.PixelfoxError, TimeoutError) as exc:  # the client itself (a bad address)
        failed.append(exc)
    return answers, (failed[0] if failed else None)
