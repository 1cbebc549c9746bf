"""The desk reports: per consultant and period, and per traffic source (``GET /v1/reports/...``).

Framework-free: SQL over the event store's tables (``conversations``, ``events``, ``suggestions``),
then a Python pass that folds one row per chat into the report's groups. Every number is defined in
docs/api.md ("Desk reports"); the short form:

- **chats**: chats opened in the range with at least one visitor message (``visits``: all opened);
- **first response**: seconds from the chat's first visitor message to the first consultant message
  after it; **response**: for every consultant message that follows a visitor message, seconds from
  the first visitor message the consultant had not answered yet (median over the group's replies);
- **duration**: seconds from the chat's start to its last message (the reference desks aim at 5-30
  minutes: ``duration_5_30_share``);
- **contact / booked / arrived rates**: of chats (contact: recorded, or contact data seen in the chat);
- **expected** bookings / arrivals: the sum of the chats' *lead* scores (kept with the ``open`` event:
  the visit trace, hour, department, project, before any message, scored *without* the consultant),
  so they measure the leads a consultant got, not what the consultant made of them (every later
  score reads the consultant's messages; the open-time score reads the consultant's id, so it holds
  the consultant's learned skill). Chats opened before the lead scores were stored: their open-time
  scores. **adjusted** rate = (actual − expected) / scored chats;
- **concerns**: price, safety, pain, recovery, effect, privacy, distance, raised by the visitor and
  answered by a consultant message after it, read from the stored texts with the live path's signal
  lexicon (``features.signals``); shares are of all concerns raised, answer rates of each concern raised;
- **compliance**: consultant messages and those the guard flagged (the verdict stored with the message;
  one stored without a verdict is checked now with ``compliance_report.verdict``);
- **suggestions**: shown, with feedback, used (as is or edited) and the acceptance rate.

Bounds: a range of at most :data:`MAX_DAYS` local days, at most ``limit`` groups answered (the rest
counted in ``truncated``). Each process keeps the chats it has read (:class:`_ChatCache`) until an
event of theirs is stored, so a report reads only the chat ids in range and the chats changed since
the last one; concerns (the slow part: the texts) are read for at most :data:`CONCERN_CHATS` chats
not read yet per report, the most recent first (``concern_chats`` says how many a row covers).
"""

from __future__ import annotations

import statistics
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from yuyue.features.signals import (
    CONCERN_ANSWERS,
    CONCERN_TRIGGERS,
    CONCERNS,
    consultant_signals,
    visitor_signals,
)
from yuyue.features.state import analyse_text
from yuyue.features.visit import _is_ad_click  # the model's own paid-click test (lexicon ad_params)
from yuyue.serving.compliance_report import verdict
from yuyue.serving.service import LOCAL_TZ
from yuyue.serving.store import EventStore, Filters, conversations, events, suggestions

Period = Literal["day", "week", "month"]
PERIODS: tuple[str, ...] = ("day", "week", "month")
SOURCE_DIMENSIONS: tuple[str, ...] = ("engine", "keyword_category", "paid", "landing_page", "region")
MAX_DAYS = 366
MAX_LIMIT = 5000
DEFAULT_LIMIT = 500
CONCERN_CHATS = 2000  # chats whose texts one report reads for concerns (the most recent first)
DURATION_BAND_S = (300.0, 1800.0)  # the 5-30 minutes the reference desks aim at

_VISITOR = '%"role":"visitor"%'  # message roles in the stored JSON (a quote inside a text is escaped)
_CONSULTANT = '%"role":"consultant"%'
_FLAGGED = '%"compliance":{"allowed":false%'  # stored_compliance() writes "allowed" first
_VERDICT = '%"compliance":{%'


class ReportError(ValueError):
    """A parameter the report cannot take (the API answers 422 with the message)."""


# ---- the range ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DayRange:
    """Local days ``first`` … ``last`` (both included), in the desk's time zone."""

    first: date
    last: date

    @classmethod
    def checked(cls, first: date | None, last: date | None, today: date | None = None) -> DayRange:
        """The range asked for (default: the last 30 days up to today); :class:`ReportError` when
        ``to`` is before ``from`` or it spans more than :data:`MAX_DAYS` days."""
        today = today or datetime.now(LOCAL_TZ).date()
        last = last or today
        first = first or last - timedelta(days=29)
        if last < first:
            raise ReportError(f"'to' ({last}) is before 'from' ({first})")
        days = (last - first).days + 1
        if days > MAX_DAYS:
            raise ReportError(f"the range from {first} to {last} spans {days} days; the limit is {MAX_DAYS}")
        return cls(first, last)

    def filters(self, **kw: Any) -> Filters:
        since = datetime(self.first.year, self.first.month, self.first.day, tzinfo=LOCAL_TZ)
        end = self.last + timedelta(days=1)
        until = datetime(end.year, end.month, end.day, tzinfo=LOCAL_TZ)
        return Filters(since=since, until=until, **kw)


def period_of(day: str, period: str) -> str:
    """The period a local day (``YYYY-MM-DD``) falls in: the day, the Monday of its ISO week, or ``YYYY-MM``."""
    if period == "day":
        return day
    if period == "month":
        return day[:7]
    d = date.fromisoformat(day)
    return (d - timedelta(days=d.weekday())).isoformat()


# ---- SQL helpers (SQLite and PostgreSQL) ---------------------------------------------------
def _seconds(later: Any, earlier: Any, dialect: str) -> Any:
    if dialect == "postgresql":
        return sa.extract("epoch", later - earlier)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


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


# ---- one row per chat ----------------------------------------------------------------------
@dataclass
class Chat:
    """What the report reads of one chat."""

    id: str
    consultant_id: str | None
    day: str
    engine: str | None
    keyword_category: str | None
    landing_page: str | None
    region: str | None
    landing_url: str | None
    n_messages: int
    chatted: bool  # at least one visitor message
    contact: bool
    booked: bool
    arrived: bool
    duration_s: float | None
    p_booked0: float | None  # expected: the lead's open-time scores (without the consultant)
    p_arrived0: float | None
    first_wait_s: float | None = None
    waits: list[float] = field(default_factory=list)
    consultant_msgs: int = 0
    flagged: int = 0
    unchecked: int = 0
    shown: int = 0
    with_feedback: int = 0
    used: int = 0
    concerns: tuple[frozenset[str], frozenset[str]] | None = None  # (raised, answered)
    hospital: str | None = None
    department: str | None = None

    @property
    def paid(self) -> str:
        if not self.landing_url:
            return "unknown"
        return "paid" if _paid(self.landing_url) else "organic"


@lru_cache(maxsize=8192)
def _paid(url: str) -> bool:
    return _is_ad_click(url)


class _ChatCache:
    """The chats a process has read for reports, kept until an event of theirs is stored.

    Every change to a chat (open, message, outcome, claim, suggestion feedback, erasure) appends an
    event, so the cache drops the chats with events past the highest id it has seen (less
    :data:`_ID_MARGIN`, for PostgreSQL transactions that commit out of id order) and reads them again
    when a report needs them: a report then costs one read of the chat ids in range plus the chats
    changed since the last report. Past ``size`` chats the oldest-read are dropped."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.chats: OrderedDict[str, Chat] = OrderedDict()
        self.mark = 0
        self.lock = threading.Lock()


_ID_MARGIN = 5000
_CHAT_CACHE = 300_000
_CACHES: weakref.WeakKeyDictionary[Engine, _ChatCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _cache(store: EventStore) -> _ChatCache:
    with _CACHES_LOCK:
        cache = _CACHES.get(store.engine)
        if cache is None:
            cache = _CACHES[store.engine] = _ChatCache(_CHAT_CACHE)
        return cache


def clear_caches() -> None:
    """Forget every chat read (tests and benchmarks: the next report reads all from the store)."""
    with _CACHES_LOCK:
        _CACHES.clear()


def _chats(store: EventStore, filters: Filters) -> list[Chat]:
    """The chats the filters select (started in range; hospital, department, consultant), each with
    its timings, open-time scores, compliance and suggestion counts."""
    cache = _cache(store)
    e, c = events.c, conversations.c
    with cache.lock, store.engine.connect() as cx:
        top = cx.execute(sa.select(sa.func.max(e.id))).scalar()
        if top is not None and top > cache.mark:
            changed = cx.execute(
                sa.select(e.conversation_id).where(e.id > cache.mark - _ID_MARGIN).distinct()
            )
            for (cid,) in changed:
                cache.chats.pop(cid, None)
            cache.mark = top
        ids = list(cx.execute(sa.select(c.id).where(*filters.where())).scalars())
        missing = [i for i in ids if i not in cache.chats]
        for i in range(0, len(missing), _BATCH):
            for chat in _read_chats(cx, store, missing[i : i + _BATCH]):
                cache.chats[chat.id] = chat
        out = [cache.chats[i] for i in ids if i in cache.chats]
        while len(cache.chats) > cache.size:
            cache.chats.popitem(last=False)
    return out


_BATCH = 500


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


# ---- concerns ------------------------------------------------------------------------------
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
    """Concerns of those of ``chats`` not read yet (kept on the cached chat), at most
    :data:`CONCERN_CHATS` per report, the most recent first."""
    todo = sorted(
        (c for c in chats if c.chatted and c.concerns is None), key=lambda c: (c.day, c.id), reverse=True
    )
    todo = todo[:CONCERN_CHATS]
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


# ---- folding chats into groups ---------------------------------------------------------------
class _Group:
    __slots__ = (
        "answered",
        "arrived",
        "booked",
        "chats",
        "concern_chats",
        "consultant_msgs",
        "contact",
        "durations",
        "exp_arrived",
        "exp_booked",
        "first_waits",
        "flagged",
        "raised",
        "scored",
        "scored_arrived",
        "scored_booked",
        "shown",
        "used",
        "visits",
        "waits",
        "with_feedback",
    )

    def __init__(self) -> None:
        self.visits = self.chats = self.contact = self.booked = self.arrived = 0
        self.scored = self.scored_booked = self.scored_arrived = 0
        self.exp_booked = self.exp_arrived = 0.0
        self.durations: list[float] = []
        self.first_waits: list[float] = []
        self.waits: list[float] = []
        self.consultant_msgs = self.flagged = 0
        self.shown = self.with_feedback = self.used = 0
        self.concern_chats = 0
        self.raised: dict[str, int] = dict.fromkeys(CONCERNS, 0)
        self.answered: dict[str, int] = dict.fromkeys(CONCERNS, 0)

    def add(self, chat: Chat) -> None:
        self.visits += 1
        self.consultant_msgs += chat.consultant_msgs
        self.flagged += chat.flagged
        self.shown += chat.shown
        self.with_feedback += chat.with_feedback
        self.used += chat.used
        if not chat.chatted:
            return
        self.chats += 1
        self.contact += chat.contact
        self.booked += chat.booked
        self.arrived += chat.arrived
        if chat.p_booked0 is not None and chat.p_arrived0 is not None:
            self.scored += 1
            self.exp_booked += chat.p_booked0
            self.exp_arrived += chat.p_arrived0
            self.scored_booked += chat.booked
            self.scored_arrived += chat.arrived
        if chat.duration_s is not None:
            self.durations.append(chat.duration_s)
        if chat.first_wait_s is not None:
            self.first_waits.append(chat.first_wait_s)
        self.waits.extend(chat.waits)
        if chat.concerns is not None:
            self.concern_chats += 1
            raised, answered = chat.concerns
            for c in raised:
                self.raised[c] += 1
            for c in answered:
                self.answered[c] += 1

    def merge(self, other: _Group) -> None:
        for name in self.__slots__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif isinstance(mine, dict):
                for k, v in theirs.items():
                    mine[k] += v
            else:
                setattr(self, name, mine + theirs)

    def view(self) -> dict[str, Any]:
        lo, hi = DURATION_BAND_S
        n_raised = sum(self.raised.values())
        return {
            "visits": self.visits,
            "chats": self.chats,
            "chat_rate": _rate(self.chats, self.visits),
            "first_response_median_s": _median(self.first_waits),
            "first_response_mean_s": _mean(self.first_waits),
            "replies": len(self.waits),
            "response_median_s": _median(self.waits),
            "duration_median_s": _median(self.durations),
            "duration_mean_s": _mean(self.durations),
            "duration_5_30_share": _rate(sum(lo <= d <= hi for d in self.durations), len(self.durations)),
            "contact": self.contact,
            "booked": self.booked,
            "arrived": self.arrived,
            "contact_rate": _rate(self.contact, self.chats),
            "booked_rate": _rate(self.booked, self.chats),
            "arrived_rate": _rate(self.arrived, self.chats),
            "arrived_of_booked": _rate(self.arrived, self.booked),
            "scored_chats": self.scored,
            "expected_booked": round(self.exp_booked, 3),
            "expected_arrived": round(self.exp_arrived, 3),
            "booked_rate_adjusted": _adjusted(self.scored_booked, self.exp_booked, self.scored),
            "arrived_rate_adjusted": _adjusted(self.scored_arrived, self.exp_arrived, self.scored),
            "concern_chats": self.concern_chats,
            "concerns": {
                c: {
                    "raised": self.raised[c],
                    "share": _rate(self.raised[c], n_raised),
                    "answered": self.answered[c],
                    "answered_rate": _rate(self.answered[c], self.raised[c]),
                }
                for c in CONCERNS
            },
            "consultant_messages": self.consultant_msgs,
            "compliance_flagged": self.flagged,
            "compliance_flagged_rate": _rate(self.flagged, self.consultant_msgs),
            "suggestions_shown": self.shown,
            "suggestions_with_feedback": self.with_feedback,
            "suggestions_used": self.used,
            "suggestion_acceptance": _rate(self.used, self.with_feedback),
        }


def _rate(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _adjusted(actual: int, expected: float, n: int) -> float | None:
    return round((actual - expected) / n, 4) if n else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 1) if values else None


def _fold(
    chats: Iterable[Chat], key: Any, limit: int, order: Any
) -> tuple[list[tuple[Any, dict[str, Any]]], int, dict[str, Any]]:
    """The groups' views (sorted by ``order``, the first ``limit``), how many were left out, and the total."""
    groups: dict[Any, _Group] = {}
    for chat in chats:
        k = key(chat)
        g = groups.get(k)
        if g is None:
            g = groups[k] = _Group()
        g.add(chat)
    total = _Group()
    for g in groups.values():
        total.merge(g)
    items = sorted(((k, g.view()) for k, g in groups.items()), key=order)
    return items[:limit], max(0, len(items) - limit), total.view()


# ---- the reports -----------------------------------------------------------------------------
def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ReportError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")


def consultant_report(
    store: EventStore, days: DayRange, period: str, filters: Filters, limit: int = DEFAULT_LIMIT
) -> dict[str, Any]:
    """Per consultant and period (``day``, ``week`` = its Monday, ``month``), newest period first,
    then by chats; ``filters``' hospital, department and consultant narrow it."""
    if period not in PERIODS:
        raise ReportError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    _check_limit(limit)
    f = days.filters(
        hospital=filters.hospital, department=filters.department, consultant_id=filters.consultant_id
    )
    chats = _chats(store, f)
    _fill_concerns(store, chats)
    rows, truncated, total = _fold(
        chats,
        lambda chat: (period_of(chat.day, period), chat.consultant_id),
        limit,
        lambda kv: (_desc(kv[0][0]), -kv[1]["chats"], kv[0][1] or ""),
    )
    return {
        "from": days.first.isoformat(),
        "to": days.last.isoformat(),
        "period": period,
        "total": total,
        "rows": [{"period": p, "consultant_id": cons, **view} for (p, cons), view in rows],
        "truncated": truncated,
    }


def source_report(
    store: EventStore,
    days: DayRange,
    by: str,
    filters: Filters,
    period: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Per traffic source value (``by``: engine, keyword_category, paid, landing_page, region), over
    the whole range or per ``period``; most chats first."""
    if by not in SOURCE_DIMENSIONS:
        raise ReportError(f"by must be one of {', '.join(SOURCE_DIMENSIONS)}, not {by!r}")
    if period is not None and period not in PERIODS:
        raise ReportError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    _check_limit(limit)
    f = days.filters(
        hospital=filters.hospital, department=filters.department, consultant_id=filters.consultant_id
    )
    chats = _chats(store, f)

    def value(chat: Chat) -> str | None:
        return chat.paid if by == "paid" else getattr(chat, by)

    def key(chat: Chat) -> tuple[str | None, str | None]:
        return (period_of(chat.day, period) if period else None, value(chat))

    rows, truncated, total = _fold(
        chats,
        key,
        limit,
        lambda kv: (_desc(kv[0][0] or ""), -kv[1]["visits"], kv[0][1] or ""),
    )
    return {
        "from": days.first.isoformat(),
        "to": days.last.isoformat(),
        "by": by,
        "period": period,
        "total": total,
        "rows": [{"period": p, "source": v, **_source_view(view)} for (p, v), view in rows],
        "truncated": truncated,
    }


_SOURCE_FIELDS = (
    "visits",
    "chats",
    "chat_rate",
    "contact",
    "booked",
    "arrived",
    "contact_rate",
    "booked_rate",
    "arrived_rate",
    "arrived_of_booked",
    "arrived_of_visits",
    "scored_chats",
    "expected_booked",
    "expected_arrived",
    "booked_rate_adjusted",
    "arrived_rate_adjusted",
    "first_response_median_s",
    "duration_median_s",
)


def _source_view(view: dict[str, Any]) -> dict[str, Any]:
    view = {**view, "arrived_of_visits": _rate(view["arrived"], view["visits"])}
    return {k: view[k] for k in _SOURCE_FIELDS}


def _desc(text: str) -> tuple[int, ...]:
    """A sort key putting later ISO dates first."""
    return tuple(-ord(ch) for ch in text)


# ---- CSV -------------------------------------------------------------------------------------
def flat_rows(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Report rows with nested concerns spread into ``concern_<name>_share`` / ``_answered_rate`` columns."""
    for row in rows:
        out = {k: v for k, v in row.items() if k != "concerns"}
        for c, v in (row.get("concerns") or {}).items():
            out[f"concern_{c}_raised"] = v["raised"]
            out[f"concern_{c}_share"] = v["share"]
            out[f"concern_{c}_answered_rate"] = v["answered_rate"]
        yield out
