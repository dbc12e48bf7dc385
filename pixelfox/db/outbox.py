"""The job outbox: one row per image whose job is not finished yet (issue 7).

The row is written in the same transaction as the image row (CompleteUpload) and deleted in
the same transaction that records the job's result (or its final failure). The manager
re-enqueues rows whose job Redis does not know (:mod:`nodes.manager.outbox`), so a crash
between the database commit and the enqueue, or a Redis that lost its last second of
writes, never leaves an image "processing" forever (transactional outbox pattern).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from pixelfox.db.models import Base, utcnow


class OutboxEntry(Base):
    __tablename__ = "job_outbox"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), default="process_image")
    lane: Mapped[str] = mapped_column(String(16), default="interactive")  # interactive | batch
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
