"""The event store's per-message write, on SQLite and on a real PostgreSQL.

PostgreSQL writes a message as one statement (data-modifying CTEs) and SQLite as a
three-statement transaction; both must store the same rows and refuse the same
writes without leaving anything behind.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa

from yuyue.serving.db import create_all
from yuyue.serving.store import Conflict, EventStore, conversations, events, suggestions

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(engine) -> EventStore:
    create_all(engine)
    return EventStore(engine)


def _open(store: EventStore, cid: str) -> None:
    store.open({"id": cid, "started_at": T0, "last_at": T0, "day": "2025-03-01", "n_messages": 0}, "k", T0)


def _write(store: EventStore, cid: str, seq: int, n_shown: int = 2, *, visitor: bool = True, contact=False):
    at = T0 + timedelta(seconds=10 * (seq + 1))
    shown = [
        {
            "id": f"{cid}-{seq}-{r}",
            "rank": r,
            "text": f"建议 {seq}.{r}：先来面诊",
            "source": "mined" if r else None,
        }
        for r in range(n_shown)
    ]
    message = {
        "role": "visitor" if visitor else "consultant",
        "text": f"第{seq}条",
        "suggestions": [s["id"] for s in shown],
    }
    update = {
        "last_at": at,
        "visitor": int(visitor),
        "contact": contact,
        "p_booked": 0.1 * (seq + 1),
        "p_arrived": 0.05 * (seq + 1),
        "reasons": orjson.dumps({"booked": [["x", seq]]}).decode(),
        "model_version": f"v{seq}",
    }
    store.append_message(cid, seq, message, shown, update, "c01")
    return at, shown, message


def _rows(store: EventStore, cid: str) -> tuple[list, list, dict]:
    with store.engine.connect() as cx:
        ev = cx.execute(
            sa.select(events.c.seq, events.c.kind, events.c.at, events.c.actor, events.c.payload)
            .where(events.c.conversation_id == cid)
            .order_by(events.c.id)
        ).all()
        sg = cx.execute(
            sa.select(
                suggestions.c.id,
                suggestions.c.seq,
                suggestions.c.rank,
                suggestions.c.text,
                suggestions.c.source,
            )
            .where(suggestions.c.conversation_id == cid)
            .order_by(suggestions.c.seq, suggestions.c.rank)
        ).all()
        chat = cx.execute(sa.select(conversations).where(conversations.c.id == cid)).mappings().one()
    return [tuple(r) for r in ev], [tuple(r) for r in sg], dict(chat)


def test_a_message_stores_its_event_suggestions_and_projection(store):
    _open(store, "a")
    at0, shown0, msg0 = _write(store, "a", 0, n_shown=3, contact=True)
    at1, _, msg1 = _write(store, "a", 1, n_shown=0, visitor=False)
    ev, sg, chat = _rows(store, "a")
    assert [(seq, kind, at, actor) for seq, kind, at, actor, _ in ev] == [
        (None, "open", T0, "k"),
        (0, "message", at0, "c01"),
        (1, "message", at1, "c01"),
    ]
    assert [orjson.loads(p) for *_, p in ev[1:]] == [msg0, msg1]
    assert sg == [(s["id"], 0, s["rank"], s["text"], s["source"]) for s in shown0]
    assert (chat["n_messages"], chat["n_visitor"], chat["contact_seen"], chat["last_at"]) == (2, 1, True, at1)
    assert (chat["p_booked"], chat["p_arrived"], chat["model_version"]) == (
        pytest.approx(0.2),
        pytest.approx(0.1),
        "v1",
    )
    assert orjson.loads(chat["reasons"]) == {"booked": [["x", 1]]}


def test_contact_seen_stays_once_seen(store):
    _open(store, "c")
    _write(store, "c", 0, contact=True)
    _write(store, "c", 1, contact=False)
    assert _rows(store, "c")[2]["contact_seen"] is True


@pytest.mark.parametrize("seq", [1, 3], ids=["already-stored", "gap"])
def test_a_message_out_of_turn_is_refused_and_writes_nothing(store, seq):
    _open(store, "b")
    _write(store, "b", 0)
    _write(store, "b", 1)
    before = _rows(store, "b")
    with pytest.raises(Conflict, match="'b'"):
        _write(store, "b", seq)  # message 2 is next
    assert _rows(store, "b") == before


def test_a_closed_chat_takes_no_message_and_keeps_its_rows(store):
    _open(store, "d")
    _write(store, "d", 0)
    store.record("d", "close", {}, {"closed": True}, "sup", T0 + timedelta(minutes=5))
    before = _rows(store, "d")
    with pytest.raises(Conflict, match="closed"):
        _write(store, "d", 1)
    assert _rows(store, "d") == before


def test_a_message_to_an_unknown_chat_writes_nothing(store):
    with pytest.raises(Conflict, match="'ghost'"):
        _write(store, "ghost", 0)
    with store.engine.connect() as cx:
        ev = cx.execute(sa.select(events).where(events.c.conversation_id == "ghost")).all()
        sg = cx.execute(sa.select(suggestions).where(suggestions.c.conversation_id == "ghost")).all()
    assert ev == [] and sg == []


def test_a_duplicate_suggestion_id_rolls_back_the_whole_message(store):
    """One failing part (here a suggestion id that exists) leaves no event and no projection change."""
    _open(store, "e")
    _, shown, _ = _write(store, "e", 0)
    before = _rows(store, "e")
    at = T0 + timedelta(minutes=1)
    update = {
        "last_at": at,
        "visitor": 1,
        "contact": True,
        "p_booked": 0.9,
        "p_arrived": 0.9,
        "reasons": "{}",
        "model_version": "v9",
    }
    with pytest.raises(Conflict):
        store.append_message("e", 1, {"role": "visitor", "text": "x"}, [shown[0]], update, "c01")
    assert _rows(store, "e") == before
    _write(store, "e", 1)  # and the chat goes on
    assert _rows(store, "e")[2]["n_messages"] == 2
