"""The desk's work list (issue 16): call tasks created by rules from events, and the rules themselves.

Tables (on :data:`serving.db.metadata`, under migration since ``0005_appointments_tasks``): ``tasks``
(one row per task; ``key`` makes every rule idempotent) and ``task_attempts`` (every call: who, when,
result, note).

Kinds and the rules that create them (:class:`Desk`):

- ``lead_call``: a chat that left contact without booking (an outcome ``contact=true``, or
  :meth:`Desk.sweep` with ``leads=True``, which finds chats whose contact was detected in a message);
  ended (done) by a booking (outcome ``booked=true`` or an appointment) or a refusal;
- ``reminder``: an appointment on a later day than the day it is made, due at ``reminder_hour`` local
  time ``reminder_days_before`` days before it (or at once when that has passed); moved with the
  appointment, ended by its arrival, no-show or cancellation;
- ``no_show_callback``: an appointment marked no-show, by hand or automatically once its time plus
  ``no_show_grace_minutes`` passed with nothing recorded; due at once;
- ``aftercare``: after an arrival, one per day in ``aftercare_days`` (due at ``reminder_hour``).

States::

    open ──assign/claim──> assigned ──attempt──> attempted ──done──> done
      └──────────── snooze (until) ───> snoozed ──(until passes)──> open | assigned

An attempt (``reached``, ``no_answer`` keep the task ``attempted``; ``refused``, ``wrong_number`` and
``rebooked`` end it) needs an assignee; ``rebooked`` takes a time and creates a new appointment
(``rebooked_from`` the task's appointment; a reminder's appointment is cancelled, replaced by the new
one). Every other move is a 409 naming the state and the move.

What calls learn becomes the chat's stored outcome, which ``GET /v1/export`` gives ``yuyue train`` as
labels (never as features: the export's messages and visit do not change): a lead's ``refused`` records
``booked=false`` when no booking is recorded; a rebooking records ``booked=true`` (with ``booked_at``)
through its appointment; an appointment marked arrived records ``arrived=true`` (``arrived_at``), a
no-show ``arrived=false`` unless an arrival is recorded.

Time-based rules run lazily: every read of ``/v1/tasks`` or ``/v1/appointments`` first marks due no-shows
and wakes snoozed tasks (:meth:`Desk.sweep`; indexed, cheap when nothing is due); ``POST /v1/tasks/sweep``
does the same and also creates lead tasks for chats whose contact was seen in a message.

Ranking: the model's expected value (the follow-up queue's :func:`~yuyue.serving.service.followup_item`):
p(booked) for a lead, 1 − p(arrived | booked) for a reminder or a no-show; after-care calls have no
model score (priority 0) and follow by due time. Reasons come with each task.

Masking and calling: a task list carries no personal data; a task's detail shows its chat's contacts
masked (and its patient: chats, no-shows, flag; ``serving/patients.py``). :meth:`Desk.reveal` gives them
unmasked to whoever calls (the assignee, a supervisor, an admin), each reveal written to the audit log.

Patients: a booking (new appointment or a call's rebooking) of a flagged patient needs ``confirmed``
(409 naming the reasons otherwise); outcomes, bookings and the sweep link chats to their patients.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from yuyue.serving.appointments import LOCAL_TZ, AppointmentBook, appointments, proposed_time, view
from yuyue.serving.auth import Caller, Role, check_hospital, check_read, check_write
from yuyue.serving.db import UTCDateTime, metadata
from yuyue.serving.errors import Forbidden, InvalidInput
from yuyue.serving.patients import Patients, contact_spans, masked
from yuyue.serving.store import Conflict, EventStore, NotFound, conversations

KINDS = ("lead_call", "reminder", "no_show_callback", "aftercare")
TASK_STATES = ("open", "assigned", "attempted", "snoozed", "done")
RESULTS = ("reached", "no_answer", "refused", "rebooked", "wrong_number")
ENDING_RESULTS = ("refused", "rebooked", "wrong_number")
CALLABLE_STATES = ("assigned", "attempted", "snoozed")  # the states a call may be recorded in
DUE_FILTERS = ("overdue", "today")

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("key", sa.String(200), nullable=False, unique=True),  # the rule's identity: one task per key
    sa.Column("kind", sa.String(24), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("conversation_id", sa.String(128), nullable=False, index=True),
    sa.Column("appointment_id", sa.String(32), index=True),
    sa.Column("hospital", sa.String(128)),
    sa.Column("department", sa.String(64), index=True),
    sa.Column("consultant_id", sa.String(128), index=True),  # the chat's consultant
    sa.Column("assignee", sa.String(128), index=True),  # consultant id
    sa.Column("detail", sa.String(64)),  # e.g. the after-care day
    sa.Column("due_at", UTCDateTime, nullable=False, index=True),
    sa.Column("snoozed_until", UTCDateTime),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_result", sa.String(16)),
    sa.Column("closed_reason", sa.String(32)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("done_at", UTCDateTime),
)

task_attempts = sa.Table(
    "task_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(32), nullable=False, index=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(128)),  # API key name
    sa.Column("role", sa.String(16)),
    sa.Column("result", sa.String(16), nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("appointment_id", sa.String(32)),  # the new appointment of a rebooking
)


def _local_at(day: datetime, hour: int) -> datetime:
    d = day.astimezone(LOCAL_TZ).date()
    return datetime.combine(d, time(hour), tzinfo=LOCAL_TZ)


def _priority() -> Any:
    """A task's rank as SQL, equal to :func:`~yuyue.serving.service.followup_item`'s priority (before its
    rounding): p(booked) for a lead, 1 - min(1, p(arrived) / p(booked)) for a reminder or a no-show's
    callback, 0 for an after-care call."""
    c, t = conversations.c, tasks.c
    pb, pa = sa.func.coalesce(c.p_booked, 0.0), sa.func.coalesce(c.p_arrived, 0.0)
    arrive_given_booked = sa.case((pb <= 0, 0.0), (pa >= pb, 1.0), else_=pa / pb)
    return sa.case((t.kind == "aftercare", 0.0), (t.kind == "lead_call", pb), else_=1.0 - arrive_given_booked)


def _check_call(result: str, time: datetime | None, doctor: str | None) -> None:
    """A call's result, and the new time and doctor that go with ``rebooked`` only."""
    if result not in RESULTS:
        raise InvalidInput(f"result must be one of {', '.join(RESULTS)}, got {result!r}")
    if result == "rebooked" and time is None:
        raise InvalidInput("time: a 'rebooked' result needs the new appointment's time")
    if result != "rebooked" and (time is not None or doctor is not None):
        raise InvalidInput(f"time and doctor go only with result 'rebooked', not {result!r}")


class Desk:
    """Appointments, tasks and the rules between them, over the service (outcomes) and its store."""

    def __init__(self, settings: Any, service: Any, clock: Callable[[], datetime] | None = None):
        self.settings = settings
        self.service = service
        self.store: EventStore = service.store
        self.engine = service.store.engine
        self.book = AppointmentBook(self.engine)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.patients = Patients(settings, self.store, clock=lambda: self.clock())

    # ---- helpers ---------------------------------------------------------------------------------
    def _chat(self, conversation_id: str) -> dict[str, Any]:
        return self.store.conversation(conversation_id)

    def _system(self, who: Caller) -> Caller:
        """The caller's name with the rights to record outcomes the desk's rules imply (checked before)."""
        return Caller(who.name, Role.ADMIN)

    def _outcome(self, who: Caller, conversation_id: str, values: dict[str, Any]) -> None:
        self.service.outcome(self._system(who), conversation_id, values, False)

    def _add_task(
        self,
        cx: Connection,
        key: str,
        kind: str,
        chat: dict[str, Any],
        due: datetime,
        now: datetime,
        appointment_id: str | None = None,
        detail: str | None = None,
    ) -> bool:
        """Create the task of ``key`` unless it exists; True when created."""
        if cx.execute(sa.select(tasks.c.id).where(tasks.c.key == key)).first() is not None:
            return False
        row = {
            "id": uuid.uuid4().hex,
            "key": key,
            "kind": kind,
            "state": "open",
            "conversation_id": chat["id"],
            "appointment_id": appointment_id,
            "hospital": chat.get("hospital"),
            "department": chat.get("department"),
            "consultant_id": chat.get("consultant_id"),
            "detail": detail,
            "due_at": due,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with cx.begin_nested():
                cx.execute(tasks.insert().values(**row))
        except sa.exc.IntegrityError:  # another request's rule made it meanwhile
            return False
        return True

    @staticmethod
    def _close(cx: Connection, where: list[Any], reason: str, now: datetime) -> int:
        res = cx.execute(
            tasks.update()
            .where(*where, tasks.c.state != "done")
            .values(state="done", closed_reason=reason, done_at=now, updated_at=now)
        )
        return res.rowcount

    def _reminder_due(self, appt_time: datetime, now: datetime) -> datetime | None:
        """When to remind an appointment: reminder_hour, reminder_days_before days before; None when
        the appointment is today (or earlier) in local time."""
        if appt_time.astimezone(LOCAL_TZ).date() <= now.astimezone(LOCAL_TZ).date():
            return None
        days = self.settings.reminder_days_before
        due = _local_at(appt_time - timedelta(days=days), self.settings.reminder_hour)
        return max(due, now)

    # ---- rules ------------------------------------------------------------------------------------
    def on_outcome(self, who: Caller, conversation_id: str, update: dict[str, Any]) -> None:
        """The service's hook, after an outcome is recorded: a booking ends the lead's task; contact
        left without a booking opens one."""
        now = self.clock()
        with self.engine.begin() as cx:
            if update.get("booked"):
                self._close(
                    cx,
                    [tasks.c.kind == "lead_call", tasks.c.conversation_id == conversation_id],
                    "booked",
                    now,
                )
            elif update.get("contact"):
                chat = self._chat(conversation_id)
                if not chat.get("booked"):
                    self._add_task(cx, f"lead:{conversation_id}", "lead_call", chat, now, now)
        self.patients.link(conversation_id)  # an outcome: the chat's visitor is worth knowing again

    def sweep(
        self, leads: bool = False, now: datetime | None = None, link_limit: int | None = 0
    ) -> dict[str, int]:
        """The time-based rules: due no-shows (with their callbacks), snoozed tasks whose time came, and
        (``leads``) lead tasks for chats that left contact without booking; then links up to
        ``link_limit`` chats not linked to their patient yet (None: all of them)."""
        now = now or self.clock()
        grace = timedelta(minutes=self.settings.no_show_grace_minutes)
        counts = {"no_shows": 0, "woken": 0, "leads": 0, "linked": 0}
        with self.engine.connect() as cx:
            due = self.book.due_no_shows(cx, now - grace)
        for appt in due:
            try:
                self._mark(Caller("desk", Role.ADMIN), appt["id"], "no_show", now, auto=True)
                counts["no_shows"] += 1
            except Conflict:  # marked by someone else meanwhile
                pass
        t = tasks.c
        with self.engine.begin() as cx:
            woken = cx.execute(
                tasks.update()
                .where(t.state == "snoozed", t.snoozed_until <= now)
                .values(
                    state=sa.case((t.assignee.is_(None), "open"), else_="assigned"),
                    due_at=t.snoozed_until,
                    snoozed_until=None,
                    updated_at=now,
                )
            )
            counts["woken"] = woken.rowcount
            if leads:
                c = conversations.c
                lead_task = sa.select(t.id).where(t.kind == "lead_call", t.conversation_id == c.id).exists()
                rows = cx.execute(
                    sa.select(conversations).where(
                        sa.or_(c.contact.is_(True), c.contact_seen.is_(True)),
                        sa.not_(sa.func.coalesce(c.booked, False)),
                        sa.not_(lead_task),
                    )
                ).mappings()
                for chat in rows.all():
                    counts["leads"] += self._add_task(
                        cx, f"lead:{chat['id']}", "lead_call", dict(chat), chat["last_at"], now
                    )
        if link_limit is None or link_limit > 0:
            counts["linked"] = self.patients.link_pending(limit=link_limit)
        return counts

    # ---- appointments -----------------------------------------------------------------------------
    def proposal(self, who: Caller, conversation_id: str) -> dict[str, Any]:
        chat = self._chat(conversation_id)
        check_read(who, conversation_id, chat)
        p = proposed_time(self.store, conversation_id)
        return {
            "conversation_id": conversation_id,
            "time": p.time.isoformat() if p else None,
            "text": p.text if p else None,
            "message": p.message if p else None,
            "patient": self.patients.summary(self.patients.link(conversation_id, chat), who.hospitals),
        }

    def create_appointment(
        self,
        who: Caller,
        conversation_id: str,
        *,
        time: datetime | None = None,
        doctor: str | None = None,
        project: str | None = None,
        department: str | None = None,
        note: str | None = None,
        rebooked_from: str | None = None,
        checked: bool = False,
        confirmed: bool = False,
    ) -> dict[str, Any]:
        """A booked appointment for a chat (the chat's booking outcome recorded if it had none); the
        time defaults to the one agreed in the chat. A flagged patient needs ``confirmed`` (409 else)."""
        chat = self._chat(conversation_id)
        if not checked:
            check_write(who, conversation_id, chat, "book appointments for")
        source = "given"
        if time is None:
            p = proposed_time(self.store, conversation_id)
            if p is None:
                raise InvalidInput(
                    f"time: no time given and none agreed in conversation {conversation_id!r}; send 'time'"
                )
            time, source = p.time, "chat"
        elif time.tzinfo is None:
            raise InvalidInput(f"time must carry a timezone offset (got {time.isoformat()})")
        flag_ack = self.patients.check_booking(self.patients.link(conversation_id, chat), confirmed)
        now = self.clock()
        if not chat.get("booked"):
            self._outcome(who, conversation_id, {"booked": True, "booked_at": now})
        row = {
            "conversation_id": conversation_id,
            "hospital": chat.get("hospital"),
            "department": department or chat.get("department"),
            "project": project or chat.get("project"),
            "doctor": doctor,
            "consultant_id": chat.get("consultant_id"),
            "time": time,
            "time_source": source,
            "note": note,
            "rebooked_from": rebooked_from,
            "flag_ack": flag_ack,
        }
        with self.engine.begin() as cx:
            appt = self.book.insert(cx, row, who.name, now)
            self._close(
                cx, [tasks.c.kind == "lead_call", tasks.c.conversation_id == conversation_id], "booked", now
            )
            due = self._reminder_due(time, now)
            if due is not None:
                self._add_task(cx, f"reminder:{appt['id']}", "reminder", chat, due, now, appt["id"])
        return view(appt)

    def _appointment_for_write(self, who: Caller, appointment_id: str, what: str) -> dict[str, Any]:
        appt = self.book.get(appointment_id)
        chat = self._chat(appt["conversation_id"])
        check_write(who, appt["conversation_id"], chat, what)
        return appt

    def appointment(self, who: Caller, appointment_id: str) -> dict[str, Any]:
        appt = self.book.get(appointment_id)
        check_read(
            who,
            appt["conversation_id"],
            {
                "consultant_id": appt["consultant_id"],
                "hospital": self._chat(appt["conversation_id"])["hospital"],
            },
        )
        return view(appt)

    def appointments(
        self, who: Caller, hospitals: Sequence[str] | None = None, **filters: Any
    ) -> dict[str, Any]:
        """Appointments ``who`` may see (consultants: of their own chats), of ``hospitals`` within the
        key's (None: every hospital of the key)."""
        if who.role == Role.CONSULTANT:
            filters["consultant_id"] = who.consultant_id
        filters["hospitals"] = who.hospitals if hospitals is None else _within(who, hospitals)
        limit, offset = filters.pop("limit", 200), filters.pop("offset", 0)
        total, rows = self.book.listing(**filters, limit=limit, offset=offset)
        return {"total": total, "limit": limit, "offset": offset, "items": [view(r) for r in rows]}

    def reschedule(self, who: Caller, appointment_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        self._appointment_for_write(who, appointment_id, "reschedule appointments of")
        if not changes:
            raise InvalidInput(
                "nothing to change: give at least one of time, doctor, project, department, note"
            )
        if "time" in changes and changes["time"].tzinfo is None:
            raise InvalidInput(f"time must carry a timezone offset (got {changes['time'].isoformat()})")
        now = self.clock()
        with self.engine.begin() as cx:
            appt = self.book.reschedule(cx, appointment_id, changes, now)
            if "time" in changes:
                key = f"reminder:{appointment_id}"
                due = self._reminder_due(changes["time"], now)
                if due is None:
                    self._close(cx, [tasks.c.key == key], "rescheduled", now)
                elif (
                    cx.execute(
                        tasks.update()
                        .where(tasks.c.key == key, tasks.c.state != "done")
                        .values(due_at=due, updated_at=now)
                    ).rowcount
                    == 0
                ):
                    chat = self._chat(appt["conversation_id"])
                    if not self._add_task(cx, key, "reminder", chat, due, now, appointment_id):
                        # the reminder was done (called) before the move: remind the new time again
                        cx.execute(
                            tasks.update()
                            .where(tasks.c.key == key)
                            .values(
                                state="open",
                                assignee=None,
                                due_at=due,
                                closed_reason=None,
                                done_at=None,
                                updated_at=now,
                            )
                        )
        return view(appt)

    def mark(self, who: Caller, appointment_id: str, to: str) -> dict[str, Any]:
        """Mark an appointment arrived, no_show or cancelled (with the rules that follow)."""
        verb = {
            "arrived": "mark arrivals of",
            "no_show": "mark no-shows of",
            "cancelled": "cancel appointments of",
        }
        self._appointment_for_write(who, appointment_id, verb[to])
        return view(self._mark(who, appointment_id, to, self.clock()))

    def _mark(
        self,
        who: Caller,
        appointment_id: str,
        to: str,
        now: datetime,
        auto: bool = False,
        note: str | None = None,
    ) -> dict[str, Any]:
        with self.engine.begin() as cx:
            appt = self.book.move(cx, appointment_id, to, who.name, now, auto=auto, note=note)
            chat = self._chat(appt["conversation_id"])
            t = tasks.c
            self._close(cx, [t.kind == "reminder", t.appointment_id == appointment_id], to, now)
            if to == "arrived":
                self._close(cx, [t.kind == "no_show_callback", t.appointment_id == appointment_id], to, now)
                for day in self.settings.aftercare_days:
                    due = _local_at(now + timedelta(days=day), self.settings.reminder_hour)
                    self._add_task(
                        cx,
                        f"aftercare:{appointment_id}:{day}",
                        "aftercare",
                        chat,
                        due,
                        now,
                        appointment_id,
                        detail=f"day {day}",
                    )
            elif to == "no_show":
                self._add_task(
                    cx, f"no_show:{appointment_id}", "no_show_callback", chat, now, now, appointment_id
                )
        if to == "arrived":
            self._outcome(who, appt["conversation_id"], {"arrived": True, "arrived_at": now})
        elif to == "no_show" and not chat.get("arrived"):
            self._outcome(who, appt["conversation_id"], {"arrived": False})
        return appt

    # ---- tasks ------------------------------------------------------------------------------------
    def _visible(self, who: Caller) -> list[Any]:
        t = tasks.c
        scope = [t.hospital.in_(who.hospitals)] if who.hospitals is not None else []
        if who.role != Role.CONSULTANT:
            return scope
        me = who.consultant_id
        return [
            *scope,
            sa.or_(
                t.assignee == me,
                sa.and_(t.assignee.is_(None), sa.or_(t.consultant_id == me, t.consultant_id.is_(None))),
            ),
        ]

    def _task_view(self, row: dict[str, Any], now: datetime) -> dict[str, Any]:
        from yuyue.serving.service import followup_item

        chat = {
            "id": row["conversation_id"],
            "p_booked": row["p_booked"],
            "p_arrived": row["p_arrived"],
            "reasons": row["reasons"],
            "booked": row["kind"] in ("reminder", "no_show_callback", "aftercare"),
            "booked_at": row["booked_at"],
            "consultant_id": row["consultant_id"],
            "department": row["department"],
            "hospital": row["hospital"],
            "started_at": row["started_at"],
            "last_at": row["last_at"],
        }
        item = followup_item(chat, now)
        priority, summary, reasons = item["priority"], item["summary"], item["reasons"]
        if row["kind"] == "aftercare":
            priority, summary, reasons = 0.0, f"到诊后回访（{row['detail']}）", []
        elif row["kind"] == "no_show_callback":
            summary = "预约未到诊，需回访；" + summary
        elif row["kind"] == "reminder":
            summary = "来院提醒；" + summary
        out = {
            k: row[k]
            for k in (
                "id",
                "kind",
                "state",
                "conversation_id",
                "appointment_id",
                "hospital",
                "department",
                "consultant_id",
                "assignee",
                "detail",
                "attempts",
                "last_result",
                "closed_reason",
            )
        }
        for k in ("due_at", "snoozed_until", "created_at", "updated_at", "done_at", "appointment_time"):
            out[k] = row[k].isoformat() if row.get(k) else None
        out["overdue"] = row["state"] != "done" and row["due_at"] < now
        out.update(
            priority=priority,
            summary=summary,
            reasons=reasons,
            p_booked=row["p_booked"],
            p_arrived=row["p_arrived"],
        )
        return out

    def _select(self) -> sa.Select[Any]:
        c, a = conversations.c, appointments.c
        return sa.select(
            tasks,
            c.p_booked,
            c.p_arrived,
            c.reasons,
            c.booked_at,
            c.started_at,
            c.last_at,
            a.time.label("appointment_time"),
        ).select_from(
            tasks.join(conversations, conversations.c.id == tasks.c.conversation_id).outerjoin(
                appointments, appointments.c.id == tasks.c.appointment_id
            )
        )

    def tasks(
        self,
        who: Caller,
        *,
        kind: str | None = None,
        state: str | None = None,
        assignee: str | None = None,
        department: str | None = None,
        due: str | None = None,
        hospitals: Sequence[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Tasks ``who`` may see, ranked (see the module docstring); done ones only with ``state=done``;
        of ``hospitals`` within the key's (None: every hospital of the key)."""
        now = self.clock()
        t = tasks.c
        where = self._visible(who)  # the key's hospitals
        if hospitals is not None:
            where.append(t.hospital.in_(_within(who, hospitals)))
        where.append(t.state == state if state else t.state != "done")
        for col, value in ((t.kind, kind), (t.assignee, assignee), (t.department, department)):
            if value is not None:
                where.append(col == value)
        if due == "overdue":
            where.append(t.due_at < now)
        elif due == "today":
            end = datetime.combine(
                now.astimezone(LOCAL_TZ).date() + timedelta(days=1), time(0), tzinfo=LOCAL_TZ
            )
            where.append(t.due_at < end)
        rank = _priority()
        page = self._select().where(*where).order_by(rank.desc(), t.due_at, t.id).limit(limit).offset(offset)
        with self.engine.connect() as cx:
            total = cx.execute(sa.select(sa.func.count()).select_from(tasks).where(*where)).scalar() or 0
            rows = [dict(r) for r in cx.execute(page).mappings()]
        # ranked in SQL (the same numbers as followup_item's): only the page is built in Python
        items = [self._task_view(r, now) for r in rows]
        return {"total": int(total), "limit": limit, "offset": offset, "items": items}

    def _row(self, task_id: str, cx: Connection) -> dict[str, Any]:
        row = cx.execute(self._select().where(tasks.c.id == task_id)).mappings().first()
        if row is None:
            raise NotFound(f"no task {task_id!r}")
        return dict(row)

    def _check_sees(self, who: Caller, row: dict[str, Any]) -> None:
        check_hospital(who, row["hospital"], f"task {row['id']!r}")
        if who.role != Role.CONSULTANT:
            return
        me = who.consultant_id
        if row["assignee"] == me or (row["assignee"] is None and row["consultant_id"] in (None, me)):
            return
        raise Forbidden(f"task {row['id']!r} is not assigned to consultant {me!r} nor claimable by it")

    def task(self, who: Caller, task_id: str) -> dict[str, Any]:
        with self.engine.connect() as cx:
            row = self._row(task_id, cx)
            self._check_sees(who, row)
            attempts = (
                cx.execute(
                    sa.select(task_attempts)
                    .where(task_attempts.c.task_id == task_id)
                    .order_by(task_attempts.c.id)
                )
                .mappings()
                .all()
            )
        out = self._task_view(row, self.clock())
        out["attempt_log"] = [
            {**{k: v for k, v in a.items() if k not in ("task_id",)}, "at": a["at"].isoformat()}
            for a in attempts
        ]
        out["patient"] = self.patients.summary(self.patients.link(row["conversation_id"]), who.hospitals)
        # masked for everyone: the number itself only through reveal() (recorded in the audit log)
        out["contacts"] = [
            {**c, "value": masked(c["type"], c["value"])}
            for c in contact_spans(self.store.messages(row["conversation_id"]))
        ]
        return out

    def reveal(self, who: Caller, task_id: str) -> dict[str, Any]:
        """The contacts of a task's chat, unmasked, for whoever calls: the task's assignee, a supervisor
        or an admin. Each reveal is recorded in the audit log (``read_raw``, with the task)."""
        from yuyue.serving.audit import AuditAction
        from yuyue.serving.privacy import audit_row

        with self.engine.connect() as cx:
            row = self._row(task_id, cx)
        self._check_acts(who, row, "reveal the number of")
        if row["state"] == "done":
            raise Conflict(f"task {task_id!r} is done ({row['closed_reason']}): there is no call to make")
        contacts = contact_spans(self.store.messages(row["conversation_id"]))
        if contacts:
            self.store.audit(
                audit_row(
                    who,
                    AuditAction.READ_RAW,
                    conversation_id=row["conversation_id"],
                    detail={
                        "via": "task",
                        "task_id": task_id,
                        "kind": row["kind"],
                        "types": sorted({c["type"] for c in contacts}),
                    },
                )
            )
        return {
            "task_id": task_id,
            "conversation_id": row["conversation_id"],
            "contacts": contacts,
            "recorded": bool(contacts),
        }

    def _transition(
        self, cx: Connection, row: dict[str, Any], move: str, allowed: tuple[str, ...], values: dict[str, Any]
    ) -> None:
        if row["state"] not in allowed:
            raise Conflict(
                f"task {row['id']!r} is {row['state']}: cannot {move} it (allowed from: {', '.join(allowed)})"
            )
        res = cx.execute(
            tasks.update().where(tasks.c.id == row["id"], tasks.c.state == row["state"]).values(**values)
        )
        if res.rowcount != 1:
            raise Conflict(f"task {row['id']!r} changed meanwhile; read it again")

    def assign(self, who: Caller, task_id: str, assignee: str) -> dict[str, Any]:
        if not assignee or not assignee.strip():
            raise InvalidInput("assignee: give the consultant id to assign the task to")
        now = self.clock()
        with self.engine.begin() as cx:
            row = self._row(task_id, cx)
            check_hospital(who, row["hospital"], f"task {task_id!r}")
            self._transition(
                cx,
                row,
                "assign",
                ("open", "assigned", "attempted", "snoozed"),
                {
                    "assignee": assignee.strip(),
                    "state": "assigned" if row["state"] != "attempted" else "attempted",
                    "updated_at": now,
                },
            )
        return self.task(who, task_id)

    def claim(self, who: Caller, task_id: str) -> dict[str, Any]:
        now = self.clock()
        with self.engine.begin() as cx:
            row = self._row(task_id, cx)
            self._check_sees(who, row)
            if row["assignee"] not in (None, who.consultant_id):
                raise Conflict(f"task {task_id!r} is already assigned to {row['assignee']!r}")
            self._transition(
                cx,
                row,
                "claim",
                ("open",),
                {"assignee": who.consultant_id, "state": "assigned", "updated_at": now},
            )
        return self.task(who, task_id)

    def _check_acts(self, who: Caller, row: dict[str, Any], move: str) -> None:
        check_hospital(who, row["hospital"], f"task {row['id']!r}")
        if who.role == Role.CONSULTANT and row["assignee"] != who.consultant_id:
            if row["assignee"] is None:
                self._check_sees(who, row)
                raise Conflict(f"task {row['id']!r} is open: claim it before you {move} it")
            raise Forbidden(
                f"task {row['id']!r} is assigned to {row['assignee']!r}, not to {who.consultant_id!r}"
            )

    def attempt(
        self,
        who: Caller,
        task_id: str,
        result: str,
        note: str | None = None,
        time: datetime | None = None,
        doctor: str | None = None,
        confirmed: bool = False,
    ) -> dict[str, Any]:
        """Record a call; ``rebooked`` (with ``time``) creates a new appointment (a flagged patient's
        needs ``confirmed``: 409 else, and nothing is recorded)."""
        _check_call(result, time, doctor)
        now = self.clock()
        with self.engine.connect() as cx:
            row = self._row(task_id, cx)
        self._check_acts(who, row, "record a call on")
        if row["state"] not in CALLABLE_STATES:
            raise Conflict(
                f"task {task_id!r} is {row['state']}: cannot record a call on it (allowed from: {', '.join(CALLABLE_STATES)})"
                + ("; assign or claim it first" if row["state"] == "open" else "")
            )
        if result == "rebooked":
            self.patients.check_booking(self.patients.link(row["conversation_id"]), confirmed)
        # the call is recorded first: the booking a rebooking makes ends the lead's tasks (this one too)
        row, attempt_id = self._record_call(who, task_id, result, note, now)
        if result == "refused" and row["kind"] == "lead_call":
            self._lead_refused(who, row["conversation_id"])
        new_appt = None
        if result == "rebooked":
            new_appt = self._rebook(who, row, attempt_id, time, doctor, confirmed, now)
        out = self.task(who, task_id)
        out["appointment"] = new_appt
        return out

    def _record_call(
        self, who: Caller, task_id: str, result: str, note: str | None, now: datetime
    ) -> tuple[dict[str, Any], int]:
        """The call's attempt row and the task's move (done on an ending result): the task's row as
        read before the move, and the attempt's id."""
        ends = result in ENDING_RESULTS
        with self.engine.begin() as cx:
            row = self._row(task_id, cx)
            self._transition(
                cx,
                row,
                "record a call on",
                CALLABLE_STATES,
                {
                    "state": "done" if ends else "attempted",
                    "attempts": row["attempts"] + 1,
                    "last_result": result,
                    "closed_reason": result if ends else None,
                    "done_at": now if ends else None,
                    "snoozed_until": None,
                    "updated_at": now,
                },
            )
            attempt_id = cx.execute(
                task_attempts.insert().values(
                    task_id=task_id,
                    at=now,
                    actor=who.name,
                    role=who.role,
                    result=result,
                    note=note,
                )
            ).inserted_primary_key[0]
        return row, attempt_id

    def _rebook(
        self,
        who: Caller,
        row: dict[str, Any],
        attempt_id: int,
        time: datetime | None,
        doctor: str | None,
        confirmed: bool,
        now: datetime,
    ) -> dict[str, Any]:
        """A call's new appointment (a reminder's old one, still booked, is cancelled), linked to the
        call's attempt row."""
        old = row["appointment_id"]
        if row["kind"] == "reminder" and old and self.book.get(old)["status"] == "booked":
            self._mark(who, old, "cancelled", now, note="rebooked by a reminder call")
        new_appt = self.create_appointment(
            who,
            row["conversation_id"],
            time=time,
            doctor=doctor,
            rebooked_from=old,
            checked=True,
            confirmed=confirmed,
        )
        with self.engine.begin() as cx:
            cx.execute(
                task_attempts.update()
                .where(task_attempts.c.id == attempt_id)
                .values(appointment_id=new_appt["id"])
            )
        return new_appt

    def _lead_refused(self, who: Caller, conversation_id: str) -> None:
        """A lead who refused on the phone did not book: the chat's outcome ``booked=false`` (a label the
        export gives ``yuyue train``), unless a booking or a refusal is recorded already."""
        if self._chat(conversation_id).get("booked") is None:
            self._outcome(who, conversation_id, {"booked": False})

    def snooze(self, who: Caller, task_id: str, until: datetime) -> dict[str, Any]:
        now = self.clock()
        if until.tzinfo is None:
            raise InvalidInput(f"until must carry a timezone offset (got {until.isoformat()})")
        if until <= now:
            raise InvalidInput(
                f"until must be in the future (got {until.isoformat()}, now {now.isoformat()})"
            )
        with self.engine.begin() as cx:
            row = self._row(task_id, cx)
            self._check_acts(who, row, "snooze")
            self._transition(
                cx,
                row,
                "snooze",
                ("open", "assigned", "attempted", "snoozed"),
                {"state": "snoozed", "snoozed_until": until, "due_at": until, "updated_at": now},
            )
        return self.task(who, task_id)

    def done(self, who: Caller, task_id: str, note: str | None = None) -> dict[str, Any]:
        now = self.clock()
        with self.engine.begin() as cx:
            row = self._row(task_id, cx)
            self._check_acts(who, row, "close")
            self._transition(
                cx,
                row,
                "close",
                ("attempted",),
                {"state": "done", "closed_reason": "done", "done_at": now, "updated_at": now},
            )
        return self.task(who, task_id)


def _within(who: Caller, hospitals: Sequence[str]) -> tuple[str, ...]:
    """``hospitals`` narrowed to the key's (fails closed: the routes refuse one outside them with 403)."""
    return tuple(h for h in hospitals if who.in_scope(h))


def install(state: Any) -> Desk:
    """Give the app's state a :class:`Desk` as ``state.desk`` and hook it to the service's outcomes."""
    desk = Desk(state.settings, state.service)
    state.desk = desk
    state.service.outcome_hooks.append(desk.on_outcome)
    return desk


__all__ = ["DUE_FILTERS", "KINDS", "RESULTS", "TASK_STATES", "Desk", "install", "task_attempts", "tasks"]
