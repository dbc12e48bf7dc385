"""object_locations: an index on node_id, for one storage node's rows

The primary key is (key, node_id), so a query on node_id alone read every row of the table (one
per replica of every original and variant): a storage node gone for good or forgotten
(``nodes/manager/gone.py`` reads its keys, then deletes its rows), and the repair's filter on
the live nodes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 11:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("object_locations") as batch:
        batch.create_index("ix_object_locations_node_id", ["node_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("object_locations") as batch:
        batch.drop_index("ix_object_locations_node_id")
