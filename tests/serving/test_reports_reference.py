"""The desk reports equal the code they replaced (issue 17): the reference below is the previous
implementation, which read every chat's events at report time (its SQL timing and suggestion queries,
the compliance verdicts, the concerns re-derived from the stored texts), kept here verbatim but for
its per-process cache and its cap on the chats whose texts one report read. On a simulated store
written through the API (SQLite, and PostgreSQL + Redis under the ``integration`` marker) every
consultant and source report of the summary-based code equals the reference's, number for number;
so does the summary rebuilt from the events (what the migration does for an existing store)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import date
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from yuyue.features.signals import (
    CONCERN_ANSWERS,
    CONCERN_TRIGGERS,
    CONCERNS,
    consultant_signals,
    visitor_signals,
)
from yuyue.features.state import analyse_text
from yuyue.serving.compliance_report import verdict
from yuyue.serving.report_summary import seconds as _seconds
from yuyue.serving.reports import (
    PERIODS,
    SOURCE_DIMENSIONS,
    Chat,
    DayRange,
    _desc,
    _fold,
    _source_view,
    consultant_report,
    period_of,
    source_report,
)
from yuyue.serving.store import EventStore, Filters, conversations, events, suggestions

_VISITOR = '%"role":"visitor"%'
_CONSULTANT = '%"role":"consultant"%'
_FLAGGED = '%"compliance":{"allowed":false%'
_VERDICT = '%"compliance":{%'
_BATCH = 500


# ---- the reference: the previous implementation ------------------------------------------------
def _json_float(col: Any, key: str, dialect: str) -> Any:
    if dialect == "postgresql":
        return sa.cast(col, sa.JSON)[key].as_float()
    return sa.type_coerce(col, sa.JSON)[key].as_float()


def _json_text(col: Any, key: str, dialect: str) -> Any:
    if dialect == "postgresql":
        return sa.cast(col, sa.JSON)[key].as_string()
    return sa.type_coerce(col, sa.JSON)[key].as_string()


def _concat(value: Any, dialect: str) -> Any:
    """The group's values as one comma-separated text (waits per chat)."""
    if dialect == "postgresql":
        return sa.func.string_agg(sa.cast(sa.func.round(sa.cast(value, sa.Numeric), 1), sa.Text), ",")
    return sa.func.group_concat(sa.func.round(value, 1), ",")


def _read_chats(cx: Connection, store: EventStore, ids: list[str]) -> list[Chat]:
    """Chats ``ids`` read from the store (one batch)."""
    dialect = store.engine.dialect.name
    out = {r[0]: _chat_of_row(r) for r in cx.execute(_chat_query(ids, dialect))}
    _add_timings(out, cx.execute(_timing_query(ids, dialect)))
    _add_suggestions(out, cx.execute(_suggestion_query(ids)))
    _check_unchecked(cx, out)
    return list(out.values())


def _chat_query(ids: list[str], dialect: str) -> Any:
    """One row per chat: its conversation columns and its expected scores (the ``open`` event's lead
    scores, ``p_booked_lead`` / ``p_arrived_lead``, else its open-time ``p_booked`` / ``p_arrived``)."""
    c = conversations.c
    opened = sa.alias(events, "o")
    contact = sa.or_(c.contact.is_(True), c.contact_seen.is_(True))
    return (
        sa.select(
            c.id,
            c.consultant_id,
            c.day,
            c.engine,
            c.keyword_category,
            c.landing_page,
            c.region,
            _json_text(c.visit, "landing_url", dialect),
            c.n_messages,
            c.n_visitor > 0,
            contact,
            sa.func.coalesce(c.booked, False),
            sa.func.coalesce(c.arrived, False),
            sa.case((c.n_messages > 0, _seconds(c.last_at, c.started_at, dialect)), else_=None),
            *(
                sa.func.coalesce(  # the lead's score; chats opened before it was stored: the open-time one
                    _json_float(opened.c.payload, f"p_{t}_lead", dialect),
                    _json_float(opened.c.payload, f"p_{t}", dialect),
                )
                for t in ("booked", "arrived")
            ),
            c.hospital,
            c.department,
        )
        .select_from(
            conversations.outerjoin(
                opened, sa.and_(opened.c.conversation_id == c.id, opened.c.kind == "open")
            )
        )
        .where(c.id.in_(ids))
    )


def _chat_of_row(r: Any) -> Chat:
    """A :class:`Chat` from a row of :func:`_chat_query` (timings and counts filled later)."""
    return Chat(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], int(r[8] or 0), bool(r[9]), bool(r[10]),
        bool(r[11]), bool(r[12]),
        None if r[13] is None else max(0.0, float(r[13])),
        None if r[14] is None else float(r[14]),
        None if r[15] is None else float(r[15]),
        hospital=r[16], department=r[17],
    )  # fmt: skip


def _message_runs(ids: list[str]) -> Any:
    """The chats' visitor and consultant messages (system messages left out), each with who wrote
    it (``v``: 1 visitor, 0 consultant), the role of the message before (``pv``), the first visitor
    message's seq (``fvseq``), when the current unanswered run of visitor messages started
    (``run_start``) and its compliance marks (``flagged``, ``unchecked``)."""
    e = events.c
    role = sa.case((e.payload.like(_VISITOR), 1), (e.payload.like(_CONSULTANT), 0), else_=None)
    m = (
        sa.select(
            e.conversation_id.label("cid"),
            e.seq.label("seq"),
            e.at.label("at"),
            role.label("v"),
            sa.case((e.payload.like(_FLAGGED), 1), else_=0).label("flagged"),
            sa.case((e.payload.like(_VERDICT), 0), else_=1).label("unchecked"),
        )
        .where(e.kind == "message", e.conversation_id.in_(ids))
        .subquery("m")
    )
    m_rows = sa.select(m).where(m.c.v.is_not(None)).subquery("mr")
    w = sa.select(
        m_rows,
        sa.func.lag(m_rows.c.v).over(partition_by=m_rows.c.cid, order_by=m_rows.c.seq).label("pv"),
        sa.func.min(sa.case((m_rows.c.v == 1, m_rows.c.seq), else_=None))
        .over(partition_by=m_rows.c.cid)
        .label("fvseq"),
    ).subquery("w")
    starts_run = sa.and_(w.c.v == 1, sa.or_(w.c.pv.is_(None), w.c.pv == 0))
    return sa.select(
        w,
        sa.func.max(sa.case((starts_run, w.c.at), else_=None))
        .over(partition_by=w.c.cid, order_by=w.c.seq, rows=(None, 0))
        .label("run_start"),
    ).subquery("x")


def _timing_query(ids: list[str], dialect: str) -> Any:
    """Per chat: the first response (s), the reply waits (comma-separated), consultant messages,
    flagged and unchecked ones."""
    x = _message_runs(ids)
    consultant = x.c.v == 0
    reply = sa.and_(consultant, x.c.pv == 1)
    return sa.select(
        x.c.cid,
        _seconds(
            sa.func.min(sa.case((sa.and_(consultant, x.c.seq > x.c.fvseq), x.c.at), else_=None)),
            sa.func.min(sa.case((x.c.v == 1, x.c.at), else_=None)),
            dialect,
        ),
        _concat(sa.case((reply, _seconds(x.c.at, x.c.run_start, dialect)), else_=None), dialect),
        sa.func.sum(sa.case((consultant, 1), else_=0)),
        sa.func.sum(sa.case((consultant, x.c.flagged), else_=0)),
        sa.func.sum(sa.case((consultant, x.c.unchecked), else_=0)),
    ).group_by(x.c.cid)


def _suggestion_query(ids: list[str]) -> Any:
    """Per chat: suggestions shown, those with feedback, those used (as is or edited)."""
    s = suggestions.c
    return (
        sa.select(
            s.conversation_id,
            sa.func.count(),
            sa.func.sum(sa.case((s.feedback.is_not(None), 1), else_=0)),
            sa.func.sum(sa.case((s.feedback.in_(("used", "edited")), 1), else_=0)),
        )
        .where(s.conversation_id.in_(ids))
        .group_by(s.conversation_id)
    )


def _add_timings(chats: dict[str, Chat], rows: Iterable[Any]) -> None:
    """The rows of :func:`_timing_query` onto their chats."""
    for cid, first, waits, n_cons, flagged, unchecked in rows:
        chat = chats.get(cid)
        if chat is None:
            continue
        chat.first_wait_s = None if first is None else max(0.0, float(first))
        chat.waits = [max(0.0, float(w)) for w in waits.split(",")] if waits else []
        chat.consultant_msgs, chat.flagged, chat.unchecked = int(n_cons), int(flagged), int(unchecked)


def _add_suggestions(chats: dict[str, Chat], rows: Iterable[Any]) -> None:
    """The rows of :func:`_suggestion_query` onto their chats."""
    for cid, shown, answered, n_used in rows:
        chat = chats.get(cid)
        if chat is not None:
            chat.shown, chat.with_feedback, chat.used = int(shown), int(answered or 0), int(n_used or 0)


def _check_unchecked(cx: Connection, chats: dict[str, Chat]) -> None:
    """Consultant messages stored without a compliance verdict (before the check ran at send time):
    checked now with the compliance report's own :func:`verdict`."""
    ids = [cid for cid, chat in chats.items() if chat.unchecked]
    e = events.c
    for i in range(0, len(ids), 500):
        query = sa.select(e.conversation_id, e.payload).where(
            e.kind == "message",
            e.conversation_id.in_(ids[i : i + 500]),
            e.payload.like(_CONSULTANT),
            sa.not_(e.payload.like(_VERDICT)),
        )
        for cid, payload in cx.execute(query).all():
            message = orjson.loads(payload)
            if message.get("role") == "consultant" and not verdict(message)["allowed"]:
                chats[cid].flagged += 1


def concerns_of(messages: Iterable[tuple[str, str]]) -> tuple[frozenset[str], frozenset[str]]:
    """Concerns a chat's visitor raised and those a consultant message answered after they were
    raised, from ``(role, text)`` in order: the rule of ``features.state`` (a visitor trigger opens
    a concern, the consultant's answer signal closes it)."""
    raised: set[str] = set()
    answered: set[str] = set()
    open_: set[str] = set()
    for role, text in messages:
        if role not in ("visitor", "consultant"):
            continue
        norm, _, tokens = analyse_text(text)
        if role == "visitor":
            sigs = visitor_signals(norm, list(tokens))
            for c in CONCERNS:
                if any(s in sigs for s in CONCERN_TRIGGERS[c]):
                    raised.add(c)
                    open_.add(c)
        elif open_:
            sigs = consultant_signals(norm, list(tokens))
            for c in list(open_):
                if CONCERN_ANSWERS[c] in sigs:
                    open_.discard(c)
                    answered.add(c)
    return frozenset(raised), frozenset(answered)


def _fill_concerns(store: EventStore, chats: list[Chat]) -> None:
    todo = [c for c in chats if c.chatted]
    e = events.c
    for i in range(0, len(todo), _BATCH):
        batch = {chat.id: chat for chat in todo[i : i + _BATCH]}
        query = (
            sa.select(e.conversation_id, e.payload)
            .where(e.kind == "message", e.conversation_id.in_(list(batch)))
            .order_by(e.conversation_id, e.seq)
        )
        texts: dict[str, list[tuple[str, str]]] = {cid: [] for cid in batch}
        with store.engine.connect() as cx:
            for cid, payload in cx.execute(query):
                message = orjson.loads(payload)
                texts[cid].append((str(message.get("role")), str(message.get("text") or "")))
        for cid, messages in texts.items():
            batch[cid].concerns = concerns_of(messages)


def _reference_chats(store: EventStore, filters: Filters) -> list[Chat]:
    with store.engine.connect() as cx:
        ids = list(cx.execute(sa.select(conversations.c.id).where(*filters.where())).scalars())
        out = []
        for i in range(0, len(ids), _BATCH):
            out += _read_chats(cx, store, ids[i : i + _BATCH])
    _fill_concerns(store, out)
    return out


def reference_consultants(store: EventStore, days: DayRange, period: str) -> dict[str, Any]:
    chats = _reference_chats(store, days.filters())
    rows, truncated, total = _fold(
        chats,
        lambda chat: (period_of(chat.day, period), chat.consultant_id),
        5000,
        lambda kv: (_desc(kv[0][0]), -kv[1]["chats"], kv[0][1] or ""),
    )
    return {"total": total, "rows": [{"period": p, "consultant_id": c, **v} for (p, c), v in rows]}


def reference_sources(store: EventStore, days: DayRange, by: str, period: str | None) -> dict[str, Any]:
    chats = _reference_chats(store, days.filters())

    def key(chat: Chat) -> tuple[str | None, str | None]:
        value = chat.paid if by == "paid" else getattr(chat, by)
        return (period_of(chat.day, period) if period else None, value)

    rows, truncated, total = _fold(
        chats, key, 5000, lambda kv: (_desc(kv[0][0] or ""), -kv[1]["visits"], kv[0][1] or "")
    )
    return {"total": total, "rows": [{"period": p, "source": v, **_source_view(w)} for (p, v), w in rows]}


# ---- a simulated desk written through the API --------------------------------------------------
VISITOR_TEXTS = (
    "隆鼻多少钱",
    "做完疼不疼",
    "手术安全吗，有没有风险",
    "恢复期要多久",
    "效果能保持几年",
    "你们医院在哪里，远不远",
    "会不会被别人知道",
    "我想了解一下",
    "好的谢谢",
    "我电话13812345678",
)
CONSULTANT_TEXTS = (
    "您好，请问有什么可以帮您？",
    "费用要看方案，面诊后医生给您具体报价",
    "手术由经验丰富的医生操作，术前会做全面检查",
    "一般一周左右可以消肿",
    "我们地址在市中心，地铁可以到",
    "保证百分之百成功，绝对没有风险",
    "您方便留个电话吗？",
    "我们严格保护您的隐私",
)
URLS = (
    None,
    "https://m.example.com/longbi/?bdjj=7",
    "https://m.example.com/longbi/?sgjj=2",
    "https://m.example.com/",
)
DAYS = ("2025-03-30", "2025-03-31", "2025-04-01")  # a Sunday, then a new week and a new month


def _post(api, path, body, who):
    r = api.post(path, json=body, headers=api.keys[who])
    assert r.status_code in (200, 201), r.text
    return r.json()


def _chat(api, rng, i):
    """One chat: opened by c01, c02 or (without consultant, then claimed by c01) a supervisor."""
    owner = rng.choice(("c01", "c02", "sup"))
    day, hour = rng.choice(DAYS), rng.randrange(8, 22)
    t = rng.randrange(3600)
    visit = {
        "engine": rng.choice(("baidu", "sogou", "so360")),
        "region": rng.choice(("浙江省杭州市", "上海市")),
    }
    visit |= {"keyword": rng.choice(("杭州隆鼻多少钱", "隆鼻医院", "鼻子整形"))}
    url = rng.choice(URLS)
    if url:
        visit["landing_url"] = url
    cid = f"sim-{i:03d}"
    body = {"conversation_id": cid, "started_at": f"{day}T{hour:02d}:00:00+08:00", "visit": visit}
    _post(api, "/v1/conversations", body | {"department": "整形美容", "project": "隆鼻"}, owner)
    who = "c01" if owner == "sup" else owner
    shown = []
    for _ in range(rng.choice((0, 1, 3, 5, 8))):
        t += rng.randrange(1, 400)
        role = rng.choice(("visitor", "visitor", "consultant"))
        text = rng.choice(VISITOR_TEXTS if role == "visitor" else CONSULTANT_TEXTS)
        at = f"{day}T{hour + t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}+08:00"
        out = _post(api, f"/v1/conversations/{cid}/messages", {"role": role, "text": text, "at": at}, who)
        shown += out.get("suggestions") or []
    for s in shown:
        action = rng.choice((None, None, "used", "edited", "dismissed"))
        if action is not None:
            for act in (action, "used") if rng.random() < 0.3 else (action,):  # some changed afterwards
                body = {"action": act} | ({"final_text": "您好，费用面诊后定"} if act == "edited" else {})
                r = api.post(f"/v1/suggestions/{s['id']}/feedback", json=body, headers=api.keys[who])
                assert r.status_code in (200, 409), r.text
    outcome = rng.choice(({}, {"contact": True}, {"booked": True}, {"booked": True, "arrived": True}))
    if outcome:
        _post(api, f"/v1/conversations/{cid}/outcome", outcome, who)


@pytest.fixture
def desk(api):
    rng = random.Random(17)
    for i in range(36):
        _chat(api, rng, i)
    return api.state.service.store


SPAN = DayRange(date.fromisoformat(DAYS[0]), date.fromisoformat(DAYS[-1]))


def _same(new: dict[str, Any], ref: dict[str, Any]) -> None:
    assert new["total"] == ref["total"]
    assert len(new["rows"]) == len(ref["rows"])
    for got, want in zip(new["rows"], ref["rows"], strict=True):
        assert got == want


def _check_all(store: EventStore) -> None:
    for period in PERIODS:
        new = consultant_report(store, SPAN, period, Filters(), limit=5000)
        _same(new, reference_consultants(store, SPAN, period))
    for by in SOURCE_DIMENSIONS:
        for period in (None, "week"):
            new = source_report(store, SPAN, by, Filters(), period, limit=5000)
            _same(new, reference_sources(store, SPAN, by, period))


def test_reports_equal_the_reference(desk):
    store = desk
    sample = consultant_report(store, SPAN, "week", Filters(), limit=5000)
    total = sample["total"]  # the simulation covers what the numbers count
    assert total["chats"] > 15 and total["visits"] > total["chats"] and total["replies"] > 5
    assert total["compliance_flagged"] > 0 and total["suggestions_used"] > 0 and total["booked"] > 0
    assert sum(c["raised"] for c in total["concerns"].values()) > 5
    assert sum(c["answered"] for c in total["concerns"].values()) > 0
    assert {r["period"] for r in sample["rows"]} == {"2025-03-24", "2025-03-31"}
    # the supervisor's chats that got messages were claimed by c01; the others have no consultant
    assert {r["consultant_id"] for r in sample["rows"]} == {"c01", "c02", None}
    _check_all(store)


def test_rebuilt_summaries_equal_the_live_ones(desk):
    """What the migration does for an existing store (replay every chat's events) gives the summaries the
    store kept while the chats were written; a chat without one is rebuilt by the next report."""
    from yuyue.serving.report_summary import chat_summaries, rebuild

    store = desk
    with store.engine.connect() as cx:
        live = {r[0]: r for r in cx.execute(sa.select(chat_summaries)).all()}
    with store.engine.begin() as cx:
        ids = list(cx.execute(sa.select(conversations.c.id)).scalars())
        cx.execute(chat_summaries.delete())
        assert rebuild(cx, ids) == len(ids) == len(live)
    with store.engine.connect() as cx:
        rebuilt = {r[0]: r for r in cx.execute(sa.select(chat_summaries)).all()}
    assert rebuilt == live
    with store.engine.begin() as cx:
        cx.execute(chat_summaries.delete().where(chat_summaries.c.conversation_id.in_(ids[:5])))
    _check_all(store)
    with store.engine.connect() as cx:
        assert cx.execute(sa.select(sa.func.count()).select_from(chat_summaries)).scalar() == len(ids)
