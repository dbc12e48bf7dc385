"""The node registry: who is in the cluster, their load, and when they last spoke.

Live state is a Redis hash ``pixelfox:{registry}:nodes`` (node id -> JSON), shared by every
manager, so a manager restart forgets nothing. A node is *healthy* when its last heartbeat
is younger than ``node_timeout_s``, its status is ACTIVE, it is not in maintenance and that
heartbeat said it is ready (its own dependency check passes: a storage node's pool answers);
unhealthy nodes get no uploads, jobs or objects.

A node that stops cleanly says so in its last heartbeat (STOPPED, :meth:`Registry.leave`): it is shown
``stopped``, is no failure for ``pixelfox status``, and :meth:`Registry.sweep` drops it. A node that
died for good is dropped by an admin (:meth:`Registry.forget`, ``pixelfox nodes forget``), or by the
sweep once it has been silent for an hour; both put its id in :data:`GONE_KEY` in the same step, so its
pending deletes and object locations are cleared (:mod:`nodes.manager.gone`).

A node id belongs to one live node: a Register for an id whose node is live (not stopped, heartbeat
younger than ``node_timeout_s``) at another address, or at the same address on another host, is
refused (:meth:`Registry.register`); a node starting again where it ran, or taking over the id of a
dead or stopped node, is taken. Before it refuses a node at another address, the registry asks whether
the holder still answers at its own (``alive``: :func:`nodes.manager.liveness.answers`, a gRPC health
check for the holder's instance, 1 s): a node that crashed and came back at a new address takes its id
over at once, not after ``node_timeout_s``. Each node process sends its own ``instance`` (a random id
drawn at start) with Register and every Heartbeat; a heartbeat from another instance than the record's
is refused (:meth:`Registry.heartbeat`), so a node that was frozen while a successor took its id over
registers again when it resumes, and is refused while the successor is live.

A node's heartbeat interval must be at most a third of ``node_timeout_s``
(:data:`HEARTBEATS_PER_TIMEOUT`, checked when it registers: :meth:`Registry.check_interval`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import redis.asyncio as aioredis

from pixelfox import errors, readmodel, redisx
from pixelfox.v1 import common_pb2

logger = logging.getLogger(__name__)

#: heartbeats a node must send within ``node_timeout_s``. Heartbeats are an interval plus an RPC
#: apart, so at one per timeout a node is declared dead between two of them; at three, one lost
#: heartbeat (a failed call, a pause, a manager failover) still leaves an interval of slack.
HEARTBEATS_PER_TIMEOUT = 3

KEY = "pixelfox:{registry}:nodes"
MAINTENANCE_KEY = "pixelfox:{registry}:maintenance"  # set of node ids an admin put in maintenance
#: set of node ids dropped for good (an admin's forget, or silent past ``forget_after_s``) whose pending
#: deletes and object locations are still to clear (:mod:`nodes.manager.gone`)
GONE_KEY = "pixelfox:{registry}:gone"
STOPPED = common_pb2.NODE_STATUS_STOPPED

#: KEYS[1] the registry hash; ARGV: node id, its new record (JSON), the record's status, STOPPED. Writes
#: only over a record that exists (a node forgotten meanwhile must register again) of the new record's
#: instance (another process took the id over since the record was read), and never turns a STOPPED
#: record back (a heartbeat sent before the node's last word, answered after it): returns 0 then.
_UPDATE = redisx.script("""
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local old = cjson.decode(cur)
if (old['instance'] or '') ~= (cjson.decode(ARGV[2])['instance'] or '') then return 0 end
if ARGV[3] ~= ARGV[4] and tostring(old['status']) == ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
""")

#: KEYS[1] the registry hash; ARGV: node id, its new record (JSON), now (unix seconds), node_timeout_s,
#: STOPPED, the stored record found gone ("" for none). Writes the record unless the stored one is a live
#: node (not STOPPED, heartbeat younger than node_timeout_s) elsewhere: at another address, or at the same
#: address on another host (when both say theirs); over the record found gone, if still stored as it was
#: read, in any case. Returns "" when written, else the stored record (:meth:`Registry.register`).
_CLAIM = redisx.script("""
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[6] then
  local old, new = cjson.decode(cur), cjson.decode(ARGV[2])
  local live = tostring(old['status']) ~= ARGV[5]
    and tonumber(ARGV[3]) - tonumber(old['last_heartbeat'] or 0) < tonumber(ARGV[4])
  local function addr(r)
    if (r['grpc_address'] or '') ~= '' then return r['grpc_address'] end
    return r['http_url'] or ''
  end
  local oh, nh = old['host'] or '', new['host'] or ''
  if live and (addr(old) ~= addr(new) or (oh ~= '' and nh ~= '' and oh ~= nh)) then return cur end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return ''
""")

#: KEYS[1] the registry hash, KEYS[2] the maintenance set, KEYS[3] the gone set; ARGV: node id, its record
#: (JSON) as the sweep (or an admin's forget) read it, "" for none, "1" for a drop for good (it leaves
#: maintenance and joins the gone set, in the same step). Deletes only while the stored record is still
#: that one: a node that heartbeated (or registered again) since it was read keeps its record. Returns 1
#: if deleted.
_DROP = redisx.script("""
if (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[3] == '1' then
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('SADD', KEYS[3], ARGV[1])
end
return 1
""")


def choose_targets(nodes: list[NodeRecord], replicas: int, size: int = 0) -> list[NodeRecord]:
    """The storage nodes a new object goes to: of ``nodes`` (healthy), those of the first tier (pool
    ``hot`` or no pool; any when none is), with room for ``size`` bytes by their last heartbeat (0: not
    known), most free space first, at most ``replicas`` (at least 1).

    Raises NoNodeAvailable without a node, StorageFull (RESOURCE_EXHAUSTED) when none has room: an
    original was sent to a full node, refused there ("do not fit"), retried, and its upload reported a
    stall after 60 s instead of the reason."""
    if not nodes:
        raise errors.NoNodeAvailable("no healthy storage node")
    # new objects go to the first tier: nodes in pool "hot" or without a pool (issue 6, nodes/manager/tiers.py)
    first = [r for r in nodes if all(c == "pool:hot" or not c.startswith("pool:") for c in r.capabilities)]
    nodes = sorted(first or nodes, key=lambda r: (-r.free_bytes, r.node_id))
    if size > 0:
        roomy = [r for r in nodes if r.free_bytes >= size]
        if not roomy:
            raise errors.StorageFull(f"no storage node has room for {size} bytes (the most free: {nodes[0].free_bytes} "
                                     f"bytes, on {nodes[0].node_id}): free space, or add a storage node")
        nodes = roomy
    return nodes[: max(1, replicas)]


def check_heartbeat(interval_s: float, node_timeout_s: float) -> None:
    """Refuse a heartbeat interval over ``node_timeout_s / HEARTBEATS_PER_TIMEOUT`` (both in seconds):
    such a node would flap between healthy and dead. Raises BadRequest with one line naming both
    settings and their values."""
    limit = node_timeout_s / HEARTBEATS_PER_TIMEOUT
    if interval_s > limit * (1 + 1e-9):  # 1e-9: 0.1 s against 0.3 s is no flap
        raise errors.BadRequest(
            f"PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S ({interval_s:g}) must be well under the manager's "
            f"PIXELFOX_NODE_TIMEOUT_S ({node_timeout_s:g}): a node would be declared dead between two "
            f"heartbeats; use at most a third of it ({limit:.3g})")


@dataclass
class NodeRecord:
    node_id: str
    role: int
    grpc_address: str
    http_url: str = ""
    metrics_url: str = ""
    capacity: int = 1
    in_use: int = 0
    free_bytes: int = 0
    status: int = common_pb2.NODE_STATUS_ACTIVE
    capabilities: list[str] = field(default_factory=list)
    version: str = ""
    last_heartbeat: float = 0.0  # unix seconds
    maintenance: bool = False  # read from MAINTENANCE_KEY, survives re-registration
    ready: bool = True  # the last heartbeat's readiness (HeartbeatRequest.not_ready inverted)
    host: str = ""  # the node's host name (RegisterRequest.host; "" from older nodes)
    instance: str = ""  # the node process' instance id (RegisterRequest.instance; "" from older nodes)

    @classmethod
    def from_json(cls, raw: str | bytes) -> NodeRecord:
        """Decode a stored record; fields this version does not know (a newer manager wrote them) are dropped."""
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def address(self) -> str:
        """Where the node is reached: its gRPC address, or a web node's http_url."""
        return self.grpc_address or self.http_url

    @property
    def load(self) -> float:
        return self.in_use / self.capacity if self.capacity > 0 else 1.0


@dataclass(frozen=True)
class Stale:
    """A record :meth:`Registry.stale` would drop: ``raw`` is the stored JSON it was read as (the drop
    compares it), ``silent`` true for a node silent past ``forget_after_s`` (it leaves maintenance too),
    false for one that stopped cleanly; ``age_s`` is the seconds since its last heartbeat."""

    rec: NodeRecord
    raw: bytes
    silent: bool
    age_s: float


class Registry:
    """The node registry in Redis (see module doc). ``alive`` answers whether a record's node still runs at
    its address (:func:`nodes.manager.liveness.answers`); None (tools, tests) = never asked: a live record
    is kept for ``node_timeout_s``."""

    def __init__(self, redis: aioredis.Redis, node_timeout_s: float,
                 alive: Callable[[NodeRecord], Awaitable[bool]] | None = None) -> None:
        self.redis = redis
        self.node_timeout_s = node_timeout_s
        self.alive = alive
        self.in_maintenance: set[str] = set()  # last seen MAINTENANCE_KEY (the dispatcher reads it)

    def check_interval(self, node_id: str, heartbeat_interval_s: float) -> None:
        """Refuse node ``node_id`` if its heartbeat interval is too long for ``node_timeout_s``
        (:func:`check_heartbeat`; 0 = not told, an older node). Raises BadRequest, also logged here."""
        try:
            check_heartbeat(heartbeat_interval_s, self.node_timeout_s)
        except errors.BadRequest as exc:
            logger.warning("refused node %s: %s", node_id, exc)
            raise

    async def upsert(self, rec: NodeRecord) -> None:
        rec.last_heartbeat = time.time()
        await self.redis.hset(KEY, rec.node_id, json.dumps(asdict(rec)))

    async def register(self, rec: NodeRecord) -> None:
        """Store ``rec`` (a node that registers) with a new heartbeat time, atomically (:data:`_CLAIM`).

        Raises AlreadyExists, also logged here, while another live node (not stopped, heartbeat younger
        than ``node_timeout_s``) holds ``rec.node_id`` elsewhere: at another address, or at the same one
        on another host. A node starting again at its own address, or taking the id of a dead or stopped
        node, is stored; so is one whose id's holder, at another gRPC address, no longer answers there
        (:attr:`alive`, asked once; it takes the id over only if the holder's record did not change
        meanwhile)."""
        rec.last_heartbeat = time.time()
        args = [rec.node_id, json.dumps(asdict(rec)), repr(rec.last_heartbeat), repr(self.node_timeout_s), str(STOPPED)]
        held = await _CLAIM(keys=[KEY], args=[*args, ""], client=self.redis)
        if not held:
            return
        other = NodeRecord.from_json(held)
        if self.alive is not None and other.grpc_address and other.address != rec.address \
                and not await self.alive(other):
            # the same address is not asked: from here it may be the new node's, not the holder's (another host)
            held = await _CLAIM(keys=[KEY], args=[*args, held], client=self.redis)
            if not held:
                logger.info("node %s at %s (host %s) took the id over from the node at %s, which no longer answers",
                            rec.node_id, rec.address, rec.host or "?", other.address)
                return
            other = NodeRecord.from_json(held)  # the holder spoke meanwhile, or another node took the id
        where = other.address + (f" on host {other.host}" if other.address == rec.address else "")
        exc = errors.AlreadyExists(f"node id {rec.node_id} is already in use by a live node at {where}; "
                                   f"give this node its own PIXELFOX_NODE_ID")
        logger.warning("refused node %s at %s (host %s): %s", rec.node_id, rec.address, rec.host or "?", exc)
        raise exc

    async def _update(self, rec: NodeRecord) -> bool:
        """Write ``rec`` over the stored record with a new heartbeat time (see :data:`_UPDATE`); False if
        there is none, or it says STOPPED and ``rec`` does not."""
        rec.last_heartbeat = time.time()
        args = [rec.node_id, json.dumps(asdict(rec)), str(rec.status), str(STOPPED)]
        return bool(await _UPDATE(keys=[KEY], args=args, client=self.redis))

    async def heartbeat(
        self, node_id: str, in_use: int, capacity: int, free_bytes: int, status: int, ready: bool = True,
        instance: str = "",
    ) -> bool:
        """Update a node's load and readiness; False if the node is unknown, said it stopped, or the record
        is another process' than ``instance`` (a successor took the id over while this one was frozen): it
        must register again. ``status`` STOPPED is the node's last word (:meth:`leave`). ``instance`` ""
        (an older node), or a record without one, is not compared."""
        rec = await self.get(node_id)
        if rec is None:
            return False
        if instance and rec.instance and instance != rec.instance:
            logger.info("refused a heartbeat of node %s from instance %s: the id is instance %s's, at %s",
                        node_id, instance, rec.instance, rec.address)
            return False
        if status == STOPPED:  # the last word carries no load: as :meth:`leave`
            return await self.leave(node_id, rec)
        rec.in_use, rec.capacity, rec.free_bytes = in_use, capacity or rec.capacity, free_bytes
        rec.ready = ready
        if status:
            rec.status = status
        return await self._update(rec)

    async def leave(self, node_id: str, rec: NodeRecord | None = None) -> bool:
        """Mark ``node_id`` STOPPED: it drained and stopped cleanly (shown ``stopped``, no failure, dropped by
        :meth:`sweep`; its maintenance mark is kept for its next start). Its work in flight reads 0; a storage
        node's ``in_use``, the bytes its store holds, stays as last reported (its files are still there: it
        read 0 B). ``rec``: its record, when just read. False if the registry does not know it."""
        rec = rec or await self.get(node_id)
        if rec is None:
            return False
        rec.status = STOPPED
        if rec.role != common_pb2.NODE_ROLE_STORAGE:
            rec.in_use = 0
        return await self._update(rec)

    async def get(self, node_id: str) -> NodeRecord | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(KEY, node_id)
            pipe.sismember(MAINTENANCE_KEY, node_id)
            raw, maint = await pipe.execute()
        if not raw:
            return None
        rec = NodeRecord.from_json(raw)
        rec.maintenance = bool(maint)
        return rec

    async def _read(self) -> list[tuple[NodeRecord, bytes]]:
        """Every record with its stored JSON (one round trip, maintenance marks filled in), by role and id."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(KEY)
            pipe.smembers(MAINTENANCE_KEY)
            raw, maint = await pipe.execute()
        self.in_maintenance = {m.decode() if isinstance(m, bytes) else m for m in maint}
        out = [(NodeRecord.from_json(v), v if isinstance(v, bytes) else v.encode()) for v in raw.values()]
        for r, _ in out:
            r.maintenance = r.node_id in self.in_maintenance
        return sorted(out, key=lambda p: (p[0].role, p[0].node_id))

    async def all(self, role: int = 0) -> list[NodeRecord]:
        return [r for r, _ in await self._read() if not role or r.role == role]

    async def set_maintenance(self, node_id: str, on: bool) -> NodeRecord:
        """Put ``node_id`` into maintenance (no new uploads, jobs, placements) or take it out.

        Raises NotFound for a node the registry does not know.
        """
        if await self.get(node_id) is None:
            raise await self._unknown(node_id)
        if on:
            await self.redis.sadd(MAINTENANCE_KEY, node_id)
        else:
            await self.redis.srem(MAINTENANCE_KEY, node_id)
        rec = next(r for r in await self.all() if r.node_id == node_id)
        return rec

    async def _unknown(self, node_id: str) -> errors.NotFound:
        """The NotFound for a node id neither the registry nor the maintenance set holds, with
        :meth:`did_you_mean`'s hint."""
        return errors.NotFound(f"no node {node_id!r} in the registry{await self.did_you_mean(node_id)}")

    async def did_you_mean(self, node_id: str, role: int = 0) -> str:
        """``"; did you mean 'ID'?"`` naming the known node id (of ``role``, 0 for any) ``node_id`` most likely
        meant, or "" when none is close (ids are case-sensitive: ``Storage-1`` is not ``storage-1``): the
        same id in another case first (the hint then says ids are case-sensitive), else the closest by
        :func:`difflib.get_close_matches` (ratio at least 0.6, its default)."""
        known = {r.node_id for r in await self.all(role)} | (set() if role else self.in_maintenance)
        same = [k for k in sorted(known) if k.casefold() == node_id.casefold()]
        near = same or difflib.get_close_matches(node_id, sorted(known), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        if same:
            hint += " (node ids are case-sensitive)"
        return hint

    async def forget(self, node_id: str) -> NodeRecord | None:
        """Drop ``node_id`` from the registry and from maintenance (an admin's word: it died for good);
        returns its record (None if it was only in maintenance).

        Raises NotFound for a node neither holds, Conflict while its heartbeats are fresh (a running node
        would register again at its next heartbeat; maintenance is what takes it out of service), and
        when it heartbeats or registers again between the read and the delete (:meth:`drop_forgotten`)."""
        rec, raw = await self.forgettable(node_id)
        return await self.drop_forgotten(node_id, rec, raw)

    async def forgettable(self, node_id: str) -> tuple[NodeRecord | None, bytes]:
        """The first step of :meth:`forget`: ``node_id``'s record and its stored JSON as read now (None and
        b"" when it is only in maintenance); NotFound and Conflict as :meth:`forget` says."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(KEY, node_id)
            pipe.sismember(MAINTENANCE_KEY, node_id)
            raw, maint = await pipe.execute()
        if not raw and not maint:
            raise await self._unknown(node_id)
        if not raw:
            return None, b""
        rec = NodeRecord.from_json(raw)
        rec.maintenance = bool(maint)
        if self.status(rec) not in (common_pb2.NODE_STATUS_INACTIVE, STOPPED):
            age = max(0.0, time.time() - rec.last_heartbeat)
            instead = ("it is in maintenance already (no new work); stop its process, then forget it"
                       if rec.maintenance else f"stop it first, or take it out of service with "
                       f"`pixelfox nodes maintenance {node_id}`")
            raise errors.Conflict(f"node {node_id!r} still heartbeats (last {age:.1f} s ago): {instead}")
        return rec, raw if isinstance(raw, bytes) else raw.encode()

    async def drop_forgotten(self, node_id: str, rec: NodeRecord | None, raw: bytes) -> NodeRecord | None:
        """The second step of :meth:`forget`: delete ``node_id``'s record and maintenance mark if the record
        is still ``raw`` (:meth:`forgettable`'s read; b"": still none), in one Lua script (:data:`_DROP`, the
        sweep's compare); returns ``rec``. Conflict when the node heartbeated or registered again meanwhile:
        it keeps its record (and its maintenance mark)."""
        if not await _DROP(keys=[KEY, MAINTENANCE_KEY, GONE_KEY], args=[node_id, raw, "1"], client=self.redis):
            logger.info("kept node %s: it spoke while an admin forgot it", node_id)
            raise errors.Conflict(f"node {node_id!r} heartbeated or registered again just now: it runs; stop it "
                                  f"first, or take it out of service with `pixelfox nodes maintenance {node_id}`")
        logger.info("forgot node %s (admin)", node_id)
        return rec

    async def sweep(self, forget_after_s: float, keep_stopped_storage_s: float) -> list[str]:
        """Drop the records of nodes that stopped cleanly (storage nodes once stopped ``keep_stopped_storage_s``
        seconds: until then the repair counts their copies, see ``lost_after_s``) and of nodes silent for
        ``forget_after_s`` seconds (these leave maintenance too); returns the ids dropped. A node that
        heartbeats or registers again while the sweep runs keeps its record (:meth:`drop`)."""
        gone: list[str] = []
        for st in await self.stale(forget_after_s, keep_stopped_storage_s):
            if await self.drop(st):
                gone.append(st.rec.node_id)
        return gone

    async def stale(self, forget_after_s: float, keep_stopped_storage_s: float) -> list[Stale]:
        """The records :meth:`sweep` drops (same arguments, seconds), as read now, by role and id."""
        now = time.time()
        found: list[Stale] = []
        for rec, raw in await self._read():
            age = now - rec.last_heartbeat
            keep = keep_stopped_storage_s if rec.role == common_pb2.NODE_ROLE_STORAGE else 0.0
            if age >= forget_after_s or (rec.status == STOPPED and age >= keep):
                found.append(Stale(rec, raw, age >= forget_after_s, age))
        return found

    async def drop(self, st: Stale) -> bool:
        """Delete ``st``'s record (and, for a silent node, its maintenance mark) if it is still the one
        :meth:`stale` read, in one Lua script (:data:`_DROP`); False when the node heartbeated, registered
        again or was dropped meanwhile: a compare, so a node that just spoke never loses its record."""
        node_id = st.rec.node_id
        args = [node_id, st.raw, "1" if st.silent else "0"]
        if not await _DROP(keys=[KEY, MAINTENANCE_KEY, GONE_KEY], args=args, client=self.redis):
            logger.info("kept node %s: it spoke while the registry sweep looked at it", node_id)
            return False
        if st.silent:
            logger.info("forgot node %s (silent for %.0f s)", node_id, st.age_s)
        else:
            logger.info("forgot node %s (stopped %.0f s ago)", node_id, st.age_s)
        return True

    def healthy(self, rec: NodeRecord) -> bool:
        """Takes new work: heartbeat younger than ``node_timeout_s``, ACTIVE, not in maintenance, and ready
        (a storage node whose pool is down reports not ready and gets no originals, variants or copies)."""
        fresh = time.time() - rec.last_heartbeat < self.node_timeout_s
        return fresh and rec.status == common_pb2.NODE_STATUS_ACTIVE and not rec.maintenance and rec.ready

    def free_bytes(self, recs: list[NodeRecord]) -> int:
        """Free bytes of the healthy storage nodes among ``recs`` (:meth:`healthy`), each filesystem counted
        once: nodes whose pools share a disk (the same ``fs:HOST:DEVICE`` capability; S3 pools on one prefix
        of one bucket: ``fs:s3:ENDPOINT/BUCKET/PREFIX``) report its free space each; the largest figure
        counts (they differ only by when each node read it). A node without that capability (an older
        node) counts on its own."""
        free: dict[str, int] = {}
        for r in recs:
            if r.role == common_pb2.NODE_ROLE_STORAGE and self.healthy(r):
                fs = next((c for c in r.capabilities if c.startswith("fs:")), f"node:{r.node_id}")
                free[fs] = max(free.get(fs, 0), r.free_bytes)
        return sum(free.values())

    def placement(self, recs: list[NodeRecord]) -> bytes:
        """The placement token of ``recs`` (any roles; storage nodes count): 16 hex digits of a SHA-256
        over each storage node's id, health and http address. Image URLs depend on nothing else."""
        parts = sorted(f"{r.node_id} {int(self.healthy(r))} {r.http_url}" for r in recs
                       if r.role == common_pb2.NODE_ROLE_STORAGE)
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16].encode()

    async def publish_placement(self, recs: list[NodeRecord]) -> None:
        """Write the placement token of ``recs`` (:meth:`placement`) for the read model
        (:mod:`pixelfox.readmodel`): cached images of another placement are rebuilt on their next
        read. Called every second by each manager (a timeout is no event: health is a function of
        time); two managers write the same token, and writing it each time restores a lost key."""
        await readmodel.set_placement(self.redis, self.placement(recs))

    async def healthy_nodes(self, role: int) -> list[NodeRecord]:
        return [r for r in await self.all(role) if self.healthy(r)]

    async def place(self, replicas: int, size: int = 0) -> list[NodeRecord]:
        """Storage nodes for a new object of ``size`` bytes (0: not known): :func:`choose_targets` of the
        healthy ones. Raises NoNodeAvailable, StorageFull."""
        return choose_targets(await self.healthy_nodes(common_pb2.NODE_ROLE_STORAGE), replicas, size)

    def status(self, rec: NodeRecord) -> int:
        """STOPPED when the node said so, else INACTIVE when heartbeats stopped, else MAINTENANCE if set by an
        admin, else what the node reports."""
        if rec.status == STOPPED:
            return STOPPED
        if time.time() - rec.last_heartbeat >= self.node_timeout_s:
            return common_pb2.NODE_STATUS_INACTIVE
        if rec.maintenance:
            return common_pb2.NODE_STATUS_MAINTENANCE
        return rec.status

    def to_proto(self, rec: NodeRecord) -> common_pb2.Node:
        return common_pb2.Node(
            node_id=rec.node_id,
            role=rec.role,  # type: ignore[arg-type]
            grpc_address=rec.grpc_address,
            http_url=rec.http_url,
            metrics_url=rec.metrics_url,
            status=self.status(rec),  # type: ignore[arg-type]
            healthy=self.healthy(rec),
            load=rec.load,
            capacity=rec.capacity,
            in_use=rec.in_use,
            free_bytes=rec.free_bytes,
            last_heartbeat_age_s=max(0.0, time.time() - rec.last_heartbeat),
            capabilities=rec.capabilities,
            version=rec.version,
            not_ready=not rec.ready,
        )
