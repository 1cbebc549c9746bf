"""API keys scoped to hospitals (issue 17 tenancy): filled in by the tenancy change.

Revision ID: 0009_key_hospitals
Revises: 0008_chat_summaries
Create Date: 2026-12-01
"""

from __future__ import annotations

revision = "0009_key_hospitals"
down_revision = "0008_chat_summaries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
