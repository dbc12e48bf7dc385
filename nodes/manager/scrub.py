"""Scrub: check that the storage nodes still hold the copies the database records (``pixelfox scrub``).

What PixelFox knows of stored copies comes from its ``object_locations`` rows; a file removed from a storage
node's folder by hand (``rm``, a disk restored from an old backup) is otherwise never noticed: the image says
ready, its URLs answer 404 and nothing repairs it. :func:`scrub` ``Stat``\\ s every recorded key on each
storage node (:func:`~nodes.manager.lostfind.stat_on`: at most :data:`CONCURRENCY` calls per node at once,
each within :data:`~nodes.manager.lostfind.STAT_TIMEOUT_S`). A key the node does not have is *missing*; a node
that fails or times out is *unreachable* and none of its keys is judged (nor is a node down or stopped).

With ``fix``, the missing copies of each key are settled in one transaction: their location rows are deleted
and the key gets a replica debt naming the nodes (:func:`~nodes.manager.repair.add_debt`, as
:mod:`nodes.manager.gone` does for a forgotten node), so the repair never sees half of it. The repair then copies
the key back from another replica; a key with no copy left is *lost* (``have`` 0: the image shows as lost, and
its owner's upload of the same file restores it). A copy whose row went meanwhile, or a key no image names any
more (deleted while the scrub ran), is left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import func, select

from nodes.manager.lostfind import stat_on
from nodes.manager.objects import Objects
from nodes.manager.registry import STOPPED, NodeRecord
from nodes.manager.repair import add_debt
from pixelfox import errors
from pixelfox.db.models import Image, ObjectLocation, Variant
from pixelfox.v1 import common_pb2

logger = logging.getLogger(__name__)

#: Stat calls in flight per storage node
CONCURRENCY = 8
#: missing copies listed in one answer (all are counted, and fixed with ``fix``)
MAX_LISTED = 1000


@dataclass
class NodeScrub:
    """One storage node's figures: recorded copies ``checked`` (answered), ``missing`` among them, and
    ``unreachable`` (not judged: the node failed or is down, ``error`` says why)."""

    node_id: str
    checked: int = 0
    missing: int = 0
    unreachable: int = 0
    error: str = ""


@dataclass
class MissingCopy:
    """A recorded copy of ``key`` that storage node ``node_id`` does not have; ``slug`` of the image naming the
    key ("" for none); ``fixed`` once its row went and its key got a replica debt."""

    key: str
    node_id: str
    slug: str = ""
    fixed: bool = False


@dataclass
class ScrubReport:
    """What :func:`scrub` found: per node figures, the missing copies (every one) and how many were fixed."""

    nodes: list[NodeScrub] = field(default_factory=list)
    missing: list[MissingCopy] = field(default_factory=list)
    fixed: int = 0


def missing_reason(node_ids: list[str]) -> str:
    """The replica debt's error for a key whose copies on ``node_ids`` were found missing."""
    if len(node_ids) == 1:
        return f"the copy on storage node {node_ids[0]} was missing when scrubbed"
    return f"the copies on storage nodes {', '.join(node_ids[:-1])} and {node_ids[-1]} were missing when scrubbed"


async def scrub(objects: Objects, node_id: str = "", *, fix: bool = False, limit: int = 0) -> ScrubReport:
    """Scrub storage node ``node_id`` ("" for every registered storage node; see module doc), at most ``limit``
    recorded keys per node in key order (0: all). Uses ``objects``' sessions, registry, secret and factor.

    Raises NotFound when ``node_id`` is no registered storage node, BadRequest for a negative ``limit``, and what
    the database raises; a storage node's errors only make it unreachable."""
    if limit < 0:
        raise errors.BadRequest("limit must be 0 (every key) or more")
    recs = await objects.registry.all(common_pb2.NODE_ROLE_STORAGE)
    if node_id:
        recs = [r for r in recs if r.node_id == node_id]
        if not recs:
            if await objects.registry.get(node_id) is not None:  # registered, in another role
                raise errors.NotFound(f"node {node_id} is not a storage node: scrub checks storage nodes (see "
                                      "`pixelfox status` for their ids)")
            hint = await objects.registry.did_you_mean(node_id, common_pb2.NODE_ROLE_STORAGE)
            raise errors.NotFound(f"no storage node {node_id} is registered (see `pixelfox status` for their "
                                  f"ids){hint}")
    report = ScrubReport()
    for rec in sorted(recs, key=lambda r: r.node_id):
        node, missing = await _scrub_node(objects, rec, limit)
        report.nodes.append(node)
        report.missing += missing
    if report.missing:
        await _name_images(objects, report.missing)
    if fix:
        by_key: dict[str, list[MissingCopy]] = {}
        for copy in report.missing:
            by_key.setdefault(copy.key, []).append(copy)
        for key, copies in by_key.items():
            report.fixed += await _settle(objects, key, copies)
    for copy in report.missing:
        logger.warning("scrub: %s is missing on storage node %s (image %s)%s", copy.key, copy.node_id,
                       copy.slug or "none", ": location removed, replica debt recorded" if copy.fixed else "")
    return report


async def _scrub_node(objects: Objects, rec: NodeRecord, limit: int) -> tuple[NodeScrub, list[MissingCopy]]:
    """Stat ``rec``'s recorded keys (at most ``limit``, 0: all); its figures and its missing copies."""
    q = select(ObjectLocation.key).where(ObjectLocation.node_id == rec.node_id).order_by(ObjectLocation.key)
    async with objects.sessions() as s:
        keys = list((await s.execute(q.limit(limit) if limit else q)).scalars())
    node = NodeScrub(rec.node_id)
    status = objects.registry.status(rec)
    if status in (common_pb2.NODE_STATUS_INACTIVE, STOPPED):
        node.unreachable = len(keys)
        node.error = "stopped" if status == STOPPED else "down (no heartbeat)"
        return node, []
    answers, exc = await stat_on(rec, objects.secret, keys, concurrency=CONCURRENCY)
    if exc is not None:  # a node that fails part-way is not judged at all
        why = str(exc) or ("no answer within the time limit" if isinstance(exc, TimeoutError) else "")
        node.unreachable, node.error = len(keys), f"{type(exc).__name__}: {why}"[:300]
        logger.warning("scrub: storage node %s did not answer: %s", rec.node_id, node.error)
        return node, []
    missing = [MissingCopy(k, rec.node_id) for k in keys if answers.get(k) is None]
    node.checked, node.missing = len(keys), len(missing)
    return node, missing


async def _name_images(objects: Objects, missing: list[MissingCopy]) -> None:
    """Fill each missing copy's ``slug`` with that of the image whose original or variant its key is."""
    keys = list({m.key for m in missing})
    slugs: dict[str, str] = {}
    async with objects.sessions() as s:
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            for key, slug in (await s.execute(select(Variant.key, Image.slug).join(Image, Image.id == Variant.image_id)
                                              .where(Variant.key.in_(chunk)))).all():
                slugs[key] = slug
            for key, slug in (await s.execute(select(Image.original_key, Image.slug)
                                              .where(Image.original_key.in_(chunk)))).all():
                slugs[key] = slug
    for m in missing:
        m.slug = slugs.get(m.key, "")


async def _settle(objects: Objects, key: str, copies: list[MissingCopy]) -> int:
    """In one transaction on the primary: delete the location rows of ``copies`` (all of ``key``) and record a
    replica debt for ``key`` (``have``: the copies still recorded), so the repair never sees only part of it.
    A copy whose row is gone already is left alone; nothing changes when no image names the key any more
    (deleted meanwhile: its copies go with it, no debt). Marks the copies fixed; returns how many were."""
    async with objects.sessions(info={"primary": True}) as s:
        if not await objects.referenced(s, key):
            return 0
        settled: list[MissingCopy] = []
        for copy in copies:
            row = await s.get(ObjectLocation, (key, copy.node_id))
            if row is not None:
                await s.delete(row)
                settled.append(copy)
        if not settled:
            return 0
        await s.flush()
        have = int(await s.scalar(select(func.count()).select_from(ObjectLocation)
                                  .where(ObjectLocation.key == key)) or 0)
        await add_debt(s, key, have, objects.replicas, missing_reason(sorted(c.node_id for c in settled)))
        await s.commit()
    for copy in settled:
        copy.fixed = True
    return len(settled)
