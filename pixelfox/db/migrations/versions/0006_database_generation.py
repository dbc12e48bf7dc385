"""database_generation: one row naming this database's contents

After ``pixelfox restore`` (or pointing the cluster at another database) the Redis read model
still served images the database no longer held, for up to an hour. The row's random
``generation`` is set anew by restore and migrate-db; a manager whose database has a generation
other than the one the read model was filled from empties it at start. The row itself is
written by the first manager that starts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "database_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("database_generation")
