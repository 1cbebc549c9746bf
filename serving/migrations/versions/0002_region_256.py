"""conversations.region: varchar(64) -> varchar(256), the length the API contract allows.

Widening keeps every row; on PostgreSQL it is a catalog change, on SQLite the table is copied
(batch mode). The downgrade fails (rather than truncating) if a region is longer than 64 characters
on PostgreSQL.

Revision ID: 0002_region_256
Revises: 0001_baseline
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_region_256"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.alter_column(
            "region", existing_type=sa.String(length=64), type_=sa.String(length=256), existing_nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.alter_column(
            "region", existing_type=sa.String(length=256), type_=sa.String(length=64), existing_nullable=True
        )
