"""API keys scoped to hospitals (issue 17 tenancy): ``api_keys.hospitals``, a JSON list of hospital
names; NULL is every hospital, so the keys that exist stay group-level (unscoped).

Revision ID: 0009_key_hospitals
Revises: 0008_chat_summaries
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_key_hospitals"
down_revision = "0008_chat_summaries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("hospitals", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("hospitals")
