"""uploads: duplicate_of, the image a deduplicated upload became (issue 4)

A re-upload of bytes its user already has completes as that image and makes no row of its own;
only the upload's Redis state (``upload_ttl_s``) said which image it was, so once that expired
``GET /api/v1/uploads/<id>`` called a completed upload "expired". The image id is kept here; no
foreign key (images already point at uploads), a deleted image leaves a dangling id that reads as
"no image".

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("duplicate_of", sa.String(length=26), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("duplicate_of")
