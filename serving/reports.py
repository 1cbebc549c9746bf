"""The desk reports: per consultant and period, and per traffic source (``GET /v1/reports/...``).

Framework-free: one SQL query grouped by the report's keys over the chats in range, read from the
per-chat summary ``chat_summaries`` alone (the store keeps it current, the chat's own columns
included, see :mod:`yuyue.serving.report_summary`; no join with ``conversations``): it sums the
counts and concatenates the values whose medians the report gives (first response, duration, reply
waits). Every number is defined in docs/api.md ("Desk
reports"); the short form:

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
  answered by a consultant message after it, read from each message's text when it was stored with
  the live path's signal lexicon (``features.signals``); shares are of all concerns raised, answer
  rates of each concern raised;
- **compliance**: consultant messages and those the guard flagged (the verdict stored with the message;
  one stored without a verdict is checked when it is stored);
- **suggestions**: shown, with feedback, used (as is or edited) and the acceptance rate;
- **grades**: the 对话等级 (极佳 / 较好 / 一般) imported with a chat, where one was: chats graded and
  each grade's share of them.

Bounds: a range of at most :data:`MAX_DAYS` local days, at most ``limit`` groups answered (the rest
counted in ``truncated``), the grouping one of :data:`PERIODS` and :data:`SOURCE_DIMENSIONS`. The
work is one grouped scan of the summaries in range and one count of the chats in range (an index
range of ``conversations``); when the counts differ, a chat whose summary is missing or behind (stored
by an older version, or written to the tables directly) is rebuilt from its events first.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa

from yuyue.features.signals import CONCERNS
from yuyue.serving.report_summary import chat_summaries, paid_of_url, rebuild, stale
from yuyue.serving.service import LOCAL_TZ
from yuyue.serving.store import EventStore, Filters, conversations

Period = Literal["day", "week", "month"]
PERIODS: tuple[str, ...] = ("day", "week", "month")
SOURCE_DIMENSIONS: tuple[str, ...] = ("engine", "keyword_category", "paid", "landing_page", "region")
GRADES: tuple[str, ...] = ("极佳", "较好", "一般")
MAX_DAYS = 366
MAX_LIMIT = 5000
DEFAULT_LIMIT = 500
DURATION_BAND_S = (300.0, 1800.0)  # the 5-30 minutes the reference desks aim at
PG_WORK_MEM = "64MB"  # PostgreSQL: a report's GROUP BY over 100,000 chats sorts about 15 MB


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
    grade: str | None = None  # 对话等级 imported with the chat

    @property
    def paid(self) -> str:
        return paid_of_url(self.landing_url)


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
        "grades",
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
        self.grades: dict[str, int] = dict.fromkeys(GRADES, 0)

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
        if chat.grade in self.grades:
            self.grades[chat.grade] += 1

    @classmethod
    def combined(cls, groups: Iterable[_Group]) -> _Group:
        """The groups as one (their values concatenated once, not group by group)."""
        out, groups = cls(), list(groups)
        for name in cls.__slots__:
            parts = [getattr(g, name) for g in groups]
            mine = getattr(out, name)
            if isinstance(mine, list):
                arrays = [np.asarray(x, dtype=np.float64) for x in parts]
                setattr(out, name, np.concatenate(arrays) if arrays else mine)
            elif isinstance(mine, dict):
                for part in parts:
                    for k, v in part.items():
                        mine[k] += v
            else:
                setattr(out, name, sum(parts, mine))
        return out

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
        # one float array per list of values (the report's own arrays are passed through as they are)
        first_waits, waits, durations = (
            np.asarray(v, dtype=np.float64) for v in (self.first_waits, self.waits, self.durations)
        )
        n_raised = sum(self.raised.values())
        n_graded = sum(self.grades.values())
        return {
            "visits": self.visits,
            "chats": self.chats,
            "chat_rate": _rate(self.chats, self.visits),
            "first_response_median_s": _median(first_waits),
            "first_response_mean_s": _mean(first_waits),
            "replies": waits.size,
            "response_median_s": _median(waits),
            "duration_median_s": _median(durations),
            "duration_mean_s": _mean(durations),
            "duration_5_30_share": _rate(
                int(np.count_nonzero((durations >= lo) & (durations <= hi))), durations.size
            ),
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
            "graded_chats": n_graded,
            "grades": {g: _rate(self.grades[g], n_graded) for g in GRADES},
        }


def _rate(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _adjusted(actual: int, expected: float, n: int) -> float | None:
    return round((actual - expected) / n, 4) if n else None


def _median(values: np.ndarray) -> float | None:
    # numpy selects instead of sorting: the same value as statistics.median (the middle one, or the
    # mean of the two middle ones)
    return round(float(np.median(values)), 1) if values.size else None


def _mean(values: np.ndarray) -> float | None:
    # statistics.fmean's own sum (math.fsum, exact) over the floats: the same value as before
    return round(math.fsum(values.tolist()) / values.size, 1) if values.size else None


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
    total = _Group.combined(groups.values())
    items = sorted(((k, g.view()) for k, g in groups.items()), key=order)
    return items[:limit], max(0, len(items) - limit), total.view()


# ---- the reports -----------------------------------------------------------------------------
def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ReportError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")


def _period_key(period: str | None, dialect: str) -> Any:
    """The SQL of :func:`period_of` over the chat's local day (None: one period)."""
    day = chat_summaries.c.day
    if period is None:
        return sa.literal(None, sa.String)
    if period == "day":
        return day
    if period == "month":
        return sa.func.substr(day, 1, 7)
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.date_trunc("week", sa.cast(day, sa.Date)), "YYYY-MM-DD")
    return sa.func.date(day, "weekday 0", "-6 days")  # the next Sunday (or the day), then its Monday


def _sum_columns(dialect: str) -> list[Any]:
    """The per-group sums, in the order :func:`_group_of` reads them."""
    s = chat_summaries.c
    chatted = _chatted()
    scored = sa.and_(chatted, s.p_booked_lead.is_not(None), s.p_arrived_lead.is_not(None))

    def flag(cond: Any) -> Any:  # 1 or 0 (SQLite's comparisons are numbers: no CASE to evaluate)
        return sa.type_coerce(cond, sa.Integer) if dialect == "sqlite" else sa.case((cond, 1), else_=0)

    def n(cond: Any) -> Any:
        return sa.func.sum(flag(cond))

    def bit(col: Any, i: int) -> Any:  # a concern raised (or answered) implies a visitor message
        return sa.func.sum(col.op(">>")(i).op("&")(1))

    return [
        sa.func.count(),
        n(chatted),
        n(sa.and_(chatted, sa.or_(s.contact.is_(True), s.contact_seen.is_(True)))),
        n(sa.and_(chatted, s.booked.is_(True))),
        n(sa.and_(chatted, s.arrived.is_(True))),
        n(scored),
        sa.func.sum(s.p_booked_lead * flag(scored)),  # NULL (left out) or 0.0 when not scored
        sa.func.sum(s.p_arrived_lead * flag(scored)),
        n(sa.and_(scored, s.booked.is_(True))),
        n(sa.and_(scored, s.arrived.is_(True))),
        sa.func.sum(s.consultant_msgs),
        sa.func.sum(s.flagged),
        sa.func.sum(s.shown),
        sa.func.sum(s.with_feedback),
        sa.func.sum(s.used),
        *(bit(s.concerns_raised, i) for i in range(len(CONCERNS))),
        *(bit(s.concerns_answered, i) for i in range(len(CONCERNS))),
        *(n(sa.and_(chatted, s.grade == g)) for g in GRADES),
    ]


def _group_of(sums: Any) -> _Group:
    """A group from its row of :func:`_sum_columns` (the medians' values added later)."""
    g = _Group()
    v = [0 if x is None else x for x in sums]
    g.visits, g.chats, g.contact, g.booked, g.arrived, g.scored = (int(x) for x in v[:6])
    g.exp_booked, g.exp_arrived = float(v[6]), float(v[7])
    g.scored_booked, g.scored_arrived, g.consultant_msgs, g.flagged = (int(x) for x in v[8:12])
    g.shown, g.with_feedback, g.used = (int(x) for x in v[12:15])
    g.concern_chats = g.chats  # every chat's concerns are read when its messages are stored
    k = len(CONCERNS)
    g.raised = {c: int(x) for c, x in zip(CONCERNS, v[15 : 15 + k], strict=True)}
    g.answered = {c: int(x) for c, x in zip(CONCERNS, v[15 + k : 15 + 2 * k], strict=True)}
    g.grades = {name: int(x) for name, x in zip(GRADES, v[15 + 2 * k :], strict=True)}
    return g


def _concat(value: Any, dialect: str) -> Any:
    """The group's values as one comma-separated text (NULLs left out)."""
    if dialect == "postgresql":
        return sa.func.string_agg(sa.cast(value, sa.Text), ",")
    return sa.func.group_concat(value, ",")


def _floats(text: str | None) -> np.ndarray:
    """Comma-separated numbers (at least 0), parsed in C (kept as an array: the medians read it)."""
    if not text:
        return np.empty(0, dtype=np.float64)
    return np.maximum(np.fromstring(text, dtype=np.float64, sep=","), 0.0)


def _chatted() -> Any:
    """A chat with at least one visitor message (``conversations.n_visitor > 0``): its summary holds
    the first one's time."""
    return chat_summaries.c.first_visitor_at.is_not(None)


def _groups(store: EventStore, keys: list[Any], filters: Filters) -> dict[tuple[Any, ...], _Group]:
    """The chats ``filters`` select, grouped by ``keys`` (SQL expressions over ``chat_summaries``): one
    query of the summary table alone for the sums and, of the chats with a visitor message, the values
    of the medians (first response, duration, reply waits) as texts. Chats whose summary is missing or
    behind are rebuilt first (then the query runs again; normally there are none): the chats in range
    and their messages are counted in ``conversations`` (an index range, no join) and compared."""
    s = chat_summaries.c
    dialect = store.engine.dialect.name
    chatted = _chatted()
    query = (
        sa.select(
            *keys,
            *_sum_columns(dialect),
            *(
                _concat(sa.case((chatted, v), else_=None), dialect)
                for v in (s.first_wait_s, s.duration_s, s.waits)
            ),
            sa.func.sum(s.n_messages),
        )
        .where(*filters.where(table=chat_summaries))
        .group_by(*keys)
    )
    chats = sa.select(sa.func.count(), sa.func.sum(conversations.c.n_messages)).where(*filters.where())
    n = len(keys)
    with store.engine.begin() as cx:
        if dialect == "postgresql":  # the grouping's sort in memory, not on disk (this transaction only)
            cx.exec_driver_sql(f"SET LOCAL work_mem = '{PG_WORK_MEM}'")
        rows = cx.execute(query).all()
        held = cx.execute(chats).one()
    summed = (sum(r[n] for r in rows), sum(int(r[-1] or 0) for r in rows))
    if summed != (held[0], int(held[1] or 0)):
        with store.engine.begin() as cx:
            rebuild(cx, stale(cx, filters.where()))
            rows = cx.execute(query).all()
    groups = {}
    for r in rows:
        g = groups[tuple(r[:n])] = _group_of(r[n:-4])
        g.first_waits, g.durations, g.waits = (_floats(t) for t in r[-4:-1])  # type: ignore[assignment]
    return groups


def _views(
    groups: dict[tuple[Any, ...], _Group], limit: int, order: Any
) -> tuple[list[tuple[Any, dict[str, Any]]], int, dict[str, Any]]:
    """The groups' views (sorted by ``order``, the first ``limit``), how many were left out, and the total."""
    total = _Group.combined(groups.values())
    items = sorted(((k, g.view()) for k, g in groups.items()), key=order)
    return items[:limit], max(0, len(items) - limit), total.view()


def _in_range(days: DayRange, filters: Filters) -> Filters:
    bounds = days.filters()
    return dataclasses.replace(filters, since=bounds.since, until=bounds.until)


def consultant_report(
    store: EventStore, days: DayRange, period: str, filters: Filters, limit: int = DEFAULT_LIMIT
) -> dict[str, Any]:
    """Per consultant and period (``day``, ``week`` = its Monday, ``month``), newest period first,
    then by chats; ``filters``' hospital, department and consultant narrow it."""
    if period not in PERIODS:
        raise ReportError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    _check_limit(limit)
    keys = [_period_key(period, store.engine.dialect.name), chat_summaries.c.consultant_id]
    groups = _groups(store, keys, _in_range(days, filters))
    rows, truncated, total = _views(
        groups, limit, lambda kv: (_desc(kv[0][0]), -kv[1]["chats"], kv[0][1] or "")
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
    value = chat_summaries.c[by]
    keys = [_period_key(period, store.engine.dialect.name), value]
    groups = _groups(store, keys, _in_range(days, filters))
    rows, truncated, total = _views(
        groups, limit, lambda kv: (_desc(kv[0][0] or ""), -kv[1]["visits"], kv[0][1] or "")
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
        out = {k: v for k, v in row.items() if k not in ("concerns", "grades")}
        for c, v in (row.get("concerns") or {}).items():
            out[f"concern_{c}_raised"] = v["raised"]
            out[f"concern_{c}_share"] = v["share"]
            out[f"concern_{c}_answered_rate"] = v["answered_rate"]
        for g, share in (row.get("grades") or {}).items():
            out[f"grade_{g}_share"] = share
        yield out
