"""Baseline: the schema as of commit e4b9a41, the last one created by ``create_all`` without migrations.

A database created by that ``create_all`` (no ``alembic_version`` table) already has some or all of
these tables: ``yuyue store upgrade`` runs this revision on it, which keeps the tables that exist as
they are (stamps them) and creates the missing ones (``yuyue keys create`` on a fresh install created
``api_keys`` alone).

Revision ID: 0001_baseline
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)  # serving.db.UTCDateTime stores this type


def _api_keys() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("consultant_id", sa.String(length=64), nullable=True),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.Column("rate_per_minute", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "role IN ('consultant', 'supervisor', 'analyst', 'admin')", name=op.f("ck_api_keys_role")
        ),
        sa.CheckConstraint(
            "role <> 'consultant' OR consultant_id IS NOT NULL", name=op.f("ck_api_keys_consultant_id")
        ),
        sa.CheckConstraint("rate_per_minute IS NULL OR rate_per_minute > 0", name=op.f("ck_api_keys_rate")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_prefix", name=op.f("uq_api_keys_key_prefix")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(
        "uq_api_keys_active_name",
        "api_keys",
        ["name"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )


def _events() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint(
            "conversation_id", "kind", "seq", name=op.f("uq_events_conversation_id_kind_seq")
        ),
    )
    op.create_index(op.f("ix_events_conversation_id"), "events", ["conversation_id"], unique=False)


def _conversations() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("hospital", sa.String(length=128), nullable=True),
        sa.Column("department", sa.String(length=64), nullable=True),
        sa.Column("project", sa.String(length=64), nullable=True),
        sa.Column("consultant_id", sa.String(length=128), nullable=True),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("last_at", TZ, nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("visit", sa.Text(), nullable=True),
        sa.Column("engine", sa.String(length=32), nullable=True),
        sa.Column("keyword", sa.String(length=512), nullable=True),
        sa.Column("keyword_category", sa.String(length=32), nullable=True),
        sa.Column("landing_page", sa.String(length=32), nullable=True),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("n_messages", sa.Integer(), nullable=False),
        sa.Column("n_visitor", sa.Integer(), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("contact_seen", sa.Boolean(), nullable=False),
        sa.Column("contact", sa.Boolean(), nullable=True),
        sa.Column("booked", sa.Boolean(), nullable=True),
        sa.Column("arrived", sa.Boolean(), nullable=True),
        sa.Column("booked_at", TZ, nullable=True),
        sa.Column("arrived_at", TZ, nullable=True),
        sa.Column("p_booked", sa.Float(), nullable=True),
        sa.Column("p_arrived", sa.Float(), nullable=True),
        sa.Column("reasons", sa.Text(), nullable=True),
        sa.Column("model_version", sa.String(length=32), nullable=True),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    for column in ("hospital", "department", "consultant_id", "started_at"):
        op.create_index(op.f(f"ix_conversations_{column}"), "conversations", [column], unique=False)


def _suggestions() -> None:
    op.create_table(
        "suggestions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("feedback", sa.String(length=16), nullable=True),
        sa.Column("final_text", sa.Text(), nullable=True),
        sa.Column("feedback_at", TZ, nullable=True),
        sa.Column("feedback_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suggestions")),
    )
    op.create_index(op.f("ix_suggestions_conversation_id"), "suggestions", ["conversation_id"], unique=False)


TABLES = {
    "api_keys": _api_keys,
    "events": _events,
    "conversations": _conversations,
    "suggestions": _suggestions,
}


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in TABLES.items():
        if name not in existing:  # an unversioned database made by create_all keeps its tables
            create()


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
