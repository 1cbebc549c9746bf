"""Hospital knowledge: one row per hospital id holding its checked knowledge document.

``hospital_knowledge`` (hospital_id, document: the JSON of ``serving.knowledge.Knowledge`` — departments,
projects with price ranges, doctors with duty and leave, activities, address and directions —, rev: one
higher per write, updated_at, updated_by); see ``serving/knowledge.py``.

Revision ID: 0007_knowledge
Revises: 0006_patients
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_knowledge"
down_revision = "0006_patients"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hospital_knowledge",
        sa.Column("hospital_id", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("rev", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("hospital_id", name=op.f("pk_hospital_knowledge")),
    )


def downgrade() -> None:
    op.drop_table("hospital_knowledge")
