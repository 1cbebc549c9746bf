"""The privacy tables: the audit log of access to personal data, and the erasures done.

Both are on :data:`serving.db.metadata` (created by revision ``0003_privacy``); ``serving/store.py``
imports this module, so whoever declares the store's tables declares these too.

- ``audit_log``: one row per access to raw personal data or change of it: ``read_raw`` (a chat read
  unmasked by its consultant), ``export``, ``erase``, ``access`` (a data-subject request), ``purge``
  (retention). ``actor`` is the API key's name (``cli:<user>`` for ``yuyue store purge``), ``role``
  its role, ``conversation_id`` the chat (None for an export or a purge, whose ``scope`` says what
  they covered), ``detail`` a JSON object (counts, filters).
- ``erasures``: the chats whose raw text was masked (by an erasure request or by retention), with the
  number of messages the chat held then: a chat that received messages since (it stays usable) is
  masked again by the next purge.

Reads and writes are :class:`~yuyue.serving.store.EventStore` methods (``audit``, ``audit_entries``).
"""

from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa

from yuyue.serving.db import UTCDateTime, metadata


class AuditAction(StrEnum):
    READ_RAW = "read_raw"
    EXPORT = "export"
    ERASE = "erase"
    ACCESS = "access"
    PURGE = "purge"


AUDIT_ACTIONS = tuple(a.value for a in AuditAction)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("actor", sa.String(128), nullable=True, index=True),  # API key name, or cli:<user>
    sa.Column("role", sa.String(20), nullable=True),
    sa.Column("action", sa.String(16), nullable=False, index=True),
    sa.Column("conversation_id", sa.String(128), nullable=True, index=True),
    sa.Column("scope", sa.String(512), nullable=True),  # what an export or a purge covered
    sa.Column("detail", sa.Text, nullable=True),  # JSON
    sa.CheckConstraint(f"action IN ({', '.join(repr(a) for a in AUDIT_ACTIONS)})", name="action"),
)

erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("conversation_id", sa.String(128), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(128), nullable=True),
    sa.Column("reason", sa.String(16), nullable=False),  # erase | purge
    sa.Column("n_messages", sa.Integer, nullable=False),  # messages the chat held when it was masked
)
