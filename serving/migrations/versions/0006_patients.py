"""Patients: linked chats, keyed hashes of what identifies a visitor, incidents; appointments.flag_ack.

``patients`` (merged_into, the flag's last clearing), ``patient_keys`` (HMAC-SHA256 of a normalised
phone, WeChat, QQ, e-mail or visitor id -> patient; never the raw value), ``patient_chats`` (chat ->
patient), ``patient_incidents`` (complaints, unpaid visits); see ``serving/patients.py``.
``appointments.flag_ack``: the flag's reasons confirmed when a flagged patient was booked (nullable:
appointments made before this revision have none).

Revision ID: 0006_patients
Revises: 0005_appointments_tasks
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_patients"
down_revision = "0005_appointments_tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("merged_into", sa.String(length=32), nullable=True),
        sa.Column("flags_cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("flags_cleared_by", sa.String(length=128), nullable=True),
        sa.Column("flags_cleared_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
    )
    with op.batch_alter_table("patients") as batch:
        batch.create_index(batch.f("ix_patients_merged_into"), ["merged_into"], unique=False)

    op.create_table(
        "patient_keys",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_patient_keys")),
    )
    with op.batch_alter_table("patient_keys") as batch:
        batch.create_index(batch.f("ix_patient_keys_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "patient_chats",
        sa.Column("conversation_id", sa.String(length=128), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=True),
        sa.Column("n_messages", sa.Integer(), nullable=False),
        sa.Column("kinds", sa.String(length=64), nullable=True),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_patient_chats")),
    )
    with op.batch_alter_table("patient_chats") as batch:
        batch.create_index(batch.f("ix_patient_chats_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "patient_incidents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("conversation_id", sa.String(length=128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_incidents")),
    )
    with op.batch_alter_table("patient_incidents") as batch:
        batch.create_index(batch.f("ix_patient_incidents_patient_id"), ["patient_id"], unique=False)

    with op.batch_alter_table("appointments") as batch:
        batch.add_column(sa.Column("flag_ack", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("appointments") as batch:
        batch.drop_column("flag_ack")
    for table in ("patient_incidents", "patient_chats", "patient_keys", "patients"):
        index = {"patients": "merged_into"}.get(table, "patient_id")
        with op.batch_alter_table(table) as batch:
            batch.drop_index(batch.f(f"ix_{table}_{index}"))
        op.drop_table(table)
