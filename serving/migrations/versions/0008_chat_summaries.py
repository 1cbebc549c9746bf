"""The desk reports' per-chat summary: ``chat_summaries``, filled for the chats already stored.

One row per chat (see ``serving/report_summary.py``): the lead's expected booking / arrival, paid vs
organic, an imported 对话等级, the timings, concerns raised / answered, compliance warnings and the
suggestions' counts. The store keeps it current from now on; this revision replays every stored chat
from its events (the message texts are read once: about 0.3 ms a message, so a store of 100,000 chats
of 10 messages takes minutes). The downgrade drops the table.

Revision ID: 0008_chat_summaries
Revises: 0007_knowledge
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_chat_summaries"
down_revision = "0007_knowledge"
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade() -> None:
    op.create_table(
        "chat_summaries",
        sa.Column("conversation_id", sa.String(length=128), nullable=False),
        sa.Column("paid", sa.String(length=8), nullable=False),
        sa.Column("p_booked_lead", sa.Float(), nullable=True),
        sa.Column("p_arrived_lead", sa.Float(), nullable=True),
        sa.Column("grade", sa.String(length=8), nullable=True),
        sa.Column("n_messages", sa.Integer(), nullable=False),
        sa.Column("last_role", sa.SmallInteger(), nullable=True),
        sa.Column("first_visitor_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_wait_s", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Text(), nullable=True),
        sa.Column("run_start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("waits", sa.Text(), nullable=True),
        sa.Column("replies", sa.Integer(), nullable=False),
        sa.Column("consultant_msgs", sa.Integer(), nullable=False),
        sa.Column("flagged", sa.Integer(), nullable=False),
        sa.Column("concerns_raised", sa.Integer(), nullable=False),
        sa.Column("concerns_open", sa.Integer(), nullable=False),
        sa.Column("concerns_answered", sa.Integer(), nullable=False),
        sa.Column("shown", sa.Integer(), nullable=False),
        sa.Column("with_feedback", sa.Integer(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_chat_summaries")),
    )
    from yuyue.serving.report_summary import rebuild

    cx = op.get_bind()
    ids = list(cx.execute(sa.text("SELECT id FROM conversations ORDER BY id")).scalars())
    for i in range(0, len(ids), _BATCH):
        rebuild(cx, ids[i : i + _BATCH])


def downgrade() -> None:
    op.drop_table("chat_summaries")
