"""Storage tiers: move images hot -> warm -> cold by age and by days without views (issue 6).

A *tier* is a pool name (``PIXELFOX_POOL`` of a storage node, registered as the capability
``pool:<name>``); ``TierSettings.order`` ranks them. An image's tier is the pool of the nodes
holding its original. It moves one step down when it is older than that tier's ``after_days``
**and** has not been viewed for ``idle_days`` (a popular old image stays where it is). A view
is a ``GetImage`` (web page, API), recorded as a timestamp in the Redis hash
``pixelfox:{tiers}:seen`` (no view recorded: the upload time counts).

A move copies every object of the image (original and variants) to healthy nodes of the
next tier (up to the replication factor), verifying each copy by SHA-256 on the target
(:func:`nodes.manager.repair.copy_object`), records the new locations, and only once every
object is verified there deletes the copies in the old tier and their locations. A move cut
short (crash, node down, lease lost) leaves both copies recorded; reads keep working from
either, and the next run finishes it (re-putting what is already there is a no-op). So a
move never loses the only copy, and it is resumable.

Runs under the Redis lease ``tiers`` (one mover at a time): in every manager every
``interval_s`` when that is > 0, and on demand from ``pixelfox tiers move [--dry-run]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import prometheus_client
import redis.asyncio as aioredis
from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from redis.exceptions import RedisError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.registry import NodeRecord, Registry
from nodes.manager.repair import copy_object, pool_of
from pixelfox import errors
from pixelfox.config import FINITE
from pixelfox.db.models import Image, ObjectLocation
from pixelfox.leases import Lease
from pixelfox.storage.client import StorageClient
from pixelfox.v1 import common_pb2

logger = logging.getLogger(__name__)

SEEN_KEY = "pixelfox:{tiers}:seen"
MOVES = prometheus_client.Counter("pixelfox_storage_tier_moves_total", "Images moved between tiers", ["to", "result"])


class TierRule(BaseModel):
    """When an image moves *into* a tier: older than ``after_days`` and unseen for ``idle_days``."""

    after_days: float = Field(30.0, ge=0)
    idle_days: float = Field(14.0, ge=0)


class TierSettings(BaseModel):
    """``PIXELFOX_TIERS__*`` on the manager."""

    model_config = FINITE

    order: list[str] = Field(default_factory=lambda: ["hot", "warm", "cold"], min_length=1)
    rules: dict[str, TierRule] = Field(
        default_factory=lambda: {"warm": TierRule(after_days=30, idle_days=14),
                                 "cold": TierRule(after_days=180, idle_days=90)})
    interval_s: float = Field(0.0, ge=0, description="seconds between automatic passes; 0 = admin trigger only")
    batch: int = Field(50, ge=1, description="images moved per pass at most")
    lease_ttl_s: float = Field(120.0, gt=0)

    @field_validator("order")
    @classmethod
    def _distinct(cls, order: list[str]) -> list[str]:
        """ValueError naming each tier that is empty or named twice (an image "moved" to the pool it is in)."""
        twice = sorted({t for t in order if order.count(t) > 1})
        problems = (["a tier name is empty"] if any(not t.strip() for t in order) else []) + [
            f"tier {t!r} is named twice" for t in twice]
        if problems:
            raise ValueError("; ".join(problems))
        return order

    @field_validator("rules")
    @classmethod
    def _rules_name_lower_tiers(cls, rules: dict[str, TierRule], info: ValidationInfo) -> dict[str, TierRule]:
        """ValueError naming every rule for a tier ``order`` does not name (it never applied) or for the first
        tier (images move down only); not checked when ``order`` itself was refused."""
        order = info.data.get("order")
        if not order:
            return rules
        problems = [f"a rule for {t!r}, which PIXELFOX_TIERS__ORDER ({', '.join(order)}) does not name"
                    for t in rules if t not in order]
        if order[0] in rules:
            problems.append(f"a rule for {order[0]!r}, the first tier: images move down only (a rule says when "
                            "an image moves into its tier)")
        if problems:
            raise ValueError("; ".join(problems))
        return rules

    @model_validator(mode="after")
    def _default_rules_follow_order(self) -> TierSettings:
        """The default rules (warm, cold) keep those of the tiers ``order`` names below its first; rules set by
        the operator are as given (:meth:`_rules_name_lower_tiers`). A lower tier without a rule is one images
        never move into (allowed: docs/storage.md)."""
        if "rules" not in self.model_fields_set:
            self.rules = {k: v for k, v in self.rules.items() if k in self.order[1:]}
        return self


async def record_view(redis: aioredis.Redis, image_id: str) -> None:
    """Note that ``image_id`` was viewed now (best effort: a Redis error is logged, never raised)."""
    try:
        await redis.hset(SEEN_KEY, image_id, str(int(time.time())))
    except RedisError as exc:
        logger.debug("could not record a view of %s: %s", image_id, exc)


@dataclass
class Move:
    """One planned or done move: ``image_id``/``slug`` from tier ``src`` to ``dst`` (``reason`` says why)."""

    image_id: str
    slug: str
    src: str
    dst: str
    reason: str
    keys: int = 0
    done: bool = False
    error: str = ""
    #: copies of each object the image had in its tier, and gets in ``dst``: min(replicas, healthy nodes
    #: of ``dst``), fewer than ``had`` when the next tier has fewer nodes (``pixelfox tiers move`` warns)
    had: int = 0
    copies: int = 0


@dataclass
class TierReport:
    moves: list[Move] = field(default_factory=list)
    skipped: str = ""  # why nothing ran (lease held elsewhere, no tiers with nodes)
    held_elsewhere: bool = False  # nothing ran: another mover holds the lease (the CLI exits 75 then)
    unserved: dict[str, int] = field(default_factory=dict)  # tier -> due images no healthy node serves


class TierMover:
    """Plans and runs tier moves (see module doc)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: Registry,
        redis: aioredis.Redis,
        secret: str,
        replicas: int,
        settings: TierSettings | None = None,
        owner: str = "",
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.redis = redis
        self.unserved: dict[str, int] = {}  # tier -> images due for it that no healthy node serves (last plan)
        self.secret = secret
        self.replicas = max(1, replicas)
        self.settings = settings or TierSettings()
        self.lease = Lease(redis, "tiers", ttl_s=self.settings.lease_ttl_s, owner=owner or "tiers")

    async def run(self, stop: asyncio.Event) -> None:
        """Manager background task: a pass every ``interval_s`` (does nothing when that is 0)."""
        if self.settings.interval_s <= 0:
            return
        while not stop.is_set():
            try:
                await self.move(dry_run=False)
            except Exception:
                logger.exception("tier pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.interval_s)

    async def plan(self, now: float | None = None) -> list[Move]:
        """The moves due now, at most ``batch`` (nothing is changed). Images due for a tier that no
        healthy storage node serves are counted per tier in :attr:`unserved` instead."""
        now = now or time.time()
        self.unserved = {}
        order = self.settings.order
        nodes = {r.node_id: r for r in await self.registry.all(common_pb2.NODE_ROLE_STORAGE)}
        serving = Counter(pool_of(r) for r in nodes.values() if self.registry.healthy(r))
        pools_with_nodes = set(serving)
        try:
            seen_raw = await self.redis.hgetall(SEEN_KEY)
        except RedisError:
            seen_raw = {}
        seen = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in seen_raw.items()}
        moves: list[Move] = []
        async with self.sessions() as s:
            rows = (await s.execute(
                select(Image.id, Image.slug, Image.created_at, ObjectLocation.node_id)
                .join(ObjectLocation, ObjectLocation.key == Image.original_key)
                .where(Image.status == "ready").order_by(Image.created_at))).all()
        tiers: dict[str, tuple[str, datetime, list[str]]] = {}
        for image_id, slug, created, node_id in rows:
            rec = nodes.get(node_id)
            if rec is None:
                continue
            tiers.setdefault(image_id, (slug, created, []))[2].append(pool_of(rec))
        for image_id, (slug, created, holders) in tiers.items():
            pools = set(holders)
            ranked = [order.index(p) for p in pools if p in order]
            if not ranked:
                continue
            cur = min(ranked)  # mid-move images count as their upper tier until the move finishes
            if cur + 1 >= len(order):
                continue
            dst = order[cur + 1]
            rule = self.settings.rules.get(dst)
            if rule is None:
                continue
            created_ts = (created if created.tzinfo else created.replace(tzinfo=UTC)).timestamp()
            age_d = (now - created_ts) / 86400
            idle_d = (now - seen.get(image_id, created_ts)) / 86400
            if age_d >= rule.after_days and idle_d >= rule.idle_days and dst not in pools_with_nodes:
                self.unserved[dst] = self.unserved.get(dst, 0) + 1
            elif age_d >= rule.after_days and idle_d >= rule.idle_days:
                moves.append(Move(image_id, slug, order[cur], dst,
                                  f"{age_d:.1f} days old, unseen for {idle_d:.1f} days",
                                  had=holders.count(order[cur]), copies=min(self.replicas, serving[dst])))
            if len(moves) >= self.settings.batch:
                break
        return moves

    async def move(self, dry_run: bool = False, now: float | None = None) -> TierReport:
        """Plan, and unless ``dry_run`` carry out, the due moves under the ``tiers`` lease."""
        report = TierReport()
        if dry_run:
            report.moves = await self.plan(now)
            report.skipped, report.unserved = self._unserved_note(), dict(self.unserved)
            return report
        if not await self.lease.acquire():
            holder, left_s = await self.lease.holder(), await self.lease.left_s()
            until = f", for {left_s:.0f} s more unless it renews it" if left_s else ""
            report.skipped = (f"another tier mover holds the lease ({holder or 'a holder that just left'}{until}): "
                              "nothing was moved; run again later (a mover that was killed holds it until then)")
            report.held_elsewhere = True
            return report
        try:
            report.moves = await self.plan(now)
            report.skipped, report.unserved = self._unserved_note(), dict(self.unserved)
            for mv in report.moves:
                if not await self.lease.renew():
                    mv.error = "lease lost"
                    break
                await self._move_one(mv)
        finally:
            await self.lease.release()
        return report

    def _unserved_note(self) -> str:
        """Why due images stay where they are: their next tier has no healthy storage node."""
        return "; ".join(f"{n} image(s) due for {tier}, but no healthy storage node serves pool {tier!r}"
                         for tier, n in sorted(self.unserved.items()))

    async def _move_one(self, mv: Move) -> None:
        nodes = {r.node_id: r for r in await self.registry.all(common_pb2.NODE_ROLE_STORAGE)}
        targets = sorted((r for r in nodes.values() if pool_of(r) == mv.dst and self.registry.healthy(r)),
                         key=lambda r: (-r.free_bytes, r.node_id))[: self.replicas]
        async with self.sessions(info={"primary": True}) as s:  # decides deletes: never a lagging replica
            img = await s.get(Image, mv.image_id)
            if img is None:
                mv.error = "image gone"
                return
            keys = list(dict.fromkeys([img.original_key, *(v.key for v in img.variants)]))
            rows = (await s.execute(select(ObjectLocation).where(ObjectLocation.key.in_(keys)))).scalars().all()
        holders: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            holders[row.key].append(row.node_id)
        mv.keys = len(keys)
        try:
            for key in keys:
                have = holders.get(key, [])
                sources = [nodes[n] for n in have if n in nodes and pool_of(nodes[n]) != mv.dst]
                sources.sort(key=lambda r: not self.registry.healthy(r))
                for dst in targets:
                    if dst.node_id in have:
                        continue
                    size = await self._copy(key, sources, dst)
                    async with self.sessions() as s:
                        await s.merge(ObjectLocation(key=key, node_id=dst.node_id, size=size))
                        await s.commit()
            # every object is verified in the new tier: now (and only now) drop the old copies
            for key in keys:
                for node_id in holders.get(key, []):
                    rec = nodes.get(node_id)
                    if rec is None or pool_of(rec) == mv.dst:
                        continue
                    async with StorageClient(rec.grpc_address, self.secret) as c:
                        await c.delete(key)
                    async with self.sessions() as s:
                        await s.execute(delete(ObjectLocation).where(ObjectLocation.key == key,
                                                                     ObjectLocation.node_id == node_id))
                        await s.commit()
        except errors.PixelfoxError as exc:
            mv.error = f"{exc.code}: {exc}"[:300]
            MOVES.labels(mv.dst, "failed").inc()
            logger.warning("tier move of %s to %s stopped (resumes next run): %s", mv.slug, mv.dst, mv.error)
            return
        mv.done = True
        MOVES.labels(mv.dst, "ok").inc()
        logger.info("image %s moved %s -> %s (%d objects)", mv.slug, mv.src, mv.dst, mv.keys)

    async def _copy(self, key: str, sources: list[NodeRecord], dst: NodeRecord) -> int:
        last: errors.PixelfoxError = errors.Unavailable(f"no reachable holder of {key}")
        for src in sources:
            try:
                return await copy_object(src, dst, key, self.secret)
            except errors.PixelfoxError as exc:
                last = exc
        raise last
