"""A job's variants end up under the keys that fit its image when the manager records them
(:meth:`nodes.manager.dispatch.Dispatcher._record`, then :meth:`nodes.manager.library.Library.after_processing`),
on SQLite and a real redis-server, with storage copies and deletes recorded instead of sent.

The processing node writes under the keys the job named (``Job.private_salt``): a private image's under its
``p/<salt>/``. Only a result whose keys no longer fit is moved: its image changed visibility while the job
ran, or a processing node older than ``private_salt`` wrote a private image's variants under public keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select
from ulid import ULID

from nodes.manager.dispatch import Dispatcher
from nodes.manager.images import ImageViews
from nodes.manager.library import Library
from nodes.manager.objects import DEFERRED, PENDING, Objects
from nodes.manager.registry import NodeRecord
from pixelfox.db.models import Image, ObjectLocation, Upload, Variant
from pixelfox.db.outbox import OutboxEntry
from pixelfox.queue import QueuedJob
from pixelfox.storage.keys import original_key, private_key, variant_key
from pixelfox.v1 import common_pb2, manager_pb2
from tests.dbkit import open_db
from tests.ops.registrykit import FakeRegistry

SHA = "5a" * 32
SALT, NEW_SALT = "0f" * 16, "e1" * 16
NAMES = ("thumb", "medium")


class RecordingObjects(Objects):
    """Objects whose storage copies and deletes are recorded instead of sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.copied: list[tuple[str, str]] = []
        self.deleted: list[tuple[str, str]] = []

    async def copy(self, s: Any, old: str, new: str, made: list[str] | None = None) -> list[str]:
        nodes = await self.locations(s, old)
        assert nodes, f"no location of {old}"
        self.copied.append((old, new))
        for node in nodes:
            await s.merge(ObjectLocation(key=new, node_id=node, size=10))
        return nodes

    async def _delete_one(self, rec: NodeRecord, key: str) -> bool:
        self.deleted.append((rec.node_id, key))
        return True


@dataclass
class Rig:
    dispatcher: Dispatcher
    library: Library
    objects: RecordingObjects


@pytest.fixture
async def rig(redis_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    redis = aioredis.from_url(redis_url)
    try:
        async with open_db(tmp_path / "after.db") as (_, sessions):
            await redis.delete(PENDING, DEFERRED)
            registry = FakeRegistry(redis)
            objects = RecordingObjects(sessions, registry, redis, "", replicas=2)  # type: ignore[arg-type]
            views = ImageViews(sessions, registry, "http://site.test")  # type: ignore[arg-type]
            library = Library(sessions, views, objects, redis)
            dispatcher = Dispatcher(sessions, registry, None, replicas=2, lease_s=60)  # type: ignore[arg-type]
            yield Rig(dispatcher, library, objects)
    finally:
        await redis.aclose()


def _keys(recipe: int, salt: str = "") -> list[str]:
    keys = [variant_key(SHA, recipe, name, "webp") for name in NAMES]
    return [private_key(k, salt) for k in keys] if salt else keys


async def _image(rig: Rig, *, visibility: str, salt: str, status: str, variants: list[str] | None = None) -> str:
    """A new image row (its outbox row too while ``processing``) with ``variants`` (recipe 4) on s1 and s2."""
    async with rig.library.sessions() as s:
        upload = Upload(id=str(ULID()), size=10, expires_at=datetime.now(UTC) + timedelta(minutes=15))
        s.add(upload)
        await s.flush()
        okey = private_key(original_key(SHA, "png"), salt) if salt else original_key(SHA, "png")
        img = Image(id=str(ULID()), slug=str(ULID())[-10:], upload_id=upload.id, sha256=SHA, bytes=10,
                    format="png", mime="image/png", width=8, height=8, original_key=okey, status=status,
                    visibility=visibility, private_salt=salt, recipe_version=4)
        s.add(img)
        variants = variants or []
        for key, name in zip(variants, NAMES[:len(variants)], strict=True):
            img.variants.append(Variant(recipe_version=4, name=name, format="webp", width=4, height=4, bytes=10,
                                        key=key))
        for key in [okey, *variants]:
            for node in ("s1", "s2"):
                await s.merge(ObjectLocation(key=key, node_id=node, size=10))
        if status == "processing":
            await s.flush()
            s.add(OutboxEntry(image_id=img.id))
        await s.commit()
        return img.id


def _result(keys: list[str]) -> manager_pb2.JobResult:
    return manager_pb2.JobResult(job_id="1-0", lease_id="l", width=8, height=8, storage_node_ids=["s1", "s2"],
                                 variants=[common_pb2.Variant(name=n, format="webp", width=4, height=4, bytes=10,
                                                              key=k, sha256="00" * 32)
                                           for n, k in zip(NAMES, keys, strict=True)])


async def _state(rig: Rig, image_id: str) -> tuple[str, list[str], bool]:
    """The image's status, its variant keys (in name order) and whether its outbox row is there."""
    async with rig.library.sessions() as s:
        img = await s.get(Image, image_id)
        assert img is not None
        await s.refresh(img, ["variants"])
        outbox = await s.scalar(select(OutboxEntry.image_id).where(OutboxEntry.image_id == image_id))
        return img.status, [v.key for v in sorted(img.variants, key=lambda v: NAMES.index(v.name))], bool(outbox)


async def test_a_private_images_job_that_wrote_its_private_keys_is_recorded_ready_and_moves_nothing(
        rig: Rig) -> None:
    image_id = await _image(rig, visibility="private", salt=SALT, status="processing")
    assert await rig.dispatcher._record(QueuedJob("1-0", image_id), _result(_keys(4, SALT))) == (True, [])
    assert await _state(rig, image_id) == ("ready", _keys(4, SALT), False)
    await rig.library.after_processing(image_id)
    assert rig.objects.copied == [] and rig.objects.deleted == []
    assert await _state(rig, image_id) == ("ready", _keys(4, SALT), False)


async def test_an_older_processing_nodes_public_keys_are_moved_while_the_image_stays_processing(rig: Rig) -> None:
    """A node that ignores ``private_salt`` writes public keys: as before the field, the image stays
    ``processing`` (its outbox row kept) until after_processing moved them, then the public keys go."""
    image_id = await _image(rig, visibility="private", salt=SALT, status="processing")
    await rig.dispatcher._record(QueuedJob("1-0", image_id), _result(_keys(4)))
    assert await _state(rig, image_id) == ("processing", _keys(4), True)
    await rig.library.after_processing(image_id)
    assert rig.objects.copied == list(zip(_keys(4), _keys(4, SALT), strict=True))
    assert await _state(rig, image_id) == ("ready", _keys(4, SALT), False)
    assert sorted(rig.objects.deleted) == sorted((n, k) for k in _keys(4) for n in ("s1", "s2"))


@pytest.mark.parametrize(("visibility", "salt"), [("public", ""), ("private", NEW_SALT)], ids=["public", "new-salt"])
async def test_a_reprocess_whose_image_changed_visibility_meanwhile_is_moved_to_the_keys_that_fit(
        rig: Rig, visibility: str, salt: str) -> None:
    """Dispatched while the image was private under SALT; made public (or private again, NEW_SALT) before the
    result: the new recipe's rows end under the keys that fit, the old recipe's keys are handed back as
    replaced, and the job's keys under SALT are deleted."""
    image_id = await _image(rig, visibility=visibility, salt=salt, status="ready", variants=_keys(4, salt))
    recorded, replaced = await rig.dispatcher._record(QueuedJob("1-0", image_id, kind="reprocess_image", recipe=5),
                                                      _result(_keys(5, SALT)))
    assert recorded and replaced == _keys(4, salt)
    assert (await _state(rig, image_id))[0] == "ready"  # served all along
    await rig.library.after_processing(image_id)
    assert rig.objects.copied == list(zip(_keys(5, SALT), _keys(5, salt), strict=True))
    assert await _state(rig, image_id) == ("ready", _keys(5, salt), False)
    assert sorted(rig.objects.deleted) == sorted((n, k) for k in _keys(5, SALT) for n in ("s1", "s2"))
