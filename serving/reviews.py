"""Reply review: supervisors allow, block or edit pool replies; the running server applies it at once.

Decisions live in the ``reply_reviews`` table (on :data:`serving.db.metadata`, under migration since
``0004_reviews``), keyed by :func:`review_key`: a mined reply's key is the hash of its normalised,
slotted, canonical text (:func:`models.replies.pool.entry_id`), which is its pool id, so a reply mined
again by the next training run (same text, same hash) keeps its decision; a script keeps its library id.

:class:`ReviewBook` is what the serving side holds (one per process): it writes decisions (``rev`` is a
counter over all decisions, one higher per write) and is the suggester's hook
(``ReplySuggester.reviews``): :meth:`ReviewBook.refresh` re-reads the decisions only when ``max(rev)``
changed, and reads ``max(rev)`` at most once per ``refresh_s`` seconds (a write in this process marks
the cache stale at once, so its next suggestion already applies it; other workers within
``refresh_s``). No database round trip per message.

``yuyue replies`` (``models/replies/pool_cli.py``) writes the same table through the same class.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from yuyue.models.replies.guard import ComplianceGuard, check_consultant_message
from yuyue.models.replies.pool import PoolEntry, ReplyPool, entry_id
from yuyue.serving.db import UTCDateTime, metadata

log = logging.getLogger("yuyue.serving")

ACTIONS = ("allow", "block", "edit")
DECISION_STATUS = {"allow": "allowed", "block": "blocked", "edit": "edited"}
LIST_STATUSES = ("unreviewed", "allowed", "blocked", "edited")
MAX_EDIT_CHARS = 500
REFRESH_S = 2.0

reply_reviews = sa.Table(
    "reply_reviews",
    metadata,
    sa.Column("key", sa.String(128), primary_key=True),  # review_key of the reply
    sa.Column("reply_id", sa.String(128), nullable=False),  # its pool id when reviewed
    sa.Column("status", sa.String(16), nullable=False),  # allowed | blocked | edited
    sa.Column("text", sa.Text),  # the edited text (status edited)
    sa.Column("original", sa.Text, nullable=False),  # the reply's (masked) text when reviewed
    sa.Column("rev", sa.Integer, nullable=False, unique=True),  # one higher per write
    sa.Column("reviewed_by", sa.String(128)),
    sa.Column("role", sa.String(16)),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)


class ReviewError(ValueError):
    """A review the rules do not allow (unknown action, edited text failing the guard or holding
    personal data); the message names what is wrong."""


@dataclass(frozen=True)
class Decision:
    key: str
    reply_id: str
    status: str  # allowed | blocked | edited
    text: str | None
    original: str
    rev: int
    reviewed_by: str | None
    role: str | None
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "text": self.text,
            "reviewed_by": self.reviewed_by,
            "role": self.role,
            "reviewed_at": self.updated_at.isoformat(),
        }


def review_key(entry: PoolEntry) -> str:
    """What a decision is keyed by: a script's library id, a mined reply's canonical-text hash."""
    return entry.id if entry.source == "script" else entry_id(entry.text)


def check_edit(text: str | None, guard: ComplianceGuard | None = None) -> str:
    """The edited text, stripped, when it may be suggested; :class:`ReviewError` naming the rule or the
    personal data otherwise."""
    from yuyue.features.pii import find_pii_raw

    if text is None or not text.strip():
        raise ReviewError("action 'edit' needs a non-empty 'text'")
    text = text.strip()
    if len(text) > MAX_EDIT_CHARS:
        raise ReviewError(f"edited text has {len(text)} characters; at most {MAX_EDIT_CHARS}")
    guard = guard or ComplianceGuard.default()
    verdict = guard.check(text)
    if not verdict.allowed:
        rules = guard.rules_by_id
        named = [f"{r} ({rules[r].cite})" if r in rules else r for r in verdict.rules]
        raise ReviewError("edited text breaks the compliance rule(s) " + ", ".join(named))
    # the suggester serves only what the rules and the learned classifier both allow: so must an edit
    combined = check_consultant_message(text)
    if not combined["allowed"]:
        named = [f"{r['id']} ({r.get('citation') or r['category']})" for r in combined["rules"]]
        raise ReviewError("edited text breaks the compliance rule(s) " + ", ".join(named))
    spans = find_pii_raw(text)
    if spans:
        kinds = ", ".join(sorted({s.type for s in spans}))
        raise ReviewError(f"edited text holds personal data ({kinds}); use a slot such as {{address_form}}")
    return text


class ReviewBook:
    """Decisions in the store plus their in-process cache (see the module docstring)."""

    def __init__(self, engine: Engine, serve_unreviewed: bool = True, refresh_s: float = REFRESH_S):
        self.engine = engine
        self.serve_unreviewed = serve_unreviewed
        self.refresh_s = refresh_s
        self._decisions: dict[str, Decision] = {}
        self._version = -1
        self._next_check = 0.0  # time.monotonic() of the next max(rev) read
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str], str] = {}  # (pool id, text) -> key, memoised
        self.reads = 0  # max(rev) reads (for tests: no read per message)
        self.loads = 0  # full re-reads

    # ---- the suggester's hook ----------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        """Re-read the decisions if another process (or this one) changed them; cheap when not due."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        with self._lock:
            if not force and now < self._next_check:
                return
            self._next_check = now + self.refresh_s
            try:
                self.reads += 1
                with self.engine.connect() as cx:
                    version = cx.execute(
                        sa.select(sa.func.coalesce(sa.func.max(reply_reviews.c.rev), 0))
                    ).scalar()
                    if version != self._version:
                        rows = cx.execute(sa.select(reply_reviews)).mappings().all()
                        self._decisions = {r["key"]: Decision(**r) for r in rows}
                        self._version = int(version or 0)
                        self.loads += 1
            except sa.exc.SQLAlchemyError as exc:  # keep the decisions read last; try again later
                log.warning("could not read reply reviews: %s", type(exc).__name__)

    def decision(self, entry: PoolEntry) -> Decision | None:
        k = (entry.id, entry.text)
        key = self._keys.get(k)
        if key is None:
            key = self._keys[k] = review_key(entry)
        return self._decisions.get(key)

    def review(self, entry: PoolEntry) -> tuple[str, str | None] | None:
        """``(pool status, text to use or None)`` decided for ``entry``; None when not reviewed."""
        d = self.decision(entry)
        if d is None:
            return None
        return (
            ("blocked", None)
            if d.status == "blocked"
            else ("allowed", d.text if d.status == "edited" else None)
        )

    def attach(self, model: Any) -> None:
        """Make ``model``'s suggester (if any) consult this book."""
        suggester = getattr(model, "suggester", None)
        if suggester is not None:
            suggester.reviews = self

    # ---- writes ------------------------------------------------------------------------------
    def decide(
        self,
        entry: PoolEntry,
        action: str,
        text: str | None = None,
        *,
        actor: str | None = None,
        role: str | None = None,
        guard: ComplianceGuard | None = None,
    ) -> Decision:
        """Record ``action`` (allow | block | edit with ``text``) on ``entry``; replaces an earlier one."""
        if action not in ACTIONS:
            raise ReviewError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        if action == "edit":
            text = check_edit(text, guard)
        elif text is not None:
            raise ReviewError(f"'text' goes only with action 'edit', not {action!r}")
        key = review_key(entry)
        now = datetime.now(UTC)
        t = reply_reviews
        with self.engine.begin() as cx:
            if cx.dialect.name == "postgresql":  # writers one at a time: rev stays unique and increasing
                cx.execute(sa.text("LOCK TABLE reply_reviews IN SHARE ROW EXCLUSIVE MODE"))
            rev = int(cx.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.rev), 0))).scalar() or 0) + 1
            decision = Decision(
                key=key,
                reply_id=entry.id,
                status=DECISION_STATUS[action],
                text=text,
                original=entry.text,
                rev=rev,
                reviewed_by=actor,
                role=role,
                updated_at=now,
            )
            values = asdict(decision)
            del values["key"]
            if cx.execute(t.update().where(t.c.key == key).values(**values)).rowcount == 0:
                cx.execute(t.insert().values(key=key, **values))
        self._next_check = 0.0  # this process applies it from the next suggestion on
        return decision

    # ---- reads -------------------------------------------------------------------------------
    def all(self) -> dict[str, Decision]:
        """Every decision by key, read now."""
        self.refresh(force=True)
        return dict(self._decisions)

    def status_of(self, entry: PoolEntry, decisions: dict[str, Decision]) -> str:
        """The listed status: the decision's, else the pool's own (scripts: allowed; mined: unreviewed)."""
        d = decisions.get(review_key(entry))
        if d is not None:
            return d.status
        return (
            "allowed"
            if entry.status == "allowed"
            else ("blocked" if entry.status == "blocked" else "unreviewed")
        )

    def listing(
        self, pool: ReplyPool, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[int, list[tuple[PoolEntry, str, Decision | None]]]:
        """Pool entries (most used first) with their status and decision; ``(total, page)``."""
        if status is not None and status not in LIST_STATUSES:
            raise ReviewError(f"status must be one of {', '.join(LIST_STATUSES)}, got {status!r}")
        decisions = self.all()
        rows = []
        for e in pool.select():
            st = self.status_of(e, decisions)
            if status is None or st == status:
                rows.append((e, st, decisions.get(review_key(e))))
        return len(rows), rows[offset : offset + limit]

    def usage(self, reply_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Times shown and the feedback counts per reply id, from the suggestions table."""
        from yuyue.serving.store import suggestions

        out: dict[str, dict[str, int]] = {
            r: {"shown": 0, "used": 0, "edited": 0, "dismissed": 0} for r in reply_ids
        }
        if not reply_ids or "reply_id" not in suggestions.c:
            return out
        s = suggestions.c
        query = (
            sa.select(s.reply_id, s.feedback, sa.func.count())
            .where(s.reply_id.in_(list(reply_ids)))
            .group_by(s.reply_id, s.feedback)
        )
        with self.engine.connect() as cx:
            for rid, feedback, n in cx.execute(query).all():
                row = out[rid]
                row["shown"] += n
                if feedback in row:
                    row[feedback] += n
        return out


def install(state: Any) -> ReviewBook:
    """Give the app's state (``serving.state.Yuyue``) a :class:`ReviewBook` as ``state.reviews`` and
    attach it to the model in use and to every model loaded later (``state.models.set``)."""
    book = ReviewBook(state.engine, serve_unreviewed=state.settings.serve_unreviewed)
    state.reviews = book
    holder = state.models
    if holder.ready:
        book.attach(holder.get()[0])
    original_set = holder.set

    def set_and_attach(model: Any, version: str) -> None:
        book.attach(model)
        original_set(model, version)

    holder.set = set_and_attach
    return book


__all__ = [
    "ACTIONS",
    "LIST_STATUSES",
    "Decision",
    "ReviewBook",
    "ReviewError",
    "check_edit",
    "install",
    "reply_reviews",
    "review_key",
]
