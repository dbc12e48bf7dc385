"""SQLAlchemy 2 models for PixelFox's metadata.

Ids are ULIDs (sortable, 26 chars); public image slugs are 16 url-safe characters
(96 random bits, RELIABILITY.md C6). Times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    # timezone-aware columns: PostgreSQL gets TIMESTAMPTZ (asyncpg refuses aware values for plain
    # TIMESTAMP); SQLite stores the same ISO text as before.
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")  # "user" | "admin"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: set when an admin disabled the account (migration 0007): no login, API key or session works
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the whole key
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, for display
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    user: Mapped[User] = relationship(lazy="joined")


class Upload(Base):
    """An upload ticket's server-side record: one ticket, one upload, at most one image."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    filename: Mapped[str] = mapped_column(String(255), default="")
    size: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(100), default="")
    upload_node_id: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | complete | abandoned | failed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    #: a deduplicated upload: the id of the user's existing image it completed as (it has no image of
    #: its own); no foreign key, images already point at uploads (migration 0003)
    duplicate_of: Mapped[str | None] = mapped_column(String(26), default=None)
    #: a failed upload (status ``failed``): the stable code and the message of the reason, as its
    #: uploader was told; kept for ``GET /api/v1/uploads/<id>`` once its Redis state is gone (0005)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(String(500), default=None)
    #: what ``CreateUpload`` asked of the new image (migration 0010), kept here as well as in the upload's
    #: Redis state: a completion that comes after that state is gone still makes the image asked for
    title: Mapped[str] = mapped_column(String(255), default="", server_default="")
    visibility: Mapped[str] = mapped_column(String(16), default="public", server_default="public")
    #: seconds after completion the image expires; 0: never
    expire_after_s: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    #: a user's uploads whose ticket is still accepted (``GET /api/v1/uploads``, migration 0004)
    __table_args__ = (Index("ix_uploads_user_expires", "user_id", "expires_at"),)


class Image(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    slug: Mapped[str] = mapped_column(String(32), unique=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), unique=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    filename: Mapped[str] = mapped_column(String(255), default="")
    title: Mapped[str] = mapped_column(String(255), default="")
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    bytes: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    mime: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)  # upright px (after orientation)
    height: Mapped[int] = mapped_column(Integer)
    frames: Mapped[int] = mapped_column(Integer, default=1)
    orientation: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="processing")  # processing | ready | failed
    error_code: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(String(500), default="")
    original_key: Mapped[str] = mapped_column(String(200))
    recipe_version: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime | None] = mapped_column(default=None)
    # issue 5: private images live under p/<private_salt>/... keys (nodes/manager/visibility.py)
    visibility: Mapped[str] = mapped_column(String(16), default="public")  # public | private
    private_salt: Mapped[str] = mapped_column(String(32), default="")
    description: Mapped[str] = mapped_column(String(2000), default="")
    keep_metadata: Mapped[bool] = mapped_column(default=False)
    # issue 3: useful EXIF fields from the processing node (display text, never GPS); the GPS
    # position apart, shown to the owner only
    exif: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)
    gps_lat: Mapped[float | None] = mapped_column(Float, default=None)
    gps_lon: Mapped[float | None] = mapped_column(Float, default=None)
    # when the expiry sweeper deletes it (an upload's Chevereto/ImgBB ``expiration``; the schedule itself is
    # the Redis set of nodes/manager/expiry.py); None: never (migration 0009)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)

    owner: Mapped[User | None] = relationship(lazy="joined")
    variants: Mapped[list[Variant]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="Variant.id"
    )

    __table_args__ = (Index("ix_images_user_created", "user_id", "created_at"),)


class Variant(Base):
    __tablename__ = "variants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    recipe_version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(32))
    format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    frames: Mapped[int] = mapped_column(Integer, default=1)
    key: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), default="")

    __table_args__ = (UniqueConstraint("image_id", "recipe_version", "name", "format"),)


class ObjectLocation(Base):
    """Which storage node holds a replica of which key."""

    __tablename__ = "object_locations"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    #: one node's rows (a storage node gone for good or forgotten: ``nodes/manager/gone.py``): the primary
    #: key leads with ``key``, so without this index those read every row (migration 0008)
    __table_args__ = (Index("ix_object_locations_node_id", "node_id"),)


class Album(Base):
    """A user's album; anyone with its slug sees it (its private images only for the owner)."""

    __tablename__ = "albums"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    slug: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(2000), default="")
    cover_image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    owner: Mapped[User] = relationship(lazy="joined")


class AlbumImage(Base):
    __tablename__ = "album_images"

    album_id: Mapped[str] = mapped_column(ForeignKey("albums.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class AbuseReport(Base):
    __tablename__ = "abuse_reports"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"), default=None)
    image_slug: Mapped[str] = mapped_column(String(32), default="")
    reporter_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    reason: Mapped[str] = mapped_column(String(1000), default="")
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | resolved | image-deleted
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    resolved_by: Mapped[str] = mapped_column(String(64), default="")

    reporter: Mapped[User | None] = relationship(lazy="joined")


class ReplicaDebt(Base):
    """An object with fewer live replicas than the replication factor (issue 6; nodes/manager/repair.py).

    Written by the manager's repair pass when it finds the gap, deleted once the copies are
    made; ``image_id`` names the image the key belongs to (empty if no row names it).
    """

    __tablename__ = "replica_debts"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(26), default="", index=True)
    have: Mapped[int] = mapped_column(Integer, default=0)
    want: Mapped[int] = mapped_column(Integer, default=0)
    since: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str] = mapped_column(String(500), default="")


class DatabaseGeneration(Base):
    """One row (``id`` 1): a random ``generation`` that names this database's contents.

    Set anew by ``pixelfox restore`` and ``migrate-db`` (:mod:`pixelfox.db.generation`); a manager
    that starts on a generation other than the one its Redis read model was filled from empties
    that cache (:func:`pixelfox.readmodel.follow_database`). Not part of backups.
    """

    __tablename__ = "database_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[str] = mapped_column(String(32))
