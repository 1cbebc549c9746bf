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

The same book carries the desk's feedback on suggestions (``suggestions.feedback``) to the ranker:
per pool entry, the answered suggestions and how many were accepted (used 1, edited
:data:`EDIT_CREDIT`, dismissed 0) shift its score by :func:`models.replies.rank.feedback_shift`
(smoothed towards the desk's overall rate, bounded). An edited suggestion's final text, made a pool
reply (:func:`reply_text`: normalised, masked, slotted) and passed by the consultant-message guard, becomes
an ``unreviewed`` mined entry (``edited_from`` the reply edited, the chat's department), offered
wherever the reply it edited is, credited one use per edit; a text the guard blocks is not added.
Counts are read in full once per process (one aggregate by reply id), then only the new ``feedback``
events (a primary-key range of ``events`` per refresh): each counts as its action minus the same
suggestion's previous one, so a changed mind is not counted twice.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from yuyue.models.replies.guard import ComplianceGuard, check_consultant_message
from yuyue.models.replies.pool import (
    GENERIC_DEPARTMENTS,
    PoolEntry,
    ReplyPool,
    canonical_key,
    entry_id,
    reply_text,
)
from yuyue.models.replies.rank import RankWeights, feedback_shift
from yuyue.serving.db import UTCDateTime, metadata

if TYPE_CHECKING:
    from yuyue.serving.store import Filters

log = logging.getLogger("yuyue.serving")

ACTIONS = ("allow", "block", "edit")
DECISION_STATUS = {"allow": "allowed", "block": "blocked", "edit": "edited"}
LIST_STATUSES = ("unreviewed", "allowed", "blocked", "edited")
MAX_EDIT_CHARS = 500
REFRESH_S = 2.0
EDIT_CREDIT = 0.5  # an edited suggestion counts as half accepted for the reply edited
ACCEPT = {"used": 1.0, "edited": EDIT_CREDIT, "dismissed": 0.0}
FEEDBACK_LAG = 256  # event ids re-read behind the mark: ids are not committed in order
FEEDBACK_BATCH = 5000  # feedback events read per refresh at most
MAX_EDITED = 5000  # edited suggestions read at start (the latest)

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
        # the desk's feedback (see the module docstring)
        self._fb: dict[str, list[float]] = {}  # reply id -> [accepted, answered]
        self._fb_total = [0.0, 0.0]  # over every answered suggestion
        self._fb_mark: int | None = None  # events read up to this id (None: not loaded yet)
        self._fb_seen: set[int] = set()  # feedback event ids read within FEEDBACK_LAG of the mark
        self._edited: dict[str, PoolEntry] = {}  # pool entries made of edited suggestions
        self._edited_depts: dict[str, Counter[str]] = {}
        self._variants: dict[str, set[str]] = {}  # reply id -> ids of entries edited from it
        self._edit_ok: dict[str, bool] = {}  # guard verdict per edited text's id
        self._edited_rev = 0  # one higher per change of _edited
        self._attached: list[tuple[weakref.ref[Any], list[int]]] = []  # suggester, [rev installed]
        self.feedback_events = 0  # feedback events read incrementally

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
            try:
                self._refresh_feedback()
            except sa.exc.SQLAlchemyError as exc:  # keep the counts read last; try again later
                log.warning("could not read suggestion feedback: %s", type(exc).__name__)
            self._install_all()

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
        """Make ``model``'s suggester (if any) consult this book (and hold the edited replies)."""
        suggester = getattr(model, "suggester", None)
        if suggester is not None:
            suggester.reviews = self
            self._attached = [(r, v) for r, v in self._attached if r() not in (None, suggester)]
            self._attached.append((weakref.ref(suggester), [-1]))
            with self._lock:
                self._install_all()

    def detach(self, model: Any) -> None:
        """Undo :meth:`attach`: the suggester no longer consults this book nor holds its edited replies."""
        suggester = getattr(model, "suggester", None)
        if suggester is None:
            return
        if suggester.reviews is self:
            suggester.reviews = None
        self._attached = [(r, v) for r, v in self._attached if r() not in (None, suggester)]
        pool: ReplyPool = suggester.pool
        pool.swap_entries(drop=[e.id for e in pool if e.edited_from is not None])

    # ---- the desk's feedback ---------------------------------------------------------------------
    def feedback_shift(self, reply_id: str, weights: RankWeights = RankWeights()) -> float:
        """The score shift of ``reply_id`` from the feedback on it (0 without any)."""
        row = self._fb.get(reply_id)
        if row is None or row[1] <= 0:
            return 0.0
        accepted, answered = self._fb_total
        return feedback_shift(row[0], row[1], accepted / answered if answered > 0 else 0.5, weights)

    def variants(self, reply_id: str) -> Sequence[str]:
        """Ids of the pool entries consultants made of ``reply_id`` by editing it."""
        return tuple(self._variants.get(reply_id, ()))

    def feedback_counts(self, reply_id: str) -> tuple[float, float]:
        """``(accepted, answered)`` of ``reply_id`` as the ranker sees them."""
        row = self._fb.get(reply_id, [0.0, 0.0])
        return row[0], row[1]

    def _count(self, reply_id: str | None, action: str | None, n: float) -> None:
        if reply_id is None or action not in ACCEPT:
            return
        row = self._fb.setdefault(reply_id, [0.0, 0.0])
        row[0] += n * ACCEPT[action]
        row[1] += n
        self._fb_total[0] += n * ACCEPT[action]
        self._fb_total[1] += n

    def _credit_edit(self, reply_id: str | None, final_text: str | None, dept: str | None, n: int) -> None:
        """An edit of ``reply_id`` into ``final_text`` (``n`` = 1) or its withdrawal (``n`` = -1)."""
        if reply_id is None or not final_text:
            return
        text = reply_text(final_text)
        if len(canonical_key(text)) < 2:
            return
        eid = entry_id(text)
        ok = self._edit_ok.get(eid)
        if ok is None:
            ok = self._edit_ok[eid] = bool(check_consultant_message(text)["allowed"])
        if not ok:
            return  # a text the guard blocks never enters the pool (nor gains credit)
        row = self._fb.setdefault(eid, [0.0, 0.0])  # one use per edit into it
        row[0] = max(row[0] + n, 0.0)
        row[1] = max(row[1] + n, 0.0)
        depts = self._edited_depts.setdefault(eid, Counter())
        entry = self._edited.get(eid)
        if entry is None:
            if n < 0:
                return
            entry = self._edited[eid] = PoolEntry(id=eid, text=text, source="mined", edited_from=reply_id)
        entry.count += n
        if dept:
            depts[dept] += n
            depts += Counter()  # drops departments at zero
        if entry.count <= 0:
            del self._edited[eid]
            self._edited_depts.pop(eid, None)
            for ids in self._variants.values():
                ids.discard(eid)
        else:
            self._variants.setdefault(reply_id, set()).add(eid)
            self._edited_depts[eid] = depts
        self._edited_rev += 1

    def _refresh_feedback(self) -> None:
        e = _events()
        with self.engine.connect() as cx:
            if self._fb_mark is None:
                self._load_feedback(cx)
                return
            top = int(cx.execute(sa.select(sa.func.coalesce(sa.func.max(e.c.id), 0))).scalar() or 0)
            if top <= self._fb_mark and not self._fb_seen:
                return
            rows = cx.execute(
                sa.select(e.c.id, e.c.conversation_id, e.c.payload)
                .where(e.c.id > self._fb_mark - FEEDBACK_LAG, e.c.id <= top, e.c.kind == "feedback")
                .order_by(e.c.id)
                .limit(FEEDBACK_BATCH + FEEDBACK_LAG)
            ).all()
            new = [r for r in rows if r[0] not in self._fb_seen][:FEEDBACK_BATCH]
            if len(rows) == FEEDBACK_BATCH + FEEDBACK_LAG and new:
                top = new[-1][0]  # more to read: the rest next time
            if new:
                self._apply_events(cx, new)
        self._fb_seen.update(r[0] for r in new)
        self._fb_mark = max(top, self._fb_mark)
        self._fb_seen = {i for i in self._fb_seen if i > self._fb_mark - FEEDBACK_LAG}

    def _load_feedback(self, cx: sa.Connection) -> None:
        """Every answered suggestion's feedback, in one snapshot with the events' mark."""
        from yuyue.serving.store import conversations, suggestions

        e, s, c = _events().c, suggestions.c, conversations.c
        if cx.dialect.name == "postgresql":
            cx = cx.execution_options(isolation_level="REPEATABLE READ")
        with cx.begin():
            mark = int(cx.execute(sa.select(sa.func.coalesce(sa.func.max(e.id), 0))).scalar() or 0)
            seen = cx.execute(
                sa.select(e.id).where(e.id > mark - FEEDBACK_LAG, e.kind == "feedback")
            ).scalars()
            self._fb_seen = set(seen)
            counts = cx.execute(
                sa.select(s.reply_id, s.feedback, sa.func.count())
                .where(s.feedback.is_not(None), s.reply_id.is_not(None))
                .group_by(s.reply_id, s.feedback)
            ).all()
            edits = cx.execute(
                sa.select(s.reply_id, s.final_text, c.department)
                .select_from(suggestions.outerjoin(conversations, c.id == s.conversation_id))
                .where(s.feedback == "edited", s.final_text.is_not(None), s.reply_id.is_not(None))
                .order_by(s.feedback_at.desc())
                .limit(MAX_EDITED)
            ).all()
        for rid, action, n in counts:
            self._count(rid, action, n)
        for rid, text, dept in edits:
            self._credit_edit(rid, text, dept, 1)
        self._fb_mark = mark

    def _apply_events(self, cx: sa.Connection, new: Sequence[Any]) -> None:
        """Count new feedback events: each as its action minus its suggestion's previous action."""
        from yuyue.serving.store import conversations, suggestions

        e = _events().c
        parsed = [(r[0], r[1], _feedback_payload(r[2])) for r in new]
        sids = {p[0] for _, _, p in parsed if p[0]}
        convs = {conv for _, conv, _ in parsed}
        if not sids:
            return
        reply_of = dict(
            cx.execute(
                sa.select(suggestions.c.id, suggestions.c.reply_id).where(suggestions.c.id.in_(sids))
            ).all()
        )
        dept_of = dict(
            cx.execute(
                sa.select(conversations.c.id, conversations.c.department).where(conversations.c.id.in_(convs))
            ).all()
        )
        history: dict[str, list[tuple[int, str | None, str | None]]] = {}
        for eid, payload in cx.execute(
            sa.select(e.id, e.payload)
            .where(e.conversation_id.in_(convs), e.kind == "feedback", e.id <= new[-1][0])
            .order_by(e.id)
        ).all():
            sid, action, text = _feedback_payload(payload)
            if sid in sids:
                history.setdefault(sid, []).append((eid, action, text))
        for event_id, conv, (sid, action, text) in parsed:
            if not sid:
                continue
            rid, dept = reply_of.get(sid), dept_of.get(conv)
            before = [h for h in history.get(sid, ()) if h[0] < event_id]
            if before:
                _, old_action, old_text = before[-1]
                self._count(rid, old_action, -1)
                if old_action == "edited":
                    self._credit_edit(rid, old_text, dept, -1)
            self._count(rid, action, 1)
            if action == "edited":
                self._credit_edit(rid, text, dept, 1)
            self.feedback_events += 1

    def _install_all(self) -> None:
        """Bring each attached suggester's pool up to date with the edited replies."""
        for ref, installed in self._attached:
            suggester = ref()
            if suggester is not None and installed[0] != self._edited_rev:
                self._install(suggester.pool)
                installed[0] = self._edited_rev

    def _install(self, pool: ReplyPool) -> None:
        add = []
        for eid, made in self._edited.items():
            own = pool.entries.get(eid)
            if own is not None and own.edited_from is None:
                continue  # the pool has this reply already: the edit credited it
            origin = pool.get(made.edited_from or "")
            depts = sorted(self._edited_depts.get(eid, ()))
            project = origin.project if origin is not None else None
            add.append(
                PoolEntry(
                    id=eid,
                    text=made.text,
                    source="mined",
                    stage=origin.stage if origin is not None else None,
                    count=made.count,
                    booked_after=pool.base_rate,
                    status="unreviewed",
                    concern=origin.concern if origin is not None else None,
                    department=depts[0] if len(depts) == 1 else None,
                    project=project if project and project in made.text else None,
                    departments=depts if 1 < len(depts) < GENERIC_DEPARTMENTS else None,
                    edited_from=made.edited_from,
                )
            )
        keep = {e.id for e in add}
        drop = [e.id for e in pool if e.edited_from is not None and e.id not in keep]
        if add or drop:
            pool.swap_entries(add=add, drop=drop)

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

    def usage(self, reply_ids: Sequence[str], filters: Filters | None = None) -> dict[str, dict[str, int]]:
        """Times shown and the feedback counts per reply id, from the suggestions table; ``filters``: only
        the suggestions of the chats they select (a scoped key's hospitals, ``?hospital=``)."""
        from yuyue.serving.store import conversations, suggestions

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
        where = filters.where() if filters is not None else []
        if where:  # the chats' columns: through conversations
            query = query.select_from(
                suggestions.join(conversations, conversations.c.id == s.conversation_id)
            ).where(*where)
        with self.engine.connect() as cx:
            for rid, feedback, n in cx.execute(query).all():
                row = out[rid]
                row["shown"] += n
                if feedback in row:
                    row[feedback] += n
        return out


def _events() -> sa.Table:
    from yuyue.serving.store import events

    return events


def _feedback_payload(payload: str | None) -> tuple[str | None, str | None, str | None]:
    """``(suggestion id, action, final text)`` of a feedback event's payload."""
    try:
        p = orjson.loads(payload or "{}")
    except orjson.JSONDecodeError:
        return None, None, None
    if not isinstance(p, dict):
        return None, None, None
    return p.get("suggestion_id"), p.get("action"), p.get("final_text")


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
