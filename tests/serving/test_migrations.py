"""Alembic migrations of the service's database, on SQLite and PostgreSQL.

A database made by the old ``create_all`` (the tables as of commit e4b9a41, region varchar(64),
no ``alembic_version``) holding a chat is upgraded: the rows survive, the widened column and the
constraints are there, the store works on it. The server refuses a database behind the code and
names ``yuyue store upgrade``; a fresh database is created at the head revision; the head revision
equals the tables declared in the code (what ``alembic check`` verifies).
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

from yuyue.serving.auth import KeyStore
from yuyue.serving.db import (
    BASELINE_TABLES,
    SCHEMA_TABLES,
    SchemaBehind,
    SchemaUnknown,
    UTCDateTime,
    alembic_config,
    create_all,
    current_revision,
    head_revision,
    metadata,
    prepare_schema,
    upgrade_schema,
)
from yuyue.serving.store import EventStore, conversations, events, suggestions
from yuyue.serving.store_cli import store_app

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
BASELINE = "0001_baseline"
LONG_REGION = "广东省广州市天河区" * 20  # 180 characters: over the old 64

# ---- the schema as of e4b9a41 (serving/store.py and serving/auth.py then), created by create_all ----
old = sa.MetaData(naming_convention=metadata.naming_convention)
old_events = sa.Table(
    "events",
    old,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.String(128), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(128), nullable=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.UniqueConstraint("conversation_id", "kind", "seq"),
)
old_conversations = sa.Table(
    "conversations",
    old,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("hospital", sa.String(128), index=True),
    sa.Column("department", sa.String(64), index=True),
    sa.Column("project", sa.String(64)),
    sa.Column("consultant_id", sa.String(128), index=True),
    sa.Column("started_at", UTCDateTime, nullable=False, index=True),
    sa.Column("last_at", UTCDateTime, nullable=False),
    sa.Column("day", sa.String(10), nullable=False),
    sa.Column("visit", sa.Text),
    sa.Column("engine", sa.String(32)),
    sa.Column("keyword", sa.String(512)),
    sa.Column("keyword_category", sa.String(32)),
    sa.Column("landing_page", sa.String(32)),
    sa.Column("region", sa.String(64)),
    sa.Column("n_messages", sa.Integer, nullable=False, default=0),
    sa.Column("n_visitor", sa.Integer, nullable=False, default=0),
    sa.Column("closed", sa.Boolean, nullable=False, default=False),
    sa.Column("contact_seen", sa.Boolean, nullable=False, default=False),
    sa.Column("contact", sa.Boolean),
    sa.Column("booked", sa.Boolean),
    sa.Column("arrived", sa.Boolean),
    sa.Column("booked_at", UTCDateTime),
    sa.Column("arrived_at", UTCDateTime),
    sa.Column("p_booked", sa.Float),
    sa.Column("p_arrived", sa.Float),
    sa.Column("reasons", sa.Text),
    sa.Column("model_version", sa.String(32)),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
old_suggestions = sa.Table(
    "suggestions",
    old,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("conversation_id", sa.String(128), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("source", sa.String(64)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("feedback", sa.String(16)),
    sa.Column("final_text", sa.Text),
    sa.Column("feedback_at", UTCDateTime),
    sa.Column("feedback_by", sa.String(128)),
)
old_api_keys = sa.Table(
    "api_keys",
    old,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("consultant_id", sa.String(64), nullable=True),
    sa.Column("key_prefix", sa.String(16), nullable=False, unique=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("rate_per_minute", sa.Integer, nullable=True),
    sa.CheckConstraint("role IN ('consultant', 'supervisor', 'analyst', 'admin')", name="role"),
    sa.CheckConstraint("role <> 'consultant' OR consultant_id IS NOT NULL", name="consultant_id"),
    sa.CheckConstraint("rate_per_minute IS NULL OR rate_per_minute > 0", name="rate"),
)
sa.Index(
    "uq_api_keys_active_name",
    old_api_keys.c.name,
    unique=True,
    sqlite_where=old_api_keys.c.revoked_at.is_(None),
    postgresql_where=old_api_keys.c.revoked_at.is_(None),
)


def _old_database(engine) -> dict:
    """The old schema with one chat (open + a message + a suggestion) and an API key; the chat's row."""
    old.create_all(engine)
    chat = {
        "id": "chat-1",
        "hospital": "h1",
        "department": "整形",
        "project": "隆鼻",
        "consultant_id": "c01",
        "started_at": T0,
        "last_at": T0,
        "day": "2025-03-01",
        "visit": orjson.dumps({"pages": 3}).decode(),
        "engine": "baidu",
        "keyword": "隆鼻多少钱",
        "keyword_category": "price",
        "landing_page": "lp1",
        "region": "广东省广州市",
        "n_messages": 1,
        "n_visitor": 1,
        "closed": False,
        "contact_seen": False,
        "p_booked": 0.25,
        "p_arrived": 0.1,
        "reasons": orjson.dumps({"booked": [["x", 1]]}).decode(),
        "model_version": "v1",
        "updated_at": T0,
    }
    with engine.begin() as cx:
        cx.execute(old_conversations.insert().values(chat))
        cx.execute(
            old_events.insert(),
            [
                {
                    "conversation_id": "chat-1",
                    "seq": None,
                    "kind": "open",
                    "at": T0,
                    "recorded_at": T0,
                    "actor": "k",
                    "payload": "{}",
                },
                {
                    "conversation_id": "chat-1",
                    "seq": 0,
                    "kind": "message",
                    "at": T0,
                    "recorded_at": T0,
                    "actor": "k",
                    "payload": orjson.dumps({"role": "visitor", "text": "多少钱"}).decode(),
                },
            ],
        )
        cx.execute(
            old_suggestions.insert().values(
                id="s-1", conversation_id="chat-1", seq=0, rank=0, text="您好，先来面诊", created_at=T0
            )
        )
        cx.execute(
            old_api_keys.insert().values(
                name="desk",
                role="consultant",
                consultant_id="c01",
                key_prefix="abcdef01",
                key_hash="f" * 64,
                created_at=T0,
            )
        )
    return chat


def _schema_diff(engine) -> list:
    """What autogenerate finds between the database and the code's tables (``alembic check``)."""
    import yuyue.serving.migrations  # noqa: F401

    with engine.connect() as cx:
        mc = MigrationContext.configure(
            cx,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, type_, *_: (
                    name in SCHEMA_TABLES
                    if type_ == "table"
                    else getattr(obj, "table", None) is None or obj.table.name in SCHEMA_TABLES
                ),
            },
        )
        return compare_metadata(mc, metadata)


def test_an_old_database_is_upgraded_and_keeps_its_chats(engine):
    chat = _old_database(engine)
    if engine.dialect.name == "postgresql":  # SQLite does not enforce lengths
        with pytest.raises(sa.exc.DataError), engine.begin() as cx:
            cx.execute(old_conversations.update().values(region=LONG_REGION))
    assert current_revision(engine) is None

    lines = upgrade_schema(engine)
    assert "stamped as the baseline 0001_baseline" in lines[0]
    assert current_revision(engine) == head_revision() != BASELINE

    with engine.connect() as cx:
        row = cx.execute(sa.select(conversations).where(conversations.c.id == "chat-1")).mappings().one()
        kinds = cx.execute(sa.select(events.c.kind, events.c.seq).order_by(events.c.id)).all()
        shown = cx.execute(sa.select(suggestions.c.id, suggestions.c.text)).all()
    assert {k: row[k] for k in chat} == chat
    assert kinds == [("open", None), ("message", 0)]
    assert shown == [("s-1", "您好，先来面诊")]

    inspector = sa.inspect(engine)
    region = next(c for c in inspector.get_columns("conversations") if c["name"] == "region")
    assert region["type"].length == 256
    assert {i["name"] for i in inspector.get_indexes("conversations")} == {
        "ix_conversations_hospital",
        "ix_conversations_department",
        "ix_conversations_consultant_id",
        "ix_conversations_started_at",
    }
    with engine.begin() as cx:
        cx.execute(conversations.update().values(region=LONG_REGION))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as cx:  # unique (conversation_id, kind, seq)
        cx.execute(
            events.insert().values(
                conversation_id="chat-1", seq=0, kind="message", at=T0, recorded_at=T0, payload="{}"
            )
        )
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as cx:  # CHECK on role
        cx.execute(
            old_api_keys.insert().values(
                name="x", role="root", key_prefix="abcdef02", key_hash="e" * 64, created_at=T0
            )
        )
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as cx:  # one active key per name
        cx.execute(
            old_api_keys.insert().values(
                name="desk", role="admin", key_prefix="abcdef03", key_hash="d" * 64, created_at=T0
            )
        )

    # the server starts on it, and the store writes the next message of the old chat
    create_all(engine)
    store = EventStore(engine)
    update = {
        "last_at": T0,
        "visitor": 1,
        "contact": False,
        "p_booked": 0.3,
        "p_arrived": 0.1,
        "reasons": "{}",
        "model_version": "v2",
    }
    store.append_message("chat-1", 1, {"role": "visitor", "text": "在吗"}, [], update, "k")
    assert [m["text"] for m in store.messages("chat-1")] == ["多少钱", "在吗"]
    assert KeyStore(engine).list()[0].name == "desk"
    assert _schema_diff(engine) == []
    assert upgrade_schema(engine) == [f"already at the head revision {head_revision()}"]


def test_an_unversioned_database_with_some_tables_gets_the_missing_ones(engine):
    """``yuyue keys create`` on a fresh install by the old code created api_keys alone."""
    old.create_all(engine, tables=[old_api_keys])
    lines = upgrade_schema(engine)
    assert "created the missing tables conversations, events, suggestions" in lines[0]
    assert current_revision(engine) == head_revision()
    assert _schema_diff(engine) == []


def test_the_server_refuses_a_database_behind_the_code(engine):
    _old_database(engine)
    for start in (create_all, prepare_schema, lambda e: KeyStore(e)):
        with pytest.raises(SchemaBehind, match="no schema revision.*Run `yuyue store upgrade`"):
            start(engine)
    assert current_revision(engine) is None  # refused, not migrated
    with engine.begin() as cx:
        command.stamp(alembic_config(cx), BASELINE)
    with pytest.raises(SchemaBehind, match=f"at schema revision {BASELINE}, behind.*`yuyue store upgrade`"):
        create_all(engine)
    upgrade_schema(engine)
    assert prepare_schema(engine) == "current"


def test_a_database_from_a_newer_version_is_refused(engine):
    prepare_schema(engine)
    with engine.begin() as cx:
        cx.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(SchemaUnknown, match="'9999_future', which this Yuyue does not know"):
        create_all(engine)
    with pytest.raises(SchemaUnknown):
        upgrade_schema(engine)


def test_a_fresh_database_is_created_at_head(engine):
    assert prepare_schema(engine) == "created"
    assert current_revision(engine) == head_revision()
    assert SCHEMA_TABLES <= set(sa.inspect(engine).get_table_names())
    assert prepare_schema(engine) == "current"
    assert _schema_diff(engine) == []


def _table_of(entry: tuple) -> str | None:
    """The table an autogenerate entry (``("add_table", table)``, ``("add_index", index)``) is about."""
    obj = entry[1]
    return obj.name if entry[0] == "add_table" else getattr(getattr(obj, "table", None), "name", None)


def test_the_migrations_head_equals_the_code(engine):
    """Every revision in turn from an empty database gives the tables the code declares."""
    lines = upgrade_schema(engine)
    assert lines[0] == "empty database: creating the schema"
    assert current_revision(engine) == head_revision()
    assert _schema_diff(engine) == []
    # and the baseline alone is the old schema
    with engine.begin() as cx:
        command.downgrade(alembic_config(cx), BASELINE)
    diff = _schema_diff(engine)  # the check sees what the baseline lacks: later tables, the wider region
    later = SCHEMA_TABLES - BASELINE_TABLES
    added = {d[1].name for d in diff if isinstance(d, tuple) and d[0] == "add_table"}
    assert added == later, diff
    diff = [d for d in diff if not (isinstance(d, tuple) and _table_of(d) in later)]
    # 0004_reviews: suggestions.reply_id (and its index), 0009_key_hospitals: api_keys.hospitals are
    # later than the baseline too
    reply_id = [
        d
        for d in diff
        if isinstance(d, tuple)
        and (
            d[0] == "add_column"
            and d[3].name in ("reply_id", "hospitals")
            or d[0] == "add_index"
            and d[1].name == "ix_suggestions_reply_id"
        )
    ]
    assert len(reply_id) == 3, diff
    diff = [d for d in diff if not any(d is r for r in reply_id)]
    assert [(d[0][0], d[0][3]) for d in diff] == [("modify_type", "region")], diff
    with engine.connect() as cx:
        assert compare_metadata(MigrationContext.configure(cx, opts={"compare_type": True}), old) == []


def test_every_table_of_the_code_is_under_migration():
    import yuyue.serving.auth  # noqa: F401
    import yuyue.serving.store  # noqa: F401

    declared = {t for t in metadata.tables if not t.startswith("test_")}  # test_db.py's probe tables
    assert declared == SCHEMA_TABLES


def test_store_cli_current_and_upgrade(sqlite_url):
    from yuyue.serving.db import make_engine

    engine = make_engine(sqlite_url)
    _old_database(engine)
    engine.dispose()
    runner = CliRunner()
    result = runner.invoke(store_app, ["current", "--url", sqlite_url])
    assert result.exit_code == 0 and result.stdout.splitlines()[0] == "unversioned"
    result = runner.invoke(store_app, ["upgrade", "--url", sqlite_url])
    assert result.exit_code == 0, result.output
    assert "stamped as the baseline 0001_baseline" in result.stdout
    assert f"upgraded unversioned -> {head_revision()}" in result.stdout
    result = runner.invoke(store_app, ["current", "--url", sqlite_url])
    assert result.exit_code == 0 and result.stdout.strip() == head_revision()
    result = runner.invoke(store_app, ["upgrade", "--url", "mysql://x@y/z"])
    assert result.exit_code == 1 and "unsupported database URL" in result.output
