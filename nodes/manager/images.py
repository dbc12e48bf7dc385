"""Reading and writing image rows, and turning them into the public ``Image`` message."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.cursors import before_id
from nodes.manager.registry import NodeRecord, Registry
from pixelfox import errors
from pixelfox.db.models import Image, ObjectLocation, Variant
from pixelfox.storage.keys import needs_signature
from pixelfox.v1 import common_pb2

STATUS = {
    "processing": common_pb2.IMAGE_STATUS_PROCESSING,
    "ready": common_pb2.IMAGE_STATUS_READY,
    "failed": common_pb2.IMAGE_STATUS_FAILED,
}
#: preferred variant for ``thumbnail_url`` (WebP is shown by every current browser)
THUMB_ORDER = [("thumb", "webp"), ("thumb", "jpeg"), ("medium", "jpeg"), ("thumb", "avif")]


def new_slug() -> str:
    """16 url-safe characters, about 96 random bits (unguessable ids, RELIABILITY.md C6), never
    starting with "-": a command line reads such an id as an option (``pixelfox reprocess -fIC...``
    failed that way; ids made before still work after ``--``). Rejecting 1 draw in 64 costs 0.02 bits."""
    while (slug := secrets.token_urlsafe(12)).startswith("-"):
        pass
    return slug


def iso(dt: datetime | None) -> str:
    if dt is None:
        return ""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Nodes:
    """What image URLs are built from (:meth:`ImageViews.nodes`): the storage nodes by id, and the
    site's base URL (the configured one, else the first healthy web node's; "" for none)."""

    storage: dict[str, NodeRecord]
    site: str


class ImageViews:
    """Builds ``Image`` messages with URLs on the site and storage origins."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], registry: Registry, site_url: str) -> None:
        self.sessions = sessions
        self.registry = registry
        self.site_url = site_url.rstrip("/")
        #: signs private keys' URLs: ``(key, exp) -> query``; set by the service (issue 5)
        self.url_signer: Callable[[str, int], str] | None = None
        self.url_expiry: Callable[[], int] = lambda: 0

    async def nodes(self) -> Nodes:
        """The registry as the URLs of ``Image`` messages need it, read once (one Redis round trip): pass it
        to :meth:`to_proto` from a write transaction, which then makes no Redis call."""
        recs = await self.registry.all()
        webs = [r for r in recs if r.role == common_pb2.NODE_ROLE_WEB and self.registry.healthy(r)]
        site = self.site_url or (webs[0].http_url.rstrip("/") if webs else "")
        return Nodes({r.node_id: r for r in recs if r.role == common_pb2.NODE_ROLE_STORAGE}, site)

    async def _site(self) -> str:
        return self.site_url or (await self.nodes()).site

    async def original_lost(self, s: AsyncSession, img: Image, nodes: Nodes) -> bool:
        """:func:`pixelfox.client.images.original_lost` of ``img`` read in ``s`` (ready, and no storage node of
        ``nodes`` serves its original), from one location query: no variant is read, no message built."""
        return img.status == "ready" and img.original_key not in await self._origins(s, [img.original_key],
                                                                                         nodes.storage)

    async def _origins(self, s: AsyncSession, keys: list[str], storage: dict[str, NodeRecord]) -> dict[str, str]:
        """key -> base URL of a storage node of ``storage`` (by id) holding it (a healthy one first)."""
        rows = (await s.execute(select(ObjectLocation).where(ObjectLocation.key.in_(keys)))).scalars().all()
        best: dict[str, tuple[bool, str]] = {}
        for row in rows:
            rec = storage.get(row.node_id)
            if rec is None or not rec.http_url:
                continue
            cand = (self.registry.healthy(rec), rec.http_url.rstrip("/"))
            if row.key not in best or cand[0] > best[row.key][0]:
                best[row.key] = cand
        return {k: v[1] for k, v in best.items()}

    async def get(self, slug: str) -> common_pb2.Image:
        async with self.sessions() as s:
            img = (await s.execute(select(Image).where(Image.slug == slug))).scalar_one_or_none()
            if img is None:
                raise errors.NotFound("no such image")
            return await self.to_proto(s, img)

    async def list_for_user(self, user_id: str, limit: int, before: str) -> list[common_pb2.Image]:
        async with self.sessions() as s:
            q = select(Image).where(Image.user_id == user_id).order_by(Image.created_at.desc(), Image.id.desc())
            cursor = await before_id(s, Image, before, owner_id=user_id)
            if cursor is not None:
                q = q.where(Image.id < cursor)
            rows = (await s.execute(q.limit(max(1, min(limit or 50, 200))))).scalars().all()
            return await self.to_protos(s, rows)

    async def to_proto(self, s: AsyncSession, img: Image, nodes: Nodes | None = None) -> common_pb2.Image:
        """The public ``Image`` message of ``img`` (URLs on the site and on storage origins), read in ``s``;
        with ``nodes`` (:meth:`nodes`) only the database is read, else the registry too."""
        return (await self.to_protos(s, [img], nodes))[0]

    async def to_protos(self, s: AsyncSession, imgs: Sequence[Image], nodes: Nodes | None = None
                        ) -> list[common_pb2.Image]:
        """:meth:`to_proto` for many images with one location query and one registry read for
        the lot (a gallery page of 50 images made 50 of each)."""
        current = [[v for v in img.variants if v.recipe_version == img.recipe_version] for img in imgs]
        keys = [k for img, variants in zip(imgs, current, strict=True)
                for k in (img.original_key, *(v.key for v in variants))]
        nodes = nodes or await self.nodes()
        origins = await self._origins(s, keys, nodes.storage) if keys else {}
        return [self._build(img, variants, origins, nodes.site) for img, variants in zip(imgs, current, strict=True)]

    def _build(self, img: Image, variants: list[Variant], origins: dict[str, str], site: str) -> common_pb2.Image:
        exp = self.url_expiry() if img.visibility == "private" else 0

        def url(key: str) -> str:
            if key not in origins:
                return ""
            if needs_signature(key) and self.url_signer is not None:
                return f"{origins[key]}/o/{key}?{self.url_signer(key, exp or self.url_expiry())}"
            return f"{origins[key]}/o/{key}"

        out = common_pb2.Image(
            id=img.id,
            slug=img.slug,
            status=STATUS.get(img.status, common_pb2.IMAGE_STATUS_PROCESSING),  # type: ignore[arg-type]
            filename=img.filename,
            title=img.title,
            format=img.format,
            mime=img.mime,
            width=img.width,
            height=img.height,
            frames=img.frames,
            bytes=img.bytes,
            sha256=img.sha256,
            original_url=url(img.original_key),
            error_code=img.error_code,
            error_message=img.error_message,
            owner=img.owner.name if img.owner is not None else "",
            created_at=iso(img.created_at),
            url=f"{site}/i/{img.slug}" if site else f"/i/{img.slug}",
            visibility=img.visibility or "public",
            description=img.description or "",
            keep_metadata=bool(img.keep_metadata),
            owner_id=img.user_id or "",
            urls_expire_at=exp,
            expires_at=iso(img.expires_at),
        )
        out.exif.update(img.exif or {})  # never GPS: that is added for the owner only (Library.get)
        by_kind: dict[tuple[str, str], Variant] = {}
        for v in variants:
            by_kind[(v.name, v.format)] = v
            out.variants.append(
                common_pb2.Variant(
                    name=v.name, format=v.format, width=v.width, height=v.height, bytes=v.bytes,
                    key=v.key, url=url(v.key), frames=v.frames, sha256=v.sha256,
                )
            )
        for kind in THUMB_ORDER:
            if kind in by_kind:
                out.thumbnail_url = url(by_kind[kind].key)
                break
        return out
