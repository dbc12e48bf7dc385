"""images: expires_at, when an image whose upload asked for an expiration is deleted

The time lived only in the expiry sweeper's Redis schedule, so no answer or page could say when an
expiring image goes. NULL (every existing row, and every image uploaded without an expiration) is never.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("expires_at")
