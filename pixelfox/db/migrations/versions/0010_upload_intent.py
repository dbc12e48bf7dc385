"""uploads: title, visibility and expire_after_s, what a CreateUpload asked of its image

They lived only in the upload's Redis state, so a completion that came after that state was gone
(expired, or lost with a Redis that restarted without its data) made a public, untitled, lasting
image of an upload that asked to be private or to expire. Existing rows take the defaults (public, no
title, no expiration), which is what such a completion made before.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 21:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("title", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("visibility", sa.String(16), nullable=False, server_default="public"))
        batch.add_column(sa.Column("expire_after_s", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("expire_after_s")
        batch.drop_column("visibility")
        batch.drop_column("title")
