"""uploads: an index on (user_id, expires_at) for a user's open uploads

``GET /api/v1/uploads`` lists the caller's open uploads: those of their rows whose ticket is still
accepted. Without an index that read every upload ever made.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.create_index("ix_uploads_user_expires", ["user_id", "expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_index("ix_uploads_user_expires")
