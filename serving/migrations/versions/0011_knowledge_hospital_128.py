"""hospital_knowledge.hospital_id: varchar(64) -> varchar(128), the length of a chat's hospital code.

A chat's ``hospital`` (and a key's hospitals) may be 128 characters; a hospital with a code of 65-128
characters could not have its own knowledge document. Widening keeps every row; on PostgreSQL it is a
catalog change, on SQLite the table is copied (batch mode). The downgrade fails (rather than
truncating) if a code is longer than 64 characters on PostgreSQL.

Revision ID: 0011_knowledge_hospital_128
Revises: 0010_summary_chat_columns
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_knowledge_hospital_128"
down_revision = "0010_summary_chat_columns"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hospital_knowledge") as batch:
        batch.alter_column(
            "hospital_id",
            existing_type=sa.String(length=64),
            type_=sa.String(length=128),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("hospital_knowledge") as batch:
        batch.alter_column(
            "hospital_id",
            existing_type=sa.String(length=128),
            type_=sa.String(length=64),
            existing_nullable=False,
        )
