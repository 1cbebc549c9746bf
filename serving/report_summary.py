"""The desk reports' per-chat summary (``chat_summaries``), kept current by the event store.

One row per chat holding what the reports read besides the ``conversations`` row (which is current
anyway): the lead's expected booking / arrival (the ``open`` event's ``p_booked_lead`` /
``p_arrived_lead``, else its ``p_booked`` / ``p_arrived``), paid vs organic (the landing URL's click
parameters, read at open), an imported 对话等级 (``grade``) where the open payload holds one, the
timings (the first visitor message, the first consultant message after it, the reply waits), the
concerns raised / answered (bit ``i`` = :data:`features.signals.CONCERNS` ``[i]``), compliance
warnings and the suggestions shown / with feedback / used; and a copy of the chat's own columns the
reports filter and group by (:data:`CHAT_COLUMNS`: hospital, department, consultant, start, day,
source, contact / booked / arrived), so a report reads this table alone (issue 17: no join).

The store writes it in the transaction of the event that changes it (on PostgreSQL inside the one
message statement): :func:`open_row` with the ``open`` event, :func:`after_message` with each message
(a single ``UPDATE`` whose ``SET`` reads the row's previous values, so no read is needed; it also
keeps ``contact_seen``), :func:`after_feedback` with a suggestion's feedback; the outcome and claim
copy the chat columns they change (``store._copy_to_summary``). Each message is read once, when it is stored:
the concerns come from the live path's text analysis (cached by text) and signal lexicon.

:func:`rebuild` replays chats from their events through the same statements: the migration that
adds the table (existing stores), and the reports for any chat in range whose summary is missing or
has folded another number of messages than the chat holds (written by an older version, or seeded
directly). An erasure masks the stored texts but keeps the summary (the concerns read from the
original text).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from yuyue.serving.db import UTCDateTime, metadata

chat_summaries = sa.Table(
    "chat_summaries",
    metadata,
    sa.Column("conversation_id", sa.String(128), primary_key=True),
    sa.Column("paid", sa.String(8), nullable=False),  # paid | organic | unknown (no landing URL)
    sa.Column("p_booked_lead", sa.Float),
    sa.Column("p_arrived_lead", sa.Float),
    sa.Column("grade", sa.String(8)),  # 对话等级 imported with the chat: 极佳 | 较好 | 一般
    sa.Column("n_messages", sa.Integer, nullable=False, default=0),  # messages folded
    sa.Column(
        "last_role", sa.SmallInteger
    ),  # of the last visitor/consultant message: 1 visitor, 0 consultant
    sa.Column("first_visitor_at", UTCDateTime),
    # seconds as text (what the reports concatenate per group, so the grouping formats no numbers): to the
    # first consultant message after the first visitor one; from the chat's start to its last message
    sa.Column("first_wait_s", sa.Text),
    sa.Column("duration_s", sa.Text),
    sa.Column("run_start_at", UTCDateTime),  # the first visitor message not answered yet
    sa.Column("waits", sa.Text),  # seconds each reply took (one decimal), comma-separated
    sa.Column("replies", sa.Integer, nullable=False, default=0),
    sa.Column("consultant_msgs", sa.Integer, nullable=False, default=0),
    sa.Column("flagged", sa.Integer, nullable=False, default=0),
    sa.Column("concerns_raised", sa.Integer, nullable=False, default=0),
    sa.Column("concerns_open", sa.Integer, nullable=False, default=0),
    sa.Column("concerns_answered", sa.Integer, nullable=False, default=0),
    sa.Column("shown", sa.Integer, nullable=False, default=0),
    sa.Column("with_feedback", sa.Integer, nullable=False, default=0),
    sa.Column("used", sa.Integer, nullable=False, default=0),
    # the chat's own columns the reports filter and group by, copied from ``conversations`` in the
    # transaction that writes them there (open, message, outcome, claim): a report reads this table alone
    # (migration 0010). Nullable: a summary whose chat is gone keeps NULLs (and no report selects it)
    sa.Column("hospital", sa.String(128)),
    sa.Column("department", sa.String(64)),
    sa.Column("consultant_id", sa.String(128)),
    sa.Column("started_at", UTCDateTime),
    sa.Column("day", sa.String(10)),  # local date of started_at
    sa.Column("engine", sa.String(32)),
    sa.Column("keyword_category", sa.String(32)),
    sa.Column("landing_page", sa.String(32)),
    sa.Column("region", sa.String(256)),
    sa.Column("contact_seen", sa.Boolean),
    sa.Column("contact", sa.Boolean),
    sa.Column("booked", sa.Boolean),
    sa.Column("arrived", sa.Boolean),
    # a report's range is on started_at, narrowed by the caller's hospitals or a consultant's own chats
    sa.Index("ix_chat_summaries_started_at", "started_at"),
    sa.Index("ix_chat_summaries_hospital_started_at", "hospital", "started_at"),
    sa.Index("ix_chat_summaries_consultant_id_started_at", "consultant_id", "started_at"),
)

#: the ``conversations`` columns the summary carries (same names)
CHAT_COLUMNS: tuple[str, ...] = (
    "hospital",
    "department",
    "consultant_id",
    "started_at",
    "day",
    "engine",
    "keyword_category",
    "landing_page",
    "region",
    "contact_seen",
    "contact",
    "booked",
    "arrived",
)

_USED = ("used", "edited")
_ALL_BITS = 0xFFFF


# ---- what one event adds -----------------------------------------------------------------------
def paid_of_url(url: str | None) -> str:
    """``paid`` / ``organic`` from the landing URL's click parameters (the model's own test), ``unknown``
    without a landing URL."""
    from yuyue.features.visit import _is_ad_click  # the lexicon's ad_params

    if not url:
        return "unknown"
    return "paid" if _is_ad_click(url) else "organic"


def paid_of(visit_json: str | None) -> str:
    """:func:`paid_of_url` of a visit trace (JSON)."""
    url = orjson.loads(visit_json).get("landing_url") if visit_json else None
    return paid_of_url(str(url) if url else None)


def _score(payload: dict[str, Any], target: str) -> float | None:
    value = payload.get(f"p_{target}_lead")
    if value is None:  # chats opened before the lead's score was stored: the open-time one
        value = payload.get(f"p_{target}")
    return None if value is None else float(value)


def open_row(row: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary of a chat just opened (``row``: its conversations columns, ``extra``: what the
    ``open`` event keeps besides, such as the lead's scores)."""
    payload = {**row, **(extra or {})}
    grade = payload.get("grade")
    return {
        **{k: row.get(k) for k in CHAT_COLUMNS},
        "contact_seen": bool(row.get("contact_seen")),
        "conversation_id": row["id"],
        "paid": paid_of(row.get("visit")),
        "p_booked_lead": _score(payload, "booked"),
        "p_arrived_lead": _score(payload, "arrived"),
        "grade": str(grade)[:8] if grade else None,
        "n_messages": 0,
        "replies": 0,
        "consultant_msgs": 0,
        "flagged": 0,
        "concerns_raised": 0,
        "concerns_open": 0,
        "concerns_answered": 0,
        "shown": 0,
        "with_feedback": 0,
        "used": 0,
    }


def _concern_bits(role: str, text: str) -> int:
    """Visitor: the concerns the message raises; consultant: those it answers (bit i = CONCERNS[i])."""
    from yuyue.features.signals import (
        CONCERN_ANSWERS,
        CONCERN_TRIGGERS,
        CONCERNS,
        consultant_signals,
        visitor_signals,
    )
    from yuyue.features.state import analyse_text

    norm, _, tokens = analyse_text(text)
    bits = 0
    if role == "visitor":
        sigs = visitor_signals(norm, list(tokens))
        for i, c in enumerate(CONCERNS):
            if any(s in sigs for s in CONCERN_TRIGGERS[c]):
                bits |= 1 << i
    else:
        sigs = consultant_signals(norm, list(tokens))
        for i, c in enumerate(CONCERNS):
            if CONCERN_ANSWERS[c] in sigs:
                bits |= 1 << i
    return bits


def _flagged(message: dict[str, Any]) -> bool:
    """A consultant message the guard flagged (the verdict kept with it, else checked now)."""
    stored = message.get("compliance")
    if isinstance(stored, dict):
        return stored.get("allowed") is False
    from yuyue.serving.compliance_report import verdict

    return not verdict(message)["allowed"]


def message_params(message: dict[str, Any], at: datetime, n_shown: int) -> dict[str, Any]:
    """The parameters of :func:`after_message` for one stored message (its payload, its time as the
    event stores it) and the number of suggestions stored with it."""
    role = message.get("role")
    v = 1 if role == "visitor" else 0 if role == "consultant" else None
    bits = _concern_bits(str(role), str(message.get("text") or "")) if v is not None else 0
    return {
        "_s_v": v,
        "_s_at": at,
        "_s_raise": bits if v == 1 else 0,
        "_s_answer": bits if v == 0 else 0,
        "_s_keep": _ALL_BITS & ~bits if v == 0 else _ALL_BITS,
        "_s_cons": 1 if v == 0 else 0,
        "_s_flagged": 1 if v == 0 and _flagged(message) else 0,
        "_s_shown": n_shown,
    }


def seconds(later: Any, earlier: Any, dialect: str) -> Any:
    """``later - earlier`` in seconds (SQL)."""
    if dialect == "postgresql":
        return sa.extract("epoch", later - earlier)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


def _seconds_text(later: Any, earlier: Any, dialect: str) -> Any:
    """``later - earlier`` in seconds rounded to one decimal, as text (the reports' reply waits)."""
    if dialect == "postgresql":
        return sa.cast(sa.func.round(sa.cast(seconds(later, earlier, dialect), sa.Numeric), 1), sa.Text)
    return sa.cast(sa.func.round(seconds(later, earlier, dialect), 1), sa.Text)


def after_message(dialect: str, chat_columns: bool = True) -> sa.Update:
    """The summary after one more message (the parameters of :func:`message_params`, ``_id`` and, with
    ``chat_columns``, ``_contact``: contact data seen in the message); each ``SET`` reads the row's
    values before the update (SQL), so the statement needs no read. ``chat_columns=False``: the table
    as migration 0008 made it (without the chat's columns)."""
    s = chat_summaries.c
    p = {
        k: sa.bindparam(f"_s_{k}", type_=sa.Integer)
        for k in ("v", "raise", "answer", "keep", "cons", "flagged", "shown")
    }
    at = sa.bindparam("_s_at", type_=UTCDateTime)
    visitor, consultant = p["v"] == 1, p["v"] == 0
    reply = sa.and_(consultant, s.last_role == 1)
    wait = _seconds_text(at, s.run_start_at, dialect)
    from yuyue.serving.store import conversations  # noqa: PLC0415  (the store imports this module)

    if chat_columns:
        started: Any = s.started_at
        more: dict[str, Any] = {
            "contact_seen": sa.or_(s.contact_seen, sa.bindparam("_contact", type_=sa.Boolean))
        }
    else:
        started = sa.select(conversations.c.started_at).where(conversations.c.id == s.conversation_id)
        started, more = started.scalar_subquery(), {}
    return (
        chat_summaries.update()
        .where(s.conversation_id == sa.bindparam("_id", type_=sa.String))
        .values(
            **more,
            n_messages=s.n_messages + 1,
            last_role=sa.func.coalesce(p["v"], s.last_role),
            first_visitor_at=sa.case(
                (sa.and_(visitor, s.first_visitor_at.is_(None)), at), else_=s.first_visitor_at
            ),
            first_wait_s=sa.case(
                (
                    sa.and_(consultant, s.first_wait_s.is_(None), s.first_visitor_at.is_not(None)),
                    sa.cast(seconds(at, s.first_visitor_at, dialect), sa.Text),
                ),
                else_=s.first_wait_s,
            ),
            duration_s=sa.cast(seconds(at, started, dialect), sa.Text),
            run_start_at=sa.case(
                (sa.and_(visitor, sa.func.coalesce(s.last_role, 0) == 0), at), else_=s.run_start_at
            ),
            waits=sa.case((reply, sa.func.coalesce(s.waits + ",", "") + wait), else_=s.waits),
            replies=s.replies + sa.case((reply, 1), else_=0),
            consultant_msgs=s.consultant_msgs + p["cons"],
            flagged=s.flagged + p["flagged"],
            concerns_raised=s.concerns_raised.op("|")(p["raise"]),
            concerns_answered=s.concerns_answered.op("|")(s.concerns_open.op("&")(p["answer"])),
            concerns_open=s.concerns_open.op("&")(p["keep"]).op("|")(p["raise"]),
            shown=s.shown + p["shown"],
        )
    )


def after_feedback(conversation_id: str, before: str | None, action: str) -> sa.Update:
    """The summary after a suggestion of the chat got feedback ``action`` (``before``: its feedback until
    now, None for none)."""
    s = chat_summaries.c
    used = int(action in _USED) - int(before in _USED)
    return (
        chat_summaries.update()
        .where(s.conversation_id == conversation_id)
        .values(with_feedback=s.with_feedback + int(before is None), used=s.used + used)
    )


# ---- rebuilding from the events ------------------------------------------------------------------
def stale(cx: Connection, where: Sequence[Any]) -> list[str]:
    """The chats ``where`` selects whose summary is missing or has folded another number of messages."""
    from yuyue.serving.store import conversations

    c, s = conversations.c, chat_summaries.c
    query = (
        sa.select(c.id)
        .select_from(conversations.outerjoin(chat_summaries, s.conversation_id == c.id))
        .where(*where, sa.or_(s.conversation_id.is_(None), s.n_messages != c.n_messages))
    )
    return list(cx.execute(query).scalars())


def rebuild(cx: Connection, ids: Iterable[str], batch: int = 200) -> int:
    """Replay chats ``ids`` from their events into fresh summaries (in ``cx``'s transaction); returns
    how many were written."""
    ids = list(ids)
    # migration 0008 rebuilds the table as it made it, before 0010 added the chat's columns
    chat_columns = "hospital" in {col["name"] for col in sa.inspect(cx).get_columns("chat_summaries")}
    done = 0
    for i in range(0, len(ids), batch):
        done += _rebuild_batch(cx, ids[i : i + batch], chat_columns)
    return done


def _rebuild_batch(cx: Connection, ids: list[str], chat_columns: bool) -> int:
    from yuyue.serving.store import conversations, events, suggestions

    c, e, sg = conversations.c, events.c, suggestions.c
    opens = dict(
        cx.execute(
            sa.select(e.conversation_id, e.payload).where(e.kind == "open", e.conversation_id.in_(ids))
        ).all()
    )
    rows = []
    copied = [c[k] for k in CHAT_COLUMNS] if chat_columns else []
    for chat in cx.execute(sa.select(c.id, c.visit, *copied).where(c.id.in_(ids))).mappings():
        payload = orjson.loads(opens[chat["id"]]) if chat["id"] in opens else {}
        row = open_row({**payload, **chat})
        if chat_columns:  # as the chat is now (the open event holds it as it was opened)
            row.update({k: chat[k] for k in CHAT_COLUMNS})
        else:
            row = {k: v for k, v in row.items() if k not in CHAT_COLUMNS}
        rows.append(row)
    cx.execute(chat_summaries.delete().where(chat_summaries.c.conversation_id.in_(ids)))
    if not rows:
        return 0
    cx.execute(chat_summaries.insert(), rows)
    messages = cx.execute(
        sa.select(e.conversation_id, e.at, e.payload)
        .where(e.kind == "message", e.conversation_id.in_(ids))
        .order_by(e.conversation_id, e.seq)
    )
    params = [
        {**message_params(orjson.loads(payload), at, 0), "_id": cid, "_contact": False}
        for cid, at, payload in messages
    ]
    if params:
        cx.execute(after_message(cx.dialect.name, chat_columns), params)
    used = sa.func.sum(sa.case((sg.feedback.in_(_USED), 1), else_=0))
    with_feedback = sa.func.sum(sa.case((sg.feedback.is_not(None), 1), else_=0))
    counts = cx.execute(
        sa.select(sg.conversation_id, sa.func.count(), with_feedback, used)
        .where(sg.conversation_id.in_(ids))
        .group_by(sg.conversation_id)
    )
    shown = [{"_id": cid, "_n": n, "_f": int(f or 0), "_u": int(u or 0)} for cid, n, f, u in counts]
    if shown:
        s = chat_summaries.c
        cx.execute(
            chat_summaries.update()
            .where(s.conversation_id == sa.bindparam("_id"))
            .values(shown=sa.bindparam("_n"), with_feedback=sa.bindparam("_f"), used=sa.bindparam("_u")),
            shown,
        )
    return len(rows)
