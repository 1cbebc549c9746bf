"""Appointments and the desk's work list: the appointments, tasks and task_attempts tables.

``appointments``: bookings with a time, doctor, project and department (``serving/appointments.py``);
``tasks``: call tasks created by rules (lead, reminder, no-show callback, after-care), one per ``key``;
``task_attempts``: every call recorded on a task (``serving/tasks.py``). New tables only.

Revision ID: 0005_appointments_tasks
Revises: 0004_reviews
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_appointments_tasks"
down_revision = "0004_reviews"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _create_appointments()
    _create_task_attempts()
    _create_tasks()


def _create_appointments() -> None:
    op.create_table(
        "appointments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=128), nullable=False),
        sa.Column("hospital", sa.String(length=128), nullable=True),
        sa.Column("department", sa.String(length=64), nullable=True),
        sa.Column("project", sa.String(length=64), nullable=True),
        sa.Column("doctor", sa.String(length=64), nullable=True),
        sa.Column("consultant_id", sa.String(length=128), nullable=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("auto_no_show", sa.Boolean(), nullable=False),
        sa.Column("time_source", sa.String(length=16), nullable=False),
        sa.Column("rebooked_from", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_by", sa.String(length=128), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointments")),
    )
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_appointments_consultant_id"), ["consultant_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_appointments_conversation_id"), ["conversation_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_appointments_day"), ["day"], unique=False)
        batch_op.create_index(batch_op.f("ix_appointments_department"), ["department"], unique=False)
        batch_op.create_index(batch_op.f("ix_appointments_doctor"), ["doctor"], unique=False)
        batch_op.create_index(batch_op.f("ix_appointments_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_appointments_time"), ["time"], unique=False)


def _create_task_attempts() -> None:
    op.create_table(
        "task_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("appointment_id", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_attempts")),
    )
    with op.batch_alter_table("task_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_attempts_task_id"), ["task_id"], unique=False)


def _create_tasks() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("conversation_id", sa.String(length=128), nullable=False),
        sa.Column("appointment_id", sa.String(length=32), nullable=True),
        sa.Column("hospital", sa.String(length=128), nullable=True),
        sa.Column("department", sa.String(length=64), nullable=True),
        sa.Column("consultant_id", sa.String(length=128), nullable=True),
        sa.Column("assignee", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.String(length=64), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_result", sa.String(length=16), nullable=True),
        sa.Column("closed_reason", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("key", name=op.f("uq_tasks_key")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tasks_appointment_id"), ["appointment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_assignee"), ["assignee"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_consultant_id"), ["consultant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_department"), ["department"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_due_at"), ["due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_state"))
        batch_op.drop_index(batch_op.f("ix_tasks_kind"))
        batch_op.drop_index(batch_op.f("ix_tasks_due_at"))
        batch_op.drop_index(batch_op.f("ix_tasks_department"))
        batch_op.drop_index(batch_op.f("ix_tasks_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_consultant_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_assignee"))
        batch_op.drop_index(batch_op.f("ix_tasks_appointment_id"))

    op.drop_table("tasks")
    with op.batch_alter_table("task_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_attempts_task_id"))

    op.drop_table("task_attempts")
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_appointments_time"))
        batch_op.drop_index(batch_op.f("ix_appointments_status"))
        batch_op.drop_index(batch_op.f("ix_appointments_doctor"))
        batch_op.drop_index(batch_op.f("ix_appointments_department"))
        batch_op.drop_index(batch_op.f("ix_appointments_day"))
        batch_op.drop_index(batch_op.f("ix_appointments_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_appointments_consultant_id"))

    op.drop_table("appointments")
