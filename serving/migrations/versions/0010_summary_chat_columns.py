"""The report summary carries the chat columns it filters on (no join): filled in by the reports change.

Revision ID: 0010_summary_chat_columns
Revises: 0009_key_hospitals
Create Date: 2026-12-01
"""

from __future__ import annotations

revision = "0010_summary_chat_columns"
down_revision = "0009_key_hospitals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
