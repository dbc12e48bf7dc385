"""Durable, at-least-once job queue on Redis Streams with a consumer group.

Layout (every key carries the hash tag ``{jobs}``, so MULTI blocks and the Lua mover stay in
one Cluster slot, ECOSYSTEM.md §3):

* ``pixelfox:{jobs}:stream`` - the *interactive* lane (fresh uploads);
* ``pixelfox:{jobs}:batch`` - the *batch* lane (``pixelfox reprocess``), read only when the
  interactive lane is empty, so uploads go ahead of batch work;
* ``pixelfox:{jobs}:delayed`` - a sorted set of jobs waiting out their retry back-off
  (score = unix time due); :meth:`JobQueue.promote_due` moves due ones into their lane;
* ``pixelfox:{jobs}:dead`` - the dead-letter stream;
* ``pixelfox:{jobs}:known`` - the set of image ids with a live job, written in the same
  MULTI as the stream entry. After a Redis crash that lost the last writes (AOF
  ``everysec``) the set lost them too, so the manager's outbox sweeper re-enqueues exactly
  the jobs Redis forgot (:mod:`nodes.manager.outbox`).

Every manager is a consumer of group ``dispatchers``. A manager takes an entry with
``XREADGROUP``, hands it to a processing node and ``XACK``s it only when the node reports
it done. The pending entry is the *manager's* lease: while a manager works on it,
:meth:`JobQueue.touch` resets its idle time; entries idle longer than ``lease_s`` (their
manager died) are taken over with ``XAUTOCLAIM`` by any manager, and at once by the same
manager when it restarts under its node id (:meth:`JobQueue.take`). The *processing node's*
lease is kept by the dispatcher (:mod:`nodes.manager.dispatch`).

Failed jobs are retried with exponential back-off and jitter (:func:`backoff_s`); after
``max_attempts`` failures, or ``max_lost`` runs lost to dead nodes, they go to the dead
letters. Outputs are content-addressed, so a job that runs twice is harmless.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

STREAM = "pixelfox:{jobs}:stream"
BATCH = "pixelfox:{jobs}:batch"
DELAYED = "pixelfox:{jobs}:delayed"
DEAD = "pixelfox:{jobs}:dead"
KNOWN = "pixelfox:{jobs}:known"
GROUP = "dispatchers"
#: ms under its expected idle time at which an orphan is still claimed (JobQueue._take_orphans): the
#: manager's clock and Redis' differ by a round trip
ORPHAN_MARGIN_MS = 50
LANES = {"interactive": STREAM, "batch": BATCH}

# KEYS: known set, lane stream; ARGV: image id, then the entry's field/value pairs. Queues the job
# only when the image has no live job: one step, so concurrent callers cannot both pass the check.
_ADD_IF_IDLE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"""

# Moves due members of the delayed set into their lane; returns how many moved.
# KEYS: delayed, interactive stream, batch stream; ARGV: now (unix s), max count.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local j = cjson.decode(m)
  local key = KEYS[2]
  if j['lane'] == 'batch' then key = KEYS[3] end
  redis.call('XADD', key, '*', 'image_id', j['image_id'], 'attempt', tostring(j['attempt']),
    'lost', tostring(j['lost']), 'ts', ARGV[1], 'lane', j['lane'], 'kind', j['kind'],
    'cpu', tostring(j['cpu']), 'gpu', tostring(j['gpu']), 'recipe', tostring(j['recipe']),
    'reason', j['reason'])
  redis.call('ZREM', KEYS[1], m)
end
return #due
"""


@dataclass(frozen=True)
class QueuedJob:
    """One job as stored in a lane.

    ``attempt`` counts reported failures, ``lost`` counts runs whose node vanished or whose
    lease ran out. ``cpu`` is the estimated CPU seconds (a hint), ``gpu`` asks for a
    GPU-capable node, ``recipe`` is the variant recipe version to produce (0 = the image's).
    """

    entry_id: str
    image_id: str
    attempt: int = 0
    enqueued_at: float = 0.0  # unix seconds
    lane: str = "interactive"
    kind: str = "process_image"
    lost: int = 0
    cpu: float = 0.0
    gpu: bool = False
    recipe: int = 0
    reason: str = ""

    def fields(self) -> dict[Any, Any]:
        return {"image_id": self.image_id, "attempt": str(self.attempt), "lost": str(self.lost),
                "ts": f"{time.time():.3f}", "lane": self.lane, "kind": self.kind, "cpu": f"{self.cpu:g}",
                "gpu": "1" if self.gpu else "0", "recipe": str(self.recipe), "reason": self.reason[:500]}


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _job(entry_id: Any, fields: Any, lane: str = "") -> QueuedJob:
    f = {_decode(k): _decode(v) for k, v in fields.items()}
    return QueuedJob(
        entry_id=_decode(entry_id),
        image_id=f.get("image_id", ""),
        attempt=int(f.get("attempt", "0")),
        enqueued_at=float(f.get("ts", "0")),
        lane=f.get("lane") or lane or "interactive",
        kind=f.get("kind") or "process_image",
        lost=int(f.get("lost", "0")),
        cpu=float(f.get("cpu", "0") or 0),
        gpu=f.get("gpu", "0") in ("1", "true", "True"),
        recipe=int(f.get("recipe", "0") or 0),
        reason=f.get("reason", ""),
    )


CPU_S_PER_MEGAPIXEL = 0.25  # rough cost of the default recipe per decoded megapixel-frame (hint only)


def cpu_estimate_s(width: int, height: int, frames: int = 1) -> float:
    """The plan's "estimated CPU time" job hint for an original of ``width`` x ``height`` px, seconds."""
    return round(width * height * max(1, frames) / 1e6 * CPU_S_PER_MEGAPIXEL, 2)


def backoff_s(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt + 1`` (``attempt`` >= 0 failures so far), seconds.

    Exponential with "equal jitter" (AWS Architecture Blog, *Exponential Backoff and
    Jitter*): ``d = min(cap, base * 2**attempt)``, result uniform in ``[d/2, d]`` - never
    zero, so a failing job cannot spin, and spread so retries of a burst do not align.
    """
    d = min(cap_s, base_s * (2 ** max(0, attempt)))
    return float(d / 2 + (rng or random).uniform(0, d / 2))


class JobQueue:
    """The queue as seen by one consumer (a manager).

    ``lease_s``: a pending entry idle this long is retaken by any manager (seconds).
    ``max_attempts``: failures before the dead letters; ``max_lost``: lost runs before the
    dead letters (a poison job that kills its node every time, RELIABILITY.md D2).
    ``backoff_base_s``/``backoff_cap_s``: see :func:`backoff_s`.
    """

    def __init__(self, redis: aioredis.Redis, consumer: str, lease_s: float = 120.0, max_attempts: int = 3,
                 *, max_lost: int = 10, backoff_base_s: float = 1.0, backoff_cap_s: float = 60.0) -> None:
        self.redis = redis
        self.consumer = consumer
        self.lease_ms = int(lease_s * 1000)
        self.max_attempts = max_attempts
        self.max_lost = max_lost
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._promote = redis.register_script(_PROMOTE)
        self._add_if_idle = redis.register_script(_ADD_IF_IDLE)
        # (lane, entry id, idle ms when read) pending under this consumer's name before this process took
        # anything: an earlier life of this manager (same node id) died holding them. None: not read yet.
        self._orphans: list[tuple[str, str, int]] | None = None
        self._orphans_read_at = 0.0  # time.monotonic() of that read

    async def ensure_group(self) -> None:
        """Create both lanes and their group if missing (idempotent; also after Redis lost them)."""
        for key in (STREAM, BATCH):
            try:
                await self.redis.xgroup_create(key, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def enqueue(self, image_id: str, attempt: int = 0, *, lane: str = "interactive",
                      kind: str = "process_image", cpu: float = 0.0, gpu: bool = False, recipe: int = 0) -> str:
        """Add a job to ``lane``; returns its entry id."""
        job = QueuedJob("", image_id, attempt, lane=lane, kind=kind, cpu=cpu, gpu=gpu, recipe=recipe)
        return await self._add(job)

    async def enqueue_if_idle(self, image_id: str, *, lane: str = "batch", kind: str = "reprocess_image",
                              gpu: bool = False, recipe: int = 0) -> str | None:
        """:meth:`enqueue`, only when ``image_id`` has no live job (queued, running, delayed): the
        check and the add are one Lua step, so runs at the same time queue an image once.
        Returns the entry id, or None when the image already had a job."""
        job = QueuedJob("", image_id, 0, lane=lane, kind=kind, gpu=gpu, recipe=recipe)
        args = [image_id, *(x for kv in job.fields().items() for x in kv)]
        res = await self._add_if_idle(keys=[KNOWN, LANES.get(lane, STREAM)], args=args)
        return None if res is None else _decode(res)

    async def _add(self, job: QueuedJob, drop: QueuedJob | None = None) -> str:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(LANES.get(job.lane, STREAM), job.fields())
            pipe.sadd(KNOWN, job.image_id)
            if drop is not None:
                self._drop(pipe, drop)
            res = await pipe.execute()
        return _decode(res[0])

    def _drop(self, pipe: aioredis.client.Pipeline, job: QueuedJob) -> None:
        key = LANES.get(job.lane, STREAM)
        pipe.xack(key, GROUP, job.entry_id)
        pipe.xdel(key, job.entry_id)

    async def known(self, image_ids: list[str]) -> list[bool]:
        """Whether each image has a live job (queued, running, delayed) as far as Redis knows."""
        if not image_ids:
            return []
        return [bool(x) for x in await self.redis.smismember(KNOWN, image_ids)]

    async def take(self, count: int = 1, block_ms: int = 1000) -> list[QueuedJob]:
        """Up to ``count`` jobs: first ones whose manager lease ran out, then interactive, then batch.

        Blocks up to ``block_ms`` when both lanes are empty.
        """
        jobs = await self._take_orphans(count)
        for lane, key in LANES.items():
            if len(jobs) >= count:
                break
            res: Any = await self.redis.xautoclaim(
                key, GROUP, self.consumer, min_idle_time=self.lease_ms, start_id="0-0", count=count - len(jobs))
            claimed = res[1]
            jobs.extend(_job(eid, fields, lane) for eid, fields in claimed if fields)
        for lane, key in LANES.items():
            if len(jobs) >= count:
                return jobs
            resp: Any = await self.redis.xreadgroup(GROUP, self.consumer, {key: ">"}, count=count - len(jobs))
            for _stream, entries in resp or []:
                jobs.extend(_job(eid, fields, lane) for eid, fields in entries if fields)
        if not jobs and block_ms > 0:
            resp = await self.redis.xreadgroup(GROUP, self.consumer, {STREAM: ">", BATCH: ">"}, count=count,
                                               block=block_ms)
            for stream, entries in resp or []:
                lane = "batch" if _decode(stream) == BATCH else "interactive"
                jobs.extend(_job(eid, fields, lane) for eid, fields in entries if fields)
        return jobs[:count]

    async def _take_orphans(self, count: int) -> list[QueuedJob]:
        """Up to ``count`` entries an earlier life of this consumer left pending.

        A manager that died with jobs dispatched comes back under the same node id; its old
        entries would otherwise wait out ``lease_s`` (120 s by default) before any manager's
        ``XAUTOCLAIM`` retook them, and ``pixelfox jobs`` would show them running on no node.
        They are read once, before this process takes its first job, so entries this process
        holds itself are never among them; each is claimed only if it stayed idle since (another
        manager that took it over meanwhile reset its idle time, and keeps it).
        """
        if self._orphans is None:
            found: list[tuple[str, str, int]] = []
            for lane, key in LANES.items():
                rows: Any = await self.redis.xpending_range(key, GROUP, min="-", max="+", count=10_000,
                                                            consumername=self.consumer)
                found.extend((lane, _decode(r["message_id"]), int(r["time_since_delivered"])) for r in rows)
            self._orphans, self._orphans_read_at = found, time.monotonic()
        jobs: list[QueuedJob] = []
        since_ms = int((time.monotonic() - self._orphans_read_at) * 1000)
        while self._orphans and len(jobs) < count:
            lane, entry_id, idle_ms = self._orphans.pop(0)
            # untouched since the read, its idle time is now idle_ms + since_ms (less a margin for the two
            # clocks); a manager that took it over meanwhile reset it to less
            res: Any = await self.redis.xclaim(LANES[lane], GROUP, self.consumer,
                                               min_idle_time=max(0, idle_ms + since_ms - ORPHAN_MARGIN_MS),
                                               message_ids=[entry_id])
            jobs.extend(_job(eid, fields, lane) for eid, fields in res if fields)
        return jobs

    async def touch(self, jobs: list[QueuedJob]) -> None:
        """Renew the manager lease of jobs this consumer still works on (resets their idle time)."""
        for lane, key in LANES.items():
            ids: list[Any] = [j.entry_id for j in jobs if j.lane == lane]
            if ids:
                await self.redis.xclaim(key, GROUP, self.consumer, min_idle_time=0, message_ids=ids, justid=True)

    async def ack(self, job: QueuedJob) -> None:
        """The job is done: remove it from the pending list, its lane and the known set."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self._drop(pipe, job)
            pipe.srem(KNOWN, job.image_id)
            await pipe.execute()

    async def retry(self, job: QueuedJob, reason: str) -> float | None:
        """A run failed: delay it with back-off (``attempt + 1``), or dead-letter it.

        Returns the delay in seconds, or None if the job went to the dead letters.
        """
        nxt = replace(job, attempt=job.attempt + 1, reason=reason[:500])
        if nxt.attempt >= self.max_attempts:
            await self.bury(nxt, reason)
            return None
        delay = backoff_s(job.attempt, self.backoff_base_s, self.backoff_cap_s)
        await self.defer(nxt, delay, drop=job)
        return delay

    async def defer(self, job: QueuedJob, delay_s: float, drop: QueuedJob | None = None) -> None:
        """Put ``job`` in the delayed set, due in ``delay_s`` seconds; ack ``drop`` in the same MULTI."""
        member = json.dumps({"image_id": job.image_id, "attempt": job.attempt, "lost": job.lost, "lane": job.lane,
                             "kind": job.kind, "cpu": job.cpu, "gpu": int(job.gpu), "recipe": job.recipe,
                             "reason": job.reason[:500], "token": secrets.token_hex(6)})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(DELAYED, {member: time.time() + delay_s})
            pipe.sadd(KNOWN, job.image_id)
            if drop is not None:
                self._drop(pipe, drop)
            await pipe.execute()

    async def requeue(self, job: QueuedJob, *, lost: bool = False) -> bool:
        """Give a job back at the same attempt (its node left, its lease ran out, or it was handed back).

        With ``lost`` the run counts as lost; after ``max_lost`` lost runs the job is
        dead-lettered. Returns True if the job was queued again.
        """
        nxt = replace(job, lost=job.lost + (1 if lost else 0))
        if nxt.lost >= self.max_lost:
            await self.bury(nxt, f"lost {nxt.lost} times (node died or lease expired)", drop=job)
            return False
        await self._add(nxt, drop=job)
        return True

    async def bury(self, job: QueuedJob, reason: str, drop: QueuedJob | None = None) -> None:
        """Move ``job`` to the dead letters (acking ``drop``, or ``job`` itself when it is in a lane)."""
        fields = replace(job, reason=reason[:500]).fields()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(DEAD, fields)
            pipe.srem(KNOWN, job.image_id)
            self._drop(pipe, drop or job)
            await pipe.execute()

    async def promote_due(self, max_count: int = 100) -> int:
        """Move delayed jobs that are due into their lane; returns how many moved."""
        return int(await self._promote(keys=[DELAYED, STREAM, BATCH], args=[f"{time.time():.3f}", max_count]))

    async def dead_of(self, image_id: str, scan: int = 10_000) -> list[QueuedJob]:
        """The dead letters of ``image_id`` among the newest ``scan``, newest first."""
        rows: Any = await self.redis.xrevrange(DEAD, count=scan)
        return [job for job in (_job(eid, f) for eid, f in rows) if job.image_id == image_id]

    async def forget_dead(self, entry_ids: list[str]) -> None:
        """Remove these dead letters (superseded: their image's job was queued again)."""
        if entry_ids:
            await self.redis.xdel(DEAD, *entry_ids)

    async def forget_dead_of(self, image_id: str) -> int:
        """Remove every dead letter of ``image_id`` (among the newest 10,000): its image was finished by a
        later run, or deleted, so replaying them could only fail or do nothing, and they kept the
        dead-letter gauge (and its alert) up for good. Returns how many went; an empty stream costs
        one XLEN."""
        if not await self.redis.xlen(DEAD):
            return 0
        ids = [d.entry_id for d in await self.dead_of(image_id)]
        await self.forget_dead(ids)
        return len(ids)

    async def dead_job(self, dead_entry_id: str) -> QueuedJob | None:
        """The dead letter ``dead_entry_id`` as it is, or None: to act on its image before reviving it."""
        entries: Any = await self.redis.xrange(DEAD, dead_entry_id, dead_entry_id)
        return _job(*entries[0]) if entries else None

    async def revive(self, dead_entry_id: str) -> QueuedJob | None:
        """Re-queue a dead letter with fresh counters (``pixelfox jobs retry``); None if unknown."""
        entries: Any = await self.redis.xrange(DEAD, dead_entry_id, dead_entry_id)
        if not entries:
            return None
        old = _job(*entries[0])
        job = replace(old, attempt=0, lost=0, reason="")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(LANES.get(job.lane, STREAM), job.fields())
            pipe.sadd(KNOWN, job.image_id)
            pipe.xdel(DEAD, dead_entry_id)
            res = await pipe.execute()
        return replace(job, entry_id=_decode(res[0]), enqueued_at=time.time())

    # ---- inspection (pixelfox jobs, the admin page) -------------------------------------

    async def pending(self, lane: str, limit: int = 1000) -> dict[str, tuple[str, float]]:
        """Entry id -> (consumer, idle seconds) for entries taken but not acked in ``lane``."""
        rows: Any = await self.redis.xpending_range(LANES[lane], GROUP, min="-", max="+", count=limit)
        return {_decode(r["message_id"]): (_decode(r["consumer"]), float(r["time_since_delivered"]) / 1000)
                for r in rows}

    async def entries(self, lane: str, limit: int = 1000) -> list[QueuedJob]:
        rows: Any = await self.redis.xrange(LANES[lane], count=limit)
        return [_job(eid, f, lane) for eid, f in rows]

    async def delayed(self, limit: int = 1000) -> list[tuple[QueuedJob, float]]:
        """Delayed jobs with their due time (unix seconds), soonest first."""
        out = []
        rows: Any = await self.redis.zrange(DELAYED, 0, limit - 1, withscores=True)
        for member, score in rows:
            d = json.loads(_decode(member))
            job = QueuedJob(f"delayed:{d.get('token', '')}", d["image_id"], int(d["attempt"]), lane=d["lane"],
                            kind=d["kind"], lost=int(d["lost"]), cpu=float(d["cpu"]), gpu=bool(d["gpu"]),
                            recipe=int(d["recipe"]), reason=d.get("reason", ""))
            out.append((job, float(score)))
        return out

    async def dead(self, limit: int = 1000) -> list[QueuedJob]:
        rows: Any = await self.redis.xrevrange(DEAD, count=limit)
        return [_job(eid, f) for eid, f in rows]

    async def depth(self) -> int:
        """Jobs waiting or in flight (entries in both lanes, plus delayed ones)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(STREAM)
            pipe.xlen(BATCH)
            pipe.zcard(DELAYED)
            a, b, c = await pipe.execute()
        return int(a) + int(b) + int(c)

    async def dead_count(self) -> int:
        return int(await self.redis.xlen(DEAD))


def job_dict(job: QueuedJob) -> dict[str, object]:
    """A plain dict of ``job`` (for JSON output)."""
    return asdict(job)
