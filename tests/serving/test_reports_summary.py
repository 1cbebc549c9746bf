"""The report summary's copy of the chat columns (issue 17: the reports read ``chat_summaries`` alone).

On chats written through the API (opened by a supervisor and claimed by the consultant who answers,
outcomes, contact data seen in a message), on SQLite and PostgreSQL: every summary holds the chat's
hospital, department, consultant, start, day, source columns and contact / booked / arrived as
``conversations`` does; migration 0010 fills them for the summaries already stored (downgraded to
0009 and upgraded again) and the reports then give the same numbers."""

from __future__ import annotations

import random

import sqlalchemy as sa
from alembic import command

from tests.serving.test_reports_reference import SPAN, _chat
from yuyue.serving.db import alembic_config
from yuyue.serving.report_summary import CHAT_COLUMNS, chat_summaries
from yuyue.serving.reports import consultant_report, source_report
from yuyue.serving.store import Filters, conversations


def _pairs(engine) -> tuple[dict, dict]:
    """Each chat's CHAT_COLUMNS in conversations and in its summary."""
    with engine.connect() as cx:
        chats = {
            r[0]: tuple(r[1:])
            for r in cx.execute(sa.select(conversations.c.id, *(conversations.c[k] for k in CHAT_COLUMNS)))
        }
        kept = {
            r[0]: tuple(r[1:])
            for r in cx.execute(
                sa.select(chat_summaries.c.conversation_id, *(chat_summaries.c[k] for k in CHAT_COLUMNS))
            )
        }
    return chats, kept


def _reports(store) -> list:
    return [
        consultant_report(store, SPAN, "day", Filters(), limit=5000),
        source_report(store, SPAN, "region", Filters(), "week", limit=5000),
        consultant_report(store, SPAN, "month", Filters(hospitals=("none",)), limit=5000),
    ]


def test_the_summary_keeps_the_chat_columns_and_0010_fills_them(api):
    rng = random.Random(5)
    for i in range(16):
        _chat(api, rng, i)
    store = api.state.service.store
    chats, kept = _pairs(store.engine)
    assert kept == chats and len(chats) == 16
    columns = list(zip(*chats.values(), strict=True))
    by_name = dict(zip(CHAT_COLUMNS, columns, strict=True))
    # the simulation covers claims (no consultant at open), outcomes and contact data seen in a message
    assert {"c01", "c02", None} >= set(by_name["consultant_id"]) >= {"c01", "c02"}
    assert True in by_name["booked"] and True in by_name["contact_seen"]
    before = _reports(store)
    assert before[0]["total"]["chats"] > 5 and before[2]["total"]["visits"] == 0

    with store.engine.begin() as cx:
        command.downgrade(alembic_config(cx), "0009_key_hospitals")
    with store.engine.connect() as cx:
        names = {c["name"] for c in sa.inspect(cx).get_columns("chat_summaries")}
        assert not names & set(CHAT_COLUMNS)
        assert not {ix["name"] for ix in sa.inspect(cx).get_indexes("chat_summaries")} & {
            "ix_chat_summaries_started_at"
        }
    with store.engine.begin() as cx:
        command.upgrade(alembic_config(cx), "head")
    chats, kept = _pairs(store.engine)
    assert kept == chats
    assert _reports(store) == before
