"""uploads: error_code and error_message, why a failed upload was refused

An upload its upload node refused (not an image: 415, a checksum mismatch of the whole file) kept
its reason only in its Redis state (``upload_ttl_s``), so once that expired ``GET
/api/v1/uploads/<id>`` called it "expired" and the reason was lost. The upload node now tells the
manager (``FailUpload``), which marks the row ``failed`` with the reason's code and message.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("error_code", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("error_message", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("error_message")
        batch.drop_column("error_code")
