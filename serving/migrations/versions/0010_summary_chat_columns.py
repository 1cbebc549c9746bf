"""The report summary carries the chat columns the reports filter and group by (no join).

``chat_summaries`` gets ``conversations``' hospital, department, consultant_id, started_at, day,
engine, keyword_category, landing_page, region, contact_seen, contact, booked and arrived (the store
copies them in the transaction that writes them from now on), and indexes on ``(started_at)``,
``(hospital, started_at)`` and ``(consultant_id, started_at)``; the rows stored are filled from
``conversations`` in batches of :data:`_BATCH` chats (one ``UPDATE … FROM`` each: seconds for
100,000 chats). The downgrade drops the indexes and the columns.

Revision ID: 0010_summary_chat_columns
Revises: 0009_key_hospitals
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010_summary_chat_columns"
down_revision = "0009_key_hospitals"
branch_labels = None
depends_on = None

_BATCH = 5000

# (name, type) of the columns copied, as conversations declares them
_COLUMNS: tuple[tuple[str, sa.types.TypeEngine[Any]], ...] = (
    ("hospital", sa.String(length=128)),
    ("department", sa.String(length=64)),
    ("consultant_id", sa.String(length=128)),
    ("started_at", sa.DateTime(timezone=True)),
    ("day", sa.String(length=10)),
    ("engine", sa.String(length=32)),
    ("keyword_category", sa.String(length=32)),
    ("landing_page", sa.String(length=32)),
    ("region", sa.String(length=256)),
    ("contact_seen", sa.Boolean()),
    ("contact", sa.Boolean()),
    ("booked", sa.Boolean()),
    ("arrived", sa.Boolean()),
)
_INDEXES = {
    "ix_chat_summaries_started_at": ["started_at"],
    "ix_chat_summaries_hospital_started_at": ["hospital", "started_at"],
    "ix_chat_summaries_consultant_id_started_at": ["consultant_id", "started_at"],
}


def upgrade() -> None:
    with op.batch_alter_table("chat_summaries") as batch:
        for name, type_ in _COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    _backfill()
    for name, columns in _INDEXES.items():
        op.create_index(name, "chat_summaries", columns, unique=False)


def _backfill() -> None:
    """Copy the columns from ``conversations`` for the summaries stored, :data:`_BATCH` at a time (in
    the order of their key: each batch is one range of it)."""
    names = [name for name, _ in _COLUMNS]
    summaries = sa.table("chat_summaries", sa.column("conversation_id"), *(sa.column(n) for n in names))
    chats = sa.table("conversations", sa.column("id"), *(sa.column(n) for n in names))
    s, c = summaries.c, chats.c
    cx = op.get_bind()
    last: str | None = None
    while True:
        keys = sa.select(s.conversation_id).order_by(s.conversation_id).limit(_BATCH)
        if last is not None:
            keys = keys.where(s.conversation_id > last)
        batch = list(cx.execute(keys).scalars())
        if not batch:
            return
        cx.execute(
            summaries.update()
            .where(s.conversation_id == c.id, s.conversation_id >= batch[0], s.conversation_id <= batch[-1])
            .values({n: c[n] for n in names})
        )
        last = batch[-1]


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, table_name="chat_summaries")
    with op.batch_alter_table("chat_summaries") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
