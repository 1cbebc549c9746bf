"""The event store: every message, score, suggestion, feedback and outcome, append-only.

Three tables on :data:`serving.db.metadata`:

- ``events``: the append-only log (``open``, ``message``, ``outcome``, ``feedback``,
  ``close``), one row per event with its JSON payload; a message event holds the raw
  text, its scores and the suggestion ids shown. ``(conversation_id, seq)`` is unique
  for messages, so two workers can never both store message ``n`` of one chat.
- ``conversations``: one row per chat, the current projection of its events (visit
  facts for the funnel, latest scores and reasons for the follow-up queue, outcome).
  It is written in the same transaction as the event that changes it.
- ``suggestions``: each suggestion shown, with the consultant's feedback.

Every write is one transaction committed before the API answers, so an
acknowledged message survives a crash (SQLite WAL or PostgreSQL). Raw text is
kept here (the hospital's own database); every read path that leaves the
consultant's live view masks it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from yuyue.serving.audit import audit_log, erasures  # the privacy tables, declared with the store's
from yuyue.serving.db import BusyGate, UTCDateTime, metadata
from yuyue.serving.report_summary import (
    CHAT_COLUMNS,
    after_feedback,
    after_message,
    chat_summaries,
    message_params,
    open_row,
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.String(128), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=True),  # message position for message events
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(128), nullable=True),  # API key name
    sa.Column("payload", sa.Text, nullable=False),
    sa.UniqueConstraint("conversation_id", "kind", "seq"),
)

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("hospital", sa.String(128), index=True),
    sa.Column("department", sa.String(64), index=True),
    sa.Column("project", sa.String(64)),
    sa.Column("consultant_id", sa.String(128), index=True),
    sa.Column("started_at", UTCDateTime, nullable=False, index=True),
    sa.Column("last_at", UTCDateTime, nullable=False),
    sa.Column("day", sa.String(10), nullable=False),  # local date of started_at, for grouping
    sa.Column("visit", sa.Text),  # the visit trace as JSON
    sa.Column("engine", sa.String(32)),
    sa.Column("keyword", sa.String(512)),
    sa.Column("keyword_category", sa.String(32)),
    sa.Column("landing_page", sa.String(32)),
    sa.Column("region", sa.String(256)),  # the contract allows 256 characters
    sa.Column("n_messages", sa.Integer, nullable=False, default=0),
    sa.Column("n_visitor", sa.Integer, nullable=False, default=0),
    sa.Column("closed", sa.Boolean, nullable=False, default=False),
    sa.Column("contact_seen", sa.Boolean, nullable=False, default=False),  # contact detected in the chat
    sa.Column("contact", sa.Boolean),
    sa.Column("booked", sa.Boolean),
    sa.Column("arrived", sa.Boolean),
    sa.Column("booked_at", UTCDateTime),
    sa.Column("arrived_at", UTCDateTime),
    sa.Column("p_booked", sa.Float),
    sa.Column("p_arrived", sa.Float),
    sa.Column("reasons", sa.Text),  # latest reasons per target, JSON
    sa.Column("model_version", sa.String(32)),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

suggestions = sa.Table(
    "suggestions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("conversation_id", sa.String(128), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),  # the visitor message it answered
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("source", sa.String(64)),
    sa.Column("reply_id", sa.String(128), index=True),  # the pool entry suggested (reply review's usage)
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("feedback", sa.String(16)),  # used | edited | dismissed
    sa.Column("final_text", sa.Text),
    sa.Column("feedback_at", UTCDateTime),
    sa.Column("feedback_by", sa.String(128)),
)

# the per-message statements, built once (SQLAlchemy then only binds values)
_INSERT_EVENT = events.insert()
_INSERT_SUGGESTION = suggestions.insert()
_SELECT_CHAT = sa.select(conversations).where(conversations.c.id == sa.bindparam("_id"))
_AFTER_MESSAGE = (
    conversations.update()
    .where(
        conversations.c.id == sa.bindparam("_id"),
        conversations.c.n_messages == sa.bindparam("_seq", type_=sa.Integer),
        conversations.c.closed == sa.false(),
    )
    .values(
        n_messages=sa.bindparam("_seq", type_=sa.Integer) + 1,
        n_visitor=conversations.c.n_visitor + sa.bindparam("_visitor", type_=sa.Integer),
        contact_seen=sa.or_(conversations.c.contact_seen, sa.bindparam("_contact", type_=sa.Boolean)),
        last_at=sa.bindparam("_last_at", type_=UTCDateTime),
        p_booked=sa.bindparam("_p_booked", type_=sa.Float),
        p_arrived=sa.bindparam("_p_arrived", type_=sa.Float),
        reasons=sa.bindparam("_reasons", type_=sa.Text),
        model_version=sa.bindparam("_model_version", type_=sa.String),
        updated_at=sa.bindparam("_now", type_=UTCDateTime),
    )
)


def _pg_append_statement() -> sa.Select[int]:
    """PostgreSQL's per-message write as one statement (one round trip, atomic on its own).

    ``WITH up AS (UPDATE conversations … RETURNING id), ev AS (INSERT INTO events … FROM up),
    sg AS (INSERT INTO suggestions … FROM up, jsonb_to_recordset(:_shown)) SELECT count(*) FROM up``:
    the inserts draw their rows from ``up``, so when the chat is closed or another worker
    already moved it past ``_seq`` nothing at all is written and the count is 0. The
    suggestions travel as one JSON parameter, so the text is the same for any number of
    them (and psycopg prepares it once). SQLite has no data-modifying CTEs: it keeps the
    three-statement transaction, which costs no round trips there.
    """
    up = _AFTER_MESSAGE.returning(conversations.c.id).cte("up")
    seq = sa.bindparam("_seq", type_=sa.Integer)
    now = sa.bindparam("_now", type_=UTCDateTime)
    event = events.insert().from_select(
        ["conversation_id", "seq", "kind", "at", "recorded_at", "actor", "payload"],
        sa.select(
            up.c.id,
            seq,
            sa.literal("message"),
            sa.bindparam("_last_at", type_=UTCDateTime),
            now,
            sa.bindparam("_actor", type_=sa.String),
            sa.bindparam("_payload", type_=sa.Text),
        ).select_from(up),
    )
    shown = (
        sa.func.jsonb_to_recordset(sa.bindparam("_shown", type_=JSONB))
        .table_valued(
            sa.column("id", sa.String),
            sa.column("rank", sa.Integer),
            sa.column("text", sa.Text),
            sa.column("source", sa.String),
            sa.column("reply_id", sa.String),
        )
        .render_derived(name="s", with_types=True)
    )
    shown_rows = suggestions.insert().from_select(
        ["id", "conversation_id", "seq", "rank", "text", "source", "reply_id", "created_at"],
        sa.select(shown.c.id, up.c.id, seq, shown.c.rank, shown.c.text, shown.c.source, shown.c.reply_id, now)
        .select_from(up)
        .join(shown, sa.true()),
    )
    summary = after_message("postgresql").where(chat_summaries.c.conversation_id.in_(sa.select(up.c.id)))
    return (
        sa.select(sa.func.count())
        .select_from(up)
        .add_cte(event.cte("ev"), shown_rows.cte("sg"), summary.cte("sm"))
    )


_PG_APPEND = _pg_append_statement()
_SUMMARY_AFTER_MESSAGE = after_message("sqlite")  # the desk reports' summary (serving/report_summary.py)

FUNNEL_GROUPS = {
    "hospital": conversations.c.hospital,  # hospitals side by side (a key sees its own hospitals only)
    "engine": conversations.c.engine,
    "keyword": conversations.c.keyword,
    "keyword_category": conversations.c.keyword_category,
    "landing_page": conversations.c.landing_page,
    "region": conversations.c.region,
    "consultant": conversations.c.consultant_id,
    "department": conversations.c.department,
    "day": conversations.c.day,
}


class StoreError(Exception):
    """Base of the errors the API maps to 4xx answers."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


class SuggestionRecord(TypedDict):
    """A row of ``suggestions``: one suggestion shown, and what the consultant did with it."""

    id: str
    conversation_id: str
    seq: int  # the visitor message it answered
    rank: int
    text: str
    source: str | None
    reply_id: str | None  # the pool entry suggested
    created_at: datetime
    feedback: str | None  # used | edited | dismissed
    final_text: str | None
    feedback_at: datetime | None
    feedback_by: str | None


def _suggestion_record(row: RowMapping) -> SuggestionRecord:
    return SuggestionRecord(
        id=row["id"],
        conversation_id=row["conversation_id"],
        seq=row["seq"],
        rank=row["rank"],
        text=row["text"],
        source=row["source"],
        reply_id=row["reply_id"],
        created_at=row["created_at"],
        feedback=row["feedback"],
        final_text=row["final_text"],
        feedback_at=row["feedback_at"],
        feedback_by=row["feedback_by"],
    )


class ErasureRecord(TypedDict):
    """A row of ``erasures``: when and why a chat's raw text was last masked."""

    conversation_id: str
    at: datetime
    actor: str | None
    reason: str  # erase | purge
    n_messages: int  # messages the chat held when it was masked


@dataclass(frozen=True)
class Filters:
    hospital: str | None = None
    department: str | None = None
    consultant_id: str | None = None
    since: datetime | None = None  # started_at >= since
    until: datetime | None = None  # started_at < until
    hospitals: tuple[str, ...] | None = None  # the caller's hospitals (None: every hospital)

    def where(self, table: sa.Table | None = None) -> list[Any]:
        """The clauses over ``table``'s columns (``conversations`` by default; any table with the
        same hospital / department / consultant_id / started_at columns)."""
        c = (conversations if table is None else table).c
        out: list[Any] = []
        if self.hospitals is not None:
            out.append(c.hospital.in_(self.hospitals))
        for col, value in (
            (c.hospital, self.hospital),
            (c.department, self.department),
            (c.consultant_id, self.consultant_id),
        ):
            if value is not None:
                out.append(col == value)
        if self.since is not None:
            out.append(c.started_at >= self.since)
        if self.until is not None:
            out.append(c.started_at < self.until)
        return out


def _moved(conversation_id: str, seq: int) -> Conflict:
    return Conflict(f"conversation {conversation_id!r} is closed or changed while message {seq} was stored")


def _dumps(obj: Any) -> str:
    # orjson: UTF-8 as is (no \u escapes), datetimes as ISO 8601; several times faster than json
    return orjson.dumps(obj, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _event(
    conversation_id: str, kind: str, payload: Any, actor: str | None, *, at: datetime, recorded_at: datetime
) -> sa.Insert:
    """The insert of one event that is not a message (open, outcome, claim, feedback, erase …)."""
    return events.insert().values(
        conversation_id=conversation_id,
        seq=None,
        kind=kind,
        at=at,
        recorded_at=recorded_at,
        actor=actor,
        payload=_dumps(payload),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _copy_to_summary(cx: sa.Connection, conversation_id: str, update: dict[str, Any]) -> None:
    """The chat's columns of ``update`` (just written to ``conversations``) into its report summary, in
    the same transaction: the reports read ``chat_summaries`` alone (see serving/report_summary.py)."""
    copied = {k: v for k, v in update.items() if k in CHAT_COLUMNS}
    if copied:
        cx.execute(
            chat_summaries.update()
            .where(chat_summaries.c.conversation_id == conversation_id)
            .values(**copied)
        )


class EventStore:
    """Reads and writes of the service's tables (see the module docstring)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        # a lock held elsewhere: one writer waits on it (up to the busy / lock timeout), the others get
        # DatabaseBusy (503) at once instead of queueing in the worker threads (see db.BusyGate). On
        # PostgreSQL the message path's reads are gated too (a LOCK TABLE blocks them); SQLite readers
        # never wait for a writer (WAL)
        self._gate = BusyGate()
        self._read_gate = self._gate if engine.dialect.name == "postgresql" else contextlib.nullcontext
        # PostgreSQL: the per-message write is one self-contained statement, run in autocommit
        # (no BEGIN/COMMIT round trips); see _pg_append_statement
        self._autocommit = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else None
        )

    # ---- writes ------------------------------------------------------------
    def open(
        self, row: dict[str, Any], actor: str | None, at: datetime, extra: dict[str, Any] | None = None
    ) -> None:
        """Insert a new chat (``row``: conversations columns) and its ``open`` event (``row`` and
        ``extra``: values kept with the event only, such as the lead's scores the reports read)."""
        now = _now()
        try:
            with self._gate(), self.engine.begin() as cx:
                cx.execute(conversations.insert().values(**row, updated_at=now))
                cx.execute(chat_summaries.insert().values(**open_row(row, extra)))
                cx.execute(
                    _event(
                        row["id"],
                        "open",
                        {**{k: v for k, v in row.items() if k not in ("id",)}, **(extra or {})},
                        actor,
                        at=at,
                        recorded_at=now,
                    )
                )
        except IntegrityError:
            raise Conflict(f"conversation {row['id']!r} already exists") from None

    def append_message(
        self,
        conversation_id: str,
        seq: int,
        message: dict[str, Any],
        shown: Sequence[dict[str, Any]],
        update: dict[str, Any],
        actor: str | None,
    ) -> None:
        """Store message ``seq`` with its scores, the suggestions shown, and the chat's new projection.

        ``update`` holds ``last_at``, ``visitor`` (1 for a visitor message), ``contact``
        (contact data seen in it), ``p_booked``, ``p_arrived``, ``reasons`` (JSON) and
        ``model_version``. Raises :class:`Conflict` when the chat is closed or message
        ``seq`` is already stored (another worker won); nothing is written then.
        """
        now = _now()
        # the projection's parameters (_AFTER_MESSAGE, also the core of _PG_APPEND)
        projection = {
            **{f"_{k}": v for k, v in update.items()},
            "_id": conversation_id,
            "_seq": seq,
            "_now": now,
            **message_params(message, update["last_at"], len(shown)),  # the reports' chat summary
        }
        try:
            if self._autocommit is not None:  # PostgreSQL: one statement (see _pg_append_statement)
                self._append_pg(self._autocommit, conversation_id, seq, message, shown, projection, actor)
            else:
                self._append_portable(conversation_id, seq, message, shown, projection, actor)
        except IntegrityError:
            raise Conflict(f"message {seq} of conversation {conversation_id!r} is already stored") from None

    def _append_pg(
        self,
        autocommit: Engine,
        conversation_id: str,
        seq: int,
        message: dict[str, Any],
        shown: Sequence[dict[str, Any]],
        projection: dict[str, Any],
        actor: str | None,
    ) -> None:
        """append_message on PostgreSQL: event, suggestions and projection in one statement."""
        with self._gate(), autocommit.connect() as cx:
            params = {
                **projection,
                "_actor": actor,
                "_payload": _dumps(message),
                "_shown": [
                    {k: s.get(k) for k in ("id", "rank", "text", "source", "reply_id")} for s in shown
                ],
            }
            if cx.execute(_PG_APPEND, params).scalar_one() != 1:
                raise _moved(conversation_id, seq)

    def _append_portable(
        self,
        conversation_id: str,
        seq: int,
        message: dict[str, Any],
        shown: Sequence[dict[str, Any]],
        projection: dict[str, Any],
        actor: str | None,
    ) -> None:
        """append_message elsewhere (SQLite): event, suggestions and projection in one transaction."""
        now = projection["_now"]
        with self._gate(), self.engine.begin() as cx:
            cx.execute(
                _INSERT_EVENT,
                {
                    "conversation_id": conversation_id,
                    "seq": seq,
                    "kind": "message",
                    "at": projection["_last_at"],
                    "recorded_at": now,
                    "actor": actor,
                    "payload": _dumps(message),
                },
            )
            if shown:
                cx.execute(
                    _INSERT_SUGGESTION,
                    [
                        {
                            "reply_id": None,
                            **s,
                            "conversation_id": conversation_id,
                            "seq": seq,
                            "created_at": now,
                        }
                        for s in shown
                    ],
                )
            res = cx.execute(_AFTER_MESSAGE, projection)
            if res.rowcount != 1:
                raise _moved(conversation_id, seq)  # rolls the transaction back
            cx.execute(_SUMMARY_AFTER_MESSAGE, projection)

    def record(
        self,
        conversation_id: str,
        kind: str,
        payload: dict[str, Any],
        update: dict[str, Any],
        actor: str | None,
        at: datetime,
    ) -> None:
        """Append a non-message event (outcome, close) and apply ``update`` to the chat's row."""
        now = _now()
        with self._gate(), self.engine.begin() as cx:
            cx.execute(
                _event(
                    conversation_id,
                    kind,
                    payload,
                    actor,
                    at=at,
                    recorded_at=now,
                )
            )
            res = cx.execute(
                conversations.update()
                .where(conversations.c.id == conversation_id)
                .values(**update, updated_at=now)
            )
            if res.rowcount != 1:
                raise NotFound(f"no conversation {conversation_id!r}")
            _copy_to_summary(cx, conversation_id, update)

    def claim(self, conversation_id: str, consultant_id: str, actor: str | None) -> str:
        """Make ``consultant_id`` the consultant of a chat that has none (recorded as a ``claim``
        event); returns the chat's consultant afterwards (someone else's when another claimed it first)."""
        now = _now()
        with self._gate(), self.engine.begin() as cx:
            done = cx.execute(
                conversations.update()
                .where(conversations.c.id == conversation_id, conversations.c.consultant_id.is_(None))
                .values(consultant_id=consultant_id, updated_at=now)
            ).rowcount
            if done == 1:
                _copy_to_summary(cx, conversation_id, {"consultant_id": consultant_id})
                cx.execute(
                    _event(
                        conversation_id,
                        "claim",
                        {"consultant_id": consultant_id},
                        actor,
                        at=now,
                        recorded_at=now,
                    )
                )
                return consultant_id
        owner: str = self.conversation(conversation_id)["consultant_id"]  # claimed: not None
        return owner

    def suggestion(self, suggestion_id: str) -> SuggestionRecord:
        with self.engine.connect() as cx:
            row = (
                cx.execute(sa.select(suggestions).where(suggestions.c.id == suggestion_id)).mappings().first()
            )
        if row is None:
            raise NotFound(f"no suggestion {suggestion_id!r}")
        return _suggestion_record(row)

    def feedback(
        self,
        suggestion_id: str,
        action: str,
        final_text: str | None,
        actor: str | None,
        role: str | None = None,
    ) -> SuggestionRecord:
        """Record what the consultant did with a suggestion (``role``: the recorder's, when not the
        chat's consultant, e.g. a supervisor); returns the suggestion row."""
        now = _now()
        with self._gate(), self.engine.begin() as cx:
            row = (
                cx.execute(sa.select(suggestions).where(suggestions.c.id == suggestion_id)).mappings().first()
            )
            if row is None:
                raise NotFound(f"no suggestion {suggestion_id!r}")
            cx.execute(
                suggestions.update()
                .where(suggestions.c.id == suggestion_id)
                .values(feedback=action, final_text=final_text, feedback_at=now, feedback_by=actor)
            )
            cx.execute(after_feedback(row["conversation_id"], row["feedback"], action))
            cx.execute(
                _event(
                    row["conversation_id"],
                    "feedback",
                    {"suggestion_id": suggestion_id, "action": action, "final_text": final_text}
                    | ({"recorded_by_role": role} if role else {}),
                    actor,
                    at=now,
                    recorded_at=now,
                )
            )
        return {**_suggestion_record(row), "feedback": action, "final_text": final_text, "feedback_at": now}

    # ---- privacy: erasure, retention, audit (the tables are in serving/audit.py) -----------
    def chat_texts(self, conversation_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The rows of one chat that may hold its raw text: its events (id, kind, payload) in order,
        and its suggestions (id, text, final_text)."""
        with self.engine.connect() as cx:
            rows = cx.execute(
                sa.select(events.c.id, events.c.kind, events.c.payload)
                .where(events.c.conversation_id == conversation_id)
                .order_by(events.c.id)
            ).mappings()
            evs = [dict(r) for r in rows]
            shown = cx.execute(
                sa.select(suggestions.c.id, suggestions.c.text, suggestions.c.final_text)
                .where(suggestions.c.conversation_id == conversation_id)
                .order_by(suggestions.c.seq, suggestions.c.rank)
            ).mappings()
            return evs, [dict(s) for s in shown]

    def rewrite_texts(
        self,
        conversation_id: str,
        payloads: dict[int, str],
        shown: dict[str, dict[str, Any]],
        *,
        reason: str,
        actor: str | None,
        n_messages: int,
        event_payload: dict[str, Any],
        audit: dict[str, Any] | None = None,
    ) -> None:
        """One transaction: replace event payloads and suggestion texts of one chat (masked), record
        the erasure (``erasures`` and an event of kind ``reason``) and, when given, the audit row."""
        now = _now()
        with self._gate(), self.engine.begin() as cx:
            found = cx.execute(sa.select(conversations.c.id).where(conversations.c.id == conversation_id))
            if found.first() is None:
                raise NotFound(f"no conversation {conversation_id!r}")
            if payloads:
                cx.execute(
                    events.update()
                    .where(events.c.id == sa.bindparam("_id"), events.c.conversation_id == conversation_id)
                    .values(payload=sa.bindparam("_payload")),
                    [{"_id": k, "_payload": v} for k, v in payloads.items()],
                )
            if shown:
                cx.execute(
                    suggestions.update()
                    .where(suggestions.c.id == sa.bindparam("_id"))
                    .values(text=sa.bindparam("_text"), final_text=sa.bindparam("_final_text")),
                    [
                        {"_id": k, "_text": v["text"], "_final_text": v["final_text"]}
                        for k, v in shown.items()
                    ],
                )
            cx.execute(
                _event(
                    conversation_id,
                    reason,
                    event_payload,
                    actor,
                    at=now,
                    recorded_at=now,
                )
            )
            row = {"at": now, "actor": actor, "reason": reason, "n_messages": n_messages}
            done = cx.execute(
                erasures.update().where(erasures.c.conversation_id == conversation_id).values(**row)
            ).rowcount
            if done != 1:
                cx.execute(erasures.insert().values(conversation_id=conversation_id, **row))
            if audit is not None:
                cx.execute(audit_log.insert().values(at=now, **audit))

    def erasure(self, conversation_id: str) -> ErasureRecord | None:
        """When and why the chat's raw text was last masked (None: never)."""
        with self.engine.connect() as cx:
            row = (
                cx.execute(sa.select(erasures).where(erasures.c.conversation_id == conversation_id))
                .mappings()
                .first()
            )
        if row is None:
            return None
        return ErasureRecord(
            conversation_id=row["conversation_id"],
            at=row["at"],
            actor=row["actor"],
            reason=row["reason"],
            n_messages=row["n_messages"],
        )

    def erasure_due(self, cutoff: datetime, limit: int) -> list[str]:
        """Chats with messages, last active before ``cutoff``, never masked or holding messages received
        since they were (retention)."""
        c, e = conversations.c, erasures.c
        query = (
            sa.select(c.id)
            .select_from(conversations.outerjoin(erasures, e.conversation_id == c.id))
            .where(
                c.last_at < cutoff,
                c.n_messages > 0,
                sa.or_(e.conversation_id.is_(None), e.n_messages < c.n_messages),
            )
            .order_by(c.last_at, c.id)
            .limit(limit)
        )
        with self.engine.connect() as cx:
            return list(cx.execute(query).scalars())

    def audit(self, row: dict[str, Any]) -> None:
        """Append one row to the audit log (``at`` is now unless given)."""
        with self._gate(), self.engine.begin() as cx:
            cx.execute(audit_log.insert().values(**{"at": _now(), **row}))

    def audit_entries(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        conversation_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Audit rows, newest first, filtered (``since <= at < until``); ``total`` counts all matches."""
        a = audit_log.c
        where = [
            cond(value)
            for cond, value in (
                (a.actor.__eq__, actor),
                (a.action.__eq__, action),
                (a.conversation_id.__eq__, conversation_id),
                (a.at.__ge__, since),
                (a.at.__lt__, until),
            )
            if value is not None
        ]
        with self.engine.connect() as cx:
            total = cx.execute(sa.select(sa.func.count()).select_from(audit_log).where(*where)).scalar_one()
            rows = cx.execute(
                sa.select(audit_log)
                .where(*where)
                .order_by(a.at.desc(), a.id.desc())
                .limit(limit)
                .offset(offset)
            ).mappings()
            items = [dict(r) for r in rows]
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    # ---- reads -------------------------------------------------------------
    def conversation(self, conversation_id: str) -> dict[str, Any]:
        with self._read_gate(), self.engine.connect() as cx:
            row = cx.execute(_SELECT_CHAT, {"_id": conversation_id}).mappings().first()
        if row is None:
            raise NotFound(f"no conversation {conversation_id!r}")
        return dict(row)

    def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        """Stored messages of one chat in order (payloads: role, text, at, stage, scores …)."""
        with self._read_gate(), self.engine.connect() as cx:
            rows = cx.execute(
                sa.select(events.c.seq, events.c.payload)
                .where(events.c.conversation_id == conversation_id, events.c.kind == "message")
                .order_by(events.c.seq)
            ).all()
        return [{"seq": seq, **orjson.loads(payload)} for seq, payload in rows]

    def followup_candidates(self, filters: Filters) -> list[dict[str, Any]]:
        """Chats that left contact without booking, and bookings whose arrival is not known yet."""
        c = conversations.c
        lead = sa.and_(
            sa.or_(c.contact.is_(True), c.contact_seen.is_(True)), sa.not_(sa.func.coalesce(c.booked, False))
        )
        booking = sa.and_(c.booked.is_(True), c.arrived.is_(None))
        query = sa.select(conversations).where(sa.or_(lead, booking), *filters.where())
        with self.engine.connect() as cx:
            return [dict(r) for r in cx.execute(query).mappings().all()]

    def funnel(self, group_by: str | None, filters: Filters) -> list[dict[str, Any]]:
        """visits → chats → contact → booked → arrived counts, overall or per group."""
        c = conversations.c
        key = FUNNEL_GROUPS[group_by] if group_by else sa.literal("all")
        contact = sa.or_(c.contact.is_(True), c.contact_seen.is_(True))

        def count(cond: Any) -> Any:
            return sa.func.sum(sa.case((cond, 1), else_=0))

        query = (
            sa.select(
                key.label("group"),
                sa.func.count().label("visits"),
                count(c.n_visitor > 0).label("chats"),
                count(contact).label("contact"),
                count(c.booked.is_(True)).label("booked"),
                count(c.arrived.is_(True)).label("arrived"),
            )
            .where(*filters.where())
            .group_by(key)
            .order_by(sa.func.count().desc())
        )
        with self.engine.connect() as cx:
            return [dict(r) for r in cx.execute(query).mappings().all()]

    def acceptance(self, filters: Filters) -> dict[str, Any]:
        """How often shown suggestions were used, edited or dismissed."""
        s = suggestions.c
        query = (
            sa.select(s.feedback, sa.func.count())
            .select_from(suggestions.join(conversations, conversations.c.id == s.conversation_id))
            .where(*filters.where())
            .group_by(s.feedback)
        )
        with self.engine.connect() as cx:
            counts = {k or "none": n for k, n in cx.execute(query).all()}
        shown = sum(counts.values())
        answered = shown - counts.get("none", 0)
        used = counts.get("used", 0) + counts.get("edited", 0)
        return {
            "shown": shown,
            "with_feedback": answered,
            "used": counts.get("used", 0),
            "edited": counts.get("edited", 0),
            "dismissed": counts.get("dismissed", 0),
            "acceptance_rate": round(used / answered, 4) if answered else None,
        }

    def iter_conversations(
        self, filters: Filters, batch: int = 500
    ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Stored chats with at least one message, oldest first, each with its messages (for export)."""
        c = conversations.c
        last: tuple[datetime, str] | None = None
        while True:
            query = sa.select(conversations).where(c.n_messages > 0, *filters.where())
            if last is not None:
                query = query.where(sa.tuple_(c.started_at, c.id) > sa.tuple_(*last))
            query = query.order_by(c.started_at, c.id).limit(batch)
            with self.engine.connect() as cx:
                rows = [dict(r) for r in cx.execute(query).mappings().all()]
            if not rows:
                return
            for row in rows:
                yield row, self.messages(row["id"])
            last = (rows[-1]["started_at"], rows[-1]["id"])

    def open_chats(
        self, consultant_id: str | None, limit: int, hospitals: tuple[str, ...] | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """The chats not closed (of ``consultant_id``; None: everyone's), most recently active first:
        ``(total, rows)``, each row the chat with ``unanswered`` (visitor messages after the last
        consultant message), ``waiting_since`` (the first of those) and ``last_visitor_at``.

        Roles are read from the message payloads' ``"role":"…"`` (a quote inside a message's text is
        escaped in the JSON, so a text cannot fake one)."""
        c, e = conversations.c, events.c
        where = [sa.not_(c.closed)]
        if consultant_id is not None:
            where.append(c.consultant_id == consultant_id)
        where += Filters(hospitals=hospitals).where()  # the caller's hospitals (None: all)
        with self._read_gate(), self.engine.connect() as cx:
            total = int(
                cx.execute(sa.select(sa.func.count()).select_from(conversations).where(*where)).scalar() or 0
            )
            rows = [
                dict(r)
                for r in cx.execute(
                    sa.select(conversations).where(*where).order_by(c.last_at.desc(), c.id).limit(limit)
                ).mappings()
            ]
            ids = [r["id"] for r in rows]
            if not ids:
                return total, []
            msg = [e.kind == "message", e.conversation_id.in_(ids)]
            visitor = e.payload.like('%"role":"visitor"%')
            last_reply = (
                sa.select(e.conversation_id.label("cid"), sa.func.max(e.seq).label("seq"))
                .where(*msg, e.payload.like('%"role":"consultant"%'))
                .group_by(e.conversation_id)
                .subquery()
            )
            waiting: dict[str, tuple[int, datetime]] = {
                cid: (int(n), first)
                for cid, n, first in cx.execute(
                    sa.select(e.conversation_id, sa.func.count(), sa.func.min(e.at))
                    .select_from(events.outerjoin(last_reply, last_reply.c.cid == e.conversation_id))
                    .where(*msg, visitor, e.seq > sa.func.coalesce(last_reply.c.seq, -1))
                    .group_by(e.conversation_id)
                ).all()
            }
            last_visitor: dict[str, datetime] = {
                cid: at
                for cid, at in cx.execute(
                    sa.select(e.conversation_id, sa.func.max(e.at))
                    .where(*msg, visitor)
                    .group_by(e.conversation_id)
                ).all()
            }
        for r in rows:
            n, first = waiting.get(r["id"], (0, None))
            r["unanswered"], r["waiting_since"] = n, first
            r["last_visitor_at"] = last_visitor.get(r["id"])
        return total, rows

    def consultant_messages(self, filters: Filters, batch: int = 2000) -> Iterator[dict[str, Any]]:
        """Messages consultants typed, for the compliance report, oldest first, read in batches.

        ``filters``' hospital, department and consultant select chats; its ``since``/``until`` select
        messages by their own time (``since <= at < until``), not by when the chat started. Each item:
        the message payload (role, text, at, pii, compliance …) with ``conversation_id``, ``seq``,
        ``consultant_id`` and ``department``.
        """
        c, e = conversations.c, events.c
        chats = Filters(
            filters.hospital, filters.department, filters.consultant_id, hospitals=filters.hospitals
        ).where()
        when = [e.at >= filters.since] if filters.since is not None else []
        when += [e.at < filters.until] if filters.until is not None else []
        query = (
            sa.select(e.id, e.conversation_id, e.seq, e.payload, c.consultant_id, c.department)
            .select_from(events.join(conversations, conversations.c.id == e.conversation_id))
            # a cheap pre-filter on the JSON text; the role is checked on the parsed payload
            .where(e.kind == "message", e.payload.like('%"role":"consultant"%'), *chats, *when)
            .order_by(e.id)
            .limit(batch)
        )
        last = None
        while True:
            q = query if last is None else query.where(e.id > last)
            with self._read_gate(), self.engine.connect() as cx:
                rows = cx.execute(q).all()
            for _id, cid, seq, payload, consultant_id, department in rows:
                message = orjson.loads(payload)
                if message.get("role") != "consultant":
                    continue
                yield {
                    **message,
                    "conversation_id": cid,
                    "seq": seq,
                    "consultant_id": consultant_id,
                    "department": department,
                }
            if len(rows) < batch:
                return
            last = rows[-1][0]
