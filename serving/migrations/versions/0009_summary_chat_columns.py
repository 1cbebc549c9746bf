"""The desk reports' summary holds the chat's columns the reports group and filter on.

``chat_summaries`` gets copies of ``conversations``' started_at, day, hospital, department,
consultant_id, engine, keyword_category, landing_page, region, contact_seen, contact, booked and
arrived (kept current by the store with the chat's open, claim, messages and outcomes), and an index
on started_at, so a report reads the summary alone instead of joining every chat in range. This
revision fills them from the chats' rows (one UPDATE; seconds for 100,000 chats), and builds the
summaries of the chats that have none (a store upgraded from before 0008, whose revision leaves that
to this one: about 0.3 ms a message). The downgrade drops them.

Revision ID: 0009_summary_chat_columns
Revises: 0008_chat_summaries
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_summary_chat_columns"
down_revision = "0008_chat_summaries"
branch_labels = None
depends_on = None

_BATCH = 1000


def _columns() -> tuple[sa.Column[object], ...]:
    return (
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("day", sa.String(length=10), nullable=True),
        sa.Column("hospital", sa.String(length=128), nullable=True),
        sa.Column("department", sa.String(length=64), nullable=True),
        sa.Column("consultant_id", sa.String(length=128), nullable=True),
        sa.Column("engine", sa.String(length=32), nullable=True),
        sa.Column("keyword_category", sa.String(length=32), nullable=True),
        sa.Column("landing_page", sa.String(length=32), nullable=True),
        sa.Column("region", sa.String(length=256), nullable=True),
        sa.Column("contact_seen", sa.Boolean(), nullable=True),
        sa.Column("contact", sa.Boolean(), nullable=True),
        sa.Column("booked", sa.Boolean(), nullable=True),
        sa.Column("arrived", sa.Boolean(), nullable=True),
    )


def upgrade() -> None:
    with op.batch_alter_table("chat_summaries") as batch:
        for column in _columns():
            batch.add_column(column)
        batch.create_index(op.f("ix_chat_summaries_started_at"), ["started_at"], unique=False)
    names = ", ".join(c.name for c in _columns())
    # a row value from the chat's row (SQLite >= 3.15, PostgreSQL >= 10)
    op.execute(
        f"UPDATE chat_summaries SET ({names}) = "
        f"(SELECT {names} FROM conversations WHERE conversations.id = chat_summaries.conversation_id)"
    )
    # the chats without a summary (a store upgraded from before 0008): replayed from their events
    from yuyue.serving.report_summary import rebuild, stale

    cx = op.get_bind()
    ids = sorted(stale(cx, []))
    for i in range(0, len(ids), _BATCH):
        rebuild(cx, ids[i : i + _BATCH])


def downgrade() -> None:
    with op.batch_alter_table("chat_summaries") as batch:
        batch.drop_index(op.f("ix_chat_summaries_started_at"))
        for column in reversed(_columns()):
            batch.drop_column(column.name)
