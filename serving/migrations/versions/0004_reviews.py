"""Reply review: the reply_reviews table, and suggestions.reply_id (which pool reply was shown).

``reply_reviews`` holds the supervisors' decisions (allow / block / edit) keyed by the reply's stable
key (see ``serving/reviews.py``), so they survive retraining. ``suggestions.reply_id`` is nullable:
suggestions stored before this revision have none (their usage is not counted per reply).

Revision ID: 0004_reviews
Revises: 0003_privacy
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_reviews"
down_revision = "0003_privacy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reply_reviews",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("reply_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("original", sa.Text(), nullable=False),
        sa.Column("rev", sa.Integer(), nullable=False),
        sa.Column("reviewed_by", sa.String(length=128), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_reply_reviews")),
        sa.UniqueConstraint("rev", name=op.f("uq_reply_reviews_rev")),
    )
    with op.batch_alter_table("suggestions") as batch:
        batch.add_column(sa.Column("reply_id", sa.String(length=128), nullable=True))
        batch.create_index(batch.f("ix_suggestions_reply_id"), ["reply_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("suggestions") as batch:
        batch.drop_index(batch.f("ix_suggestions_reply_id"))
        batch.drop_column("reply_id")
    op.drop_table("reply_reviews")
