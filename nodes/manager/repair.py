"""Replica repair: bring every object back to the replication factor (issue 6).

Writes go to the storage nodes ``Registry.place`` picks (the healthy ones, at most
``replicas``), and an upload or job is acknowledged once at least one of them has the bytes.
With a node down, objects end up with fewer copies than the factor. This loop, run by every
manager but doing work only on the holder of the Redis lease ``repair``
(:mod:`pixelfox.leases`), finds and fixes them:

1. *live* storage nodes are those heard from within ``lost_after_s`` (a node that is down for
   a short while still counts as holding its objects: it comes back with its disk);
   the factor for a pool is ``min(replicas, live nodes in that pool)``;
2. keys with fewer live locations than that are recorded in ``replica_debts`` (the
   under-replicated state, with the image they belong to) and copied from a reachable holder
   to healthy nodes of the same pool that lack them, most free space first: stream to a temp
   file, put (the target checks size and SHA-256), ``Stat`` the target and compare the
   SHA-256, then record the location;
3. a debt is deleted once the key is back at the factor (or no image names the key any more:
   keys being deleted are never copied back);
4. a debt whose key has no recorded copy on a live node (*lost*) is looked for on the reachable
   storage nodes, at most ``lost_batch`` keys per pass and each at most once per ``lost_every_s``
   (:mod:`nodes.manager.lostfind`); a copy found gets its location back and is copied to the factor
   in the same pass.

So a node that comes back, or a new node that joins while another is lost, gets the missing
copies within one ``interval_s`` of being healthy. Keys are walked in order with a cursor,
``batch`` per pass, so one failing key never starves the rest and a pass that dies is
simply resumed by the next one. A walk (passes from the first key to the last) starts over when a
node comes or goes; the gauge ``pixelfox_storage_repair_short_objects`` reads 0 only once a whole
walk found nothing to copy (how an operator sees that a repair is done).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, Field
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.lostfind import LostFinder
from nodes.manager.registry import STOPPED, NodeRecord, Registry
from pixelfox import errors
from pixelfox.config import FINITE
from pixelfox.db.models import Image, ObjectLocation, ReplicaDebt, Variant
from pixelfox.leases import Lease, run_with_lease
from pixelfox.storage.client import StorageClient
from pixelfox.v1 import common_pb2

logger = logging.getLogger(__name__)

#: the error of a debt whose key has no location row left on any node, set by a pass that finds one with a stale
#: count (:meth:`ReplicaRepair._forget_settled`); :mod:`nodes.manager.gone` writes its own, naming the forgotten node
NO_COPY_LEFT = "no copy left on any storage node; its owner's upload of the same file restores it"

UNDER_REPLICATED = Gauge("pixelfox_storage_under_replicated_objects",
                         "Replica debts open after the last repair pass (keys it could not bring to the factor)")
WALK_SHORT = Gauge("pixelfox_storage_repair_short_objects",
                   "Objects below their pool's factor found by the current repair walk so far or the last complete "
                   "one, whichever is more (0: a whole walk found nothing to copy; -1: no walk on this manager)")
#: what a storage node that takes no copies is doing, by :meth:`Registry.status` (else: "not ready")
IDLE_NAMES: dict[int, str] = {
    common_pb2.NODE_STATUS_INACTIVE: "down", common_pb2.NODE_STATUS_MAINTENANCE: "maintenance",
    common_pb2.NODE_STATUS_DRAINING: "draining", STOPPED: "stopped"}
REPAIRS = Counter("pixelfox_storage_repairs_total", "Replica copies made by the repair loop", ["result"])


class RepairSettings(BaseModel):
    """``PIXELFOX_REPAIR__*`` on the manager."""

    model_config = FINITE

    interval_s: float = Field(10.0, gt=0, description="seconds between repair passes")
    lost_after_s: float = Field(
        600.0, gt=0, description="a storage node silent this long no longer counts as holding its objects")
    batch: int = Field(100, ge=1, description="keys looked at per pass")
    lease_ttl_s: float = Field(30.0, gt=0, description="TTL of the Redis lease that makes one manager repair")
    lost_batch: int = Field(
        20, ge=0, description="lost keys (debts with no recorded copy on a live node) looked for on the storage "
        "nodes per pass (0: never look)")
    lost_every_s: float = Field(
        300.0, gt=0, description="seconds before the storage nodes are asked again for a lost key not found")


def pool_of(rec: NodeRecord) -> str:
    """The pool (tier) a storage node serves, from its ``pool:<name>`` capability ("hot" if none)."""
    for cap in rec.capabilities:
        if cap.startswith("pool:"):
            return cap[5:]
    return "hot"


@dataclass
class PassReport:
    """What one pass did: keys found short, copies made and failed, debts left open, and the distinct
    errors recorded for the keys left short (``errors``, logged with the pass)."""

    short: int = 0
    copied: int = 0
    failed: int = 0
    open_debts: int = 0
    walk_short: int = -1  # keys found short over the walk this pass completed; -1: it completed none
    errors: list[str] = field(default_factory=list)


async def copy_object(src: NodeRecord, dst: NodeRecord, key: str, secret: str) -> int:
    """Copy ``key`` from ``src`` to ``dst`` and verify it there; returns its size in bytes.

    Raises ``NotFound`` if ``src`` lacks it, ``ChecksumMismatch`` if the copy's SHA-256
    differs from the source's, or any other ``PixelfoxError`` from either node.
    """
    async with StorageClient(src.grpc_address, secret) as a, StorageClient(dst.grpc_address, secret) as b:
        st = await a.stat(key)
        if not st.exists:
            raise errors.NotFound(f"{key} is not on {src.node_id}")
        with tempfile.TemporaryDirectory(prefix="pixelfox-repair-") as tmp:
            path = Path(tmp) / "object"
            await a.get_to(key, path)
            await b.put(key, path, content_type=st.content_type, sha256=st.sha256)
        got = await b.stat(key)
        if not got.exists or got.sha256 != st.sha256 or got.size != st.size:
            raise errors.ChecksumMismatch(f"{key} on {dst.node_id} does not match {src.node_id}")
        return int(st.size)


class ReplicaRepair:
    """The repair loop (see module doc). ``run`` is a manager background task."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: Registry,
        redis: aioredis.Redis,
        secret: str,
        replicas: int,
        settings: RepairSettings | None = None,
        owner: str = "",
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.redis = redis
        self.secret = secret
        self.replicas = max(1, replicas)
        self.settings = settings or RepairSettings()
        self.lease = Lease(redis, "repair", ttl_s=self.settings.lease_ttl_s, owner=owner or "manager")
        self._after = ""  # key cursor: the next pass starts after it
        self._walk_short = 0  # keys found short in the current walk (a walk: passes from key "" to the end)
        self._last_walk_short = -1  # ... in the last complete walk (-1: none yet)
        self._walk_nodes: frozenset[str] = frozenset()  # the live nodes the current walk started with
        WALK_SHORT.set(-1)
        self.lost = LostFinder(sessions, secret, self.settings.lost_batch, self.settings.lost_every_s)
        self._leased = False  # True inside run(): work only while the lease is held

    async def run(self, stop: asyncio.Event) -> None:
        """Repair every ``interval_s`` while holding the ``repair`` lease, until ``stop``."""
        self._leased = True
        await run_with_lease(self.lease, stop, self._pass, every_s=self.settings.interval_s)

    def _reachable(self, rec: NodeRecord) -> bool:
        """Heard from within the node timeout, and not stopped (a node that stopped cleanly reads nothing)."""
        return self.registry.status(rec) not in (common_pb2.NODE_STATUS_INACTIVE, STOPPED)

    async def _pass(self) -> None:
        await self.pass_once()

    async def pass_once(self) -> PassReport:
        """One pass over at most ``batch`` keys below the factor; returns what it did."""
        report = PassReport()
        nodes = await self.registry.all(common_pb2.NODE_ROLE_STORAGE)
        now = time.time()
        live = {r.node_id: r for r in nodes if now - r.last_heartbeat < self.settings.lost_after_s}
        per_pool: dict[str, int] = defaultdict(int)
        for r in live.values():
            per_pool[pool_of(r)] += 1
        if not live:
            return report
        threshold = min(self.replicas, max(per_pool.values()))
        if frozenset(live) != self._walk_nodes:  # a node came or went: walk again from the first key
            self._after, self._walk_nodes = "", frozenset(live)
        async with self.sessions() as s:
            keys = await self._short_keys(s, list(live), threshold)
            if len(keys) < self.settings.batch:
                self._after = ""  # reached the end: start over next pass
            else:
                self._after = keys[-1]
            holders: dict[str, list[str]] = defaultdict(list)
            sizes: dict[str, int] = {}
            if keys:  # only keys an image still names: never bring back what is being deleted
                referenced = set((await s.execute(select(Image.original_key).where(Image.original_key.in_(keys))))
                                 .scalars()) | set((await s.execute(select(Variant.key).where(Variant.key.in_(keys))))
                                                   .scalars())
                keys = [k for k in keys if k in referenced]
            if keys:
                rows = (await s.execute(select(ObjectLocation).where(ObjectLocation.key.in_(keys)))).scalars().all()
                for row in rows:
                    if row.node_id in live:
                        holders[row.key].append(row.node_id)
                    sizes[row.key] = row.size
        walk_done = not self._after
        for key in keys:
            if self._leased and not self.lease.held:  # lost the lease mid-pass: stop at once
                walk_done = False
                break
            await self._repair_key(key, holders.get(key, []), live, per_pool, sizes.get(key, 0), report)
        self._count_walk(report, walk_done)
        if not (self._leased and not self.lease.held):
            await self._find_lost(live, per_pool, report)
        await self._forget_settled(list(live), threshold)
        async with self.sessions() as s:
            report.open_debts = int(await s.scalar(select(func.count()).select_from(ReplicaDebt)) or 0)
        UNDER_REPLICATED.set(report.open_debts)
        if report.short:
            logger.log(logging.WARNING if report.failed else logging.INFO,
                       "repair pass: %d short, %d copied, %d failed, %d open%s", report.short, report.copied,
                       report.failed, report.open_debts, "".join(f"; {e}" for e in report.errors))
        return report

    async def _find_lost(self, live: dict[str, NodeRecord], per_pool: dict[str, int], report: PassReport) -> None:
        """Look for lost keys on the reachable nodes (:class:`LostFinder`) and copy those found to the factor."""
        if self.settings.lost_batch <= 0:
            return
        found = await self.lost.find(list(live), [r for r in live.values() if self._reachable(r)])
        for key, copies in sorted(found.items()):
            if self._leased and not self.lease.held:
                return
            await self._repair_key(key, [n for n, _ in copies], live, per_pool, copies[0][1], report)

    def _count_walk(self, report: PassReport, walk_done: bool) -> None:
        """Add this pass's short keys to the walk's, publish :data:`WALK_SHORT`, and close the walk if the pass
        reached the last key (so the figure reads 0 only once a whole walk found nothing to copy)."""
        self._walk_short += report.short
        if walk_done:
            report.walk_short = self._last_walk_short = self._walk_short
            self._walk_short = 0
        WALK_SHORT.set(max(self._walk_short, self._last_walk_short))

    async def _short_keys(self, s: AsyncSession, live: list[str], threshold: int) -> list[str]:
        n = func.count(ObjectLocation.node_id)
        q = (select(ObjectLocation.key).where(ObjectLocation.node_id.in_(live), ObjectLocation.key > self._after)
             .group_by(ObjectLocation.key).having(n < threshold).order_by(ObjectLocation.key)
             .limit(self.settings.batch))
        return list((await s.execute(q)).scalars().all())

    async def _repair_key(
        self, key: str, have: list[str], live: dict[str, NodeRecord], per_pool: dict[str, int], size: int,
        report: PassReport,
    ) -> None:
        if not have:
            return  # no live holder: nothing to copy from (a lost node may still come back)
        pool = pool_of(live[have[0]])
        want = min(self.replicas, per_pool[pool])
        if len(have) >= want:
            return
        report.short += 1
        await self._record_debt(key, len(have), want, "")
        sources = sorted((live[n] for n in have if self._reachable(live[n])),
                         key=lambda r: (not self.registry.healthy(r), r.node_id))
        targets = sorted((r for r in live.values() if r.node_id not in have and pool_of(r) == pool
                          and self.registry.healthy(r)), key=lambda r: (-r.free_bytes, r.node_id))
        made, last_error = 0, ""
        if len(targets) < want - len(have):  # too few nodes take copies (none, or fewer than missing)
            last_error = self._no_target(pool, live, want)
        elif not sources:
            last_error = "no holder can be read now (" + ", ".join(
                f"{n}: {self._why_idle(live[n])}" for n in have) + "): start a holder again, the copy follows"
        for dst in targets:
            if len(have) + made >= want:
                break
            for src in sources:
                try:
                    size = await copy_object(src, dst, key, self.secret)
                except errors.PixelfoxError as exc:
                    last_error = f"{src.node_id} -> {dst.node_id}: {exc.code}: {exc}"[:500]
                    logger.warning("repair of %s failed: %s", key, last_error)
                    continue
                async with self.sessions() as s:
                    await s.merge(ObjectLocation(key=key, node_id=dst.node_id, size=size))
                    await s.commit()
                made += 1
                REPAIRS.labels("ok").inc()
                logger.info("repaired %s: copied %s -> %s", key, src.node_id, dst.node_id)
                break
        report.copied += made
        if len(have) + made >= want:
            async with self.sessions() as s:
                await s.execute(delete(ReplicaDebt).where(ReplicaDebt.key == key))
                await s.commit()
        else:
            report.failed += 1
            REPAIRS.labels("failed").inc()
            await self._record_debt(key, len(have) + made, want, last_error)
            if last_error not in report.errors:
                report.errors.append(last_error)

    def _why_idle(self, rec: NodeRecord) -> str:
        """Why storage node ``rec`` takes no copies now: ``down``, ``maintenance``, ``draining``, ``stopped``
        or ``not ready`` (its pool does not answer)."""
        return IDLE_NAMES.get(self.registry.status(rec), "not ready")

    def _no_target(self, pool: str, live: dict[str, NodeRecord], want: int) -> str:
        """The debt's error when too few nodes of ``pool`` can take a copy: how many take copies (holders
        included) against the ``want`` replicas, the others with why, and what the operator can do."""
        members = sorted((r for r in live.values() if pool_of(r) == pool), key=lambda r: r.node_id)
        taking = sum(1 for r in members if self.registry.healthy(r))
        idle = ", ".join(f"{r.node_id}: {self._why_idle(r)}" for r in members if not self.registry.healthy(r))
        return (f"pool {pool}: {taking} storage node{'' if taking == 1 else 's'} take{'s' if taking == 1 else ''} "
                f"copies, {want} replicas wanted" + (f" ({idle})" if idle else "")
                + ": start or add a storage node in this pool, or take one out of maintenance "
                "(`pixelfox nodes maintenance ID --off`)")[:500]

    async def _record_debt(self, key: str, have: int, want: int, error: str) -> None:
        await record_debt(self.sessions, key, have, want, error)

    async def _forget_settled(self, live: list[str], threshold: int) -> None:
        """Drop debts whose key is back at the factor by other means (a re-upload, a node back), or that no
        image names any more. A debt whose key is named but has no location left (its only holder was
        forgotten: :mod:`nodes.manager.gone`) stays, so the loss stays counted
        (``pixelfox_storage_under_replicated_objects``), with ``have`` 0: a pass that read the forgotten node as
        a holder before it was forgotten may have written its stale count (and its own error) after
        :mod:`~nodes.manager.gone` wrote 0; such a debt is set back to 0 copies with :data:`NO_COPY_LEFT`."""
        async with self.sessions() as s:
            debts = (await s.execute(select(ReplicaDebt.key, ReplicaDebt.want))).all()
            if not debts:
                return
            keys = [d[0] for d in debts]
            live_counts = dict((await s.execute(
                select(ObjectLocation.key, func.count(ObjectLocation.node_id))
                .where(ObjectLocation.key.in_(keys), ObjectLocation.node_id.in_(live))
                .group_by(ObjectLocation.key))).all())
            named = set((await s.execute(select(Image.original_key).where(Image.original_key.in_(keys)))).scalars())
            named |= set((await s.execute(select(Variant.key).where(Variant.key.in_(keys)))).scalars())
            done = [k for k, want in debts if k not in named or live_counts.get(k, 0) >= min(want, threshold)]
            located = set((await s.execute(select(ObjectLocation.key).where(ObjectLocation.key.in_(keys))
                                           .distinct())).scalars())
            nowhere = [k for k in keys if k in named and k not in located]
            if nowhere:  # no row on any node: 0 copies, whatever a pass wrote meanwhile
                await s.execute(update(ReplicaDebt).where(ReplicaDebt.key.in_(nowhere), ReplicaDebt.have > 0)
                                .values(have=0, last_error=NO_COPY_LEFT))
            if done:
                await s.execute(delete(ReplicaDebt).where(ReplicaDebt.key.in_(done)))
            if nowhere or done:
                await s.commit()


async def record_debt(sessions: async_sessionmaker[AsyncSession], key: str, have: int, want: int, error: str) -> None:
    """Open or update the replica debt of ``key``: ``have`` copies of ``want``, ``error`` (kept as the last one
    when "") as what stands in the way; a new debt names the image whose original or variant ``key`` is."""
    async with sessions() as s:
        await add_debt(s, key, have, want, error)
        await s.commit()


async def add_debt(s: AsyncSession, key: str, have: int, want: int, error: str) -> None:
    """:func:`record_debt` in the caller's session ``s`` (the caller commits), so that the debt goes with
    whatever else the caller changes in the same transaction (:mod:`nodes.manager.scrub`)."""
    debt = await s.get(ReplicaDebt, key)
    if debt is None:
        image_id = await s.scalar(select(Image.id).where(Image.original_key == key).limit(1))
        if image_id is None:
            image_id = await s.scalar(select(Variant.image_id).where(Variant.key == key).limit(1))
        debt = ReplicaDebt(key=key, image_id=image_id or "", since=datetime.now(UTC))
        s.add(debt)
    debt.have, debt.want = have, want
    if error:
        debt.last_error = error


async def under_replicated_images(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, int, int]]:
    """``(image_id, fewest copies, factor)`` for every image with an open replica debt."""
    async with sessions() as s:
        rows = (await s.execute(
            select(ReplicaDebt.image_id, func.min(ReplicaDebt.have), func.max(ReplicaDebt.want))
            .where(ReplicaDebt.image_id != "").group_by(ReplicaDebt.image_id))).all()
    return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]
