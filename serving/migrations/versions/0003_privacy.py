"""Privacy: the audit log of access to personal data, and the chats whose raw text was masked.

New tables only (``serving/audit.py``): ``audit_log`` and ``erasures``; no existing row changes.

Revision ID: 0003_privacy
Revises: 0002_region_256
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_privacy"
down_revision = "0002_region_256"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)  # serving.db.UTCDateTime stores this type
ACTIONS = ("read_raw", "export", "erase", "access", "purge")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("role", sa.String(length=20), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("conversation_id", sa.String(length=128), nullable=True),
        sa.Column("scope", sa.String(length=512), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint(
            f"action IN ({', '.join(repr(a) for a in ACTIONS)})", name=op.f("ck_audit_log_action")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    for column in ("at", "actor", "action", "conversation_id"):
        op.create_index(op.f(f"ix_audit_log_{column}"), "audit_log", [column], unique=False)
    op.create_table(
        "erasures",
        sa.Column("conversation_id", sa.String(length=128), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("n_messages", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_erasures")),
    )


def downgrade() -> None:
    op.drop_table("erasures")
    for column in ("at", "actor", "action", "conversation_id"):
        op.drop_index(op.f(f"ix_audit_log_{column}"), table_name="audit_log")
    op.drop_table("audit_log")
