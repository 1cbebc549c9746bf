"""Appointments: a booking with a time, a doctor, a project and a department (issue 16).

The ``appointments`` table (on :data:`serving.db.metadata`, under migration since
``0005_appointments_tasks``) holds one row per appointment. States::

    booked ─┬─> arrived
            ├─> no_show      (marked, or automatically once ``time + no_show_grace_minutes`` passed
            │                 with nothing recorded: see :meth:`AppointmentBook.due_no_shows`)
            └─> cancelled
    no_show (automatic) ─> arrived   (a late arrival corrects the automatic mark)

Only a ``booked`` appointment can be rescheduled. A rebooking (a call result) never reopens an
appointment: it creates a new one whose ``rebooked_from`` names the old one.

``day`` is the local date (Asia/Shanghai, the desk's zone) of ``time``: ``GET /v1/appointments?date=``
lists one day's arrivals by it.

The time proposed for a new appointment is the last visit time the chat agreed on
(:func:`proposed_time`): the stored messages are re-read and parsed with the same entity parser the
model's state uses (``features.entities.parse_visit_time``), at the messages' own local times. The
model's state keeps only "days until the visit" as a feature, so the time itself is recomputed here.

The rules that follow an appointment's events (reminder, callback and after-care tasks) are
``serving/tasks.py``'s :class:`~yuyue.serving.tasks.Desk`; this module only reads and writes rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from yuyue.serving.db import UTCDateTime, metadata
from yuyue.serving.store import Conflict, EventStore, NotFound

LOCAL_TZ = ZoneInfo("Asia/Shanghai")  # the desk's zone (as serving.service.LOCAL_TZ)
STATUSES = ("booked", "arrived", "no_show", "cancelled")
# status -> the statuses it may move to (by hand); an automatic no-show may still become an arrival
MOVES: dict[str, tuple[str, ...]] = {"booked": ("arrived", "no_show", "cancelled")}

appointments = sa.Table(
    "appointments",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("conversation_id", sa.String(128), nullable=False, index=True),
    sa.Column("hospital", sa.String(128)),
    sa.Column("department", sa.String(64), index=True),
    sa.Column("project", sa.String(64)),
    sa.Column("doctor", sa.String(64), index=True),
    sa.Column("consultant_id", sa.String(128), index=True),  # the chat's consultant
    sa.Column("time", UTCDateTime, nullable=False, index=True),
    sa.Column("day", sa.String(10), nullable=False, index=True),  # local date of time
    sa.Column("status", sa.String(16), nullable=False, index=True),  # booked | arrived | no_show | cancelled
    sa.Column("auto_no_show", sa.Boolean, nullable=False, default=False),
    sa.Column("time_source", sa.String(16), nullable=False),  # given | chat
    sa.Column("rebooked_from", sa.String(32)),  # the appointment this one replaces (a call's rebooking)
    sa.Column("note", sa.Text),
    sa.Column("flag_ack", sa.String(500)),  # a flagged patient's reasons, confirmed at booking (0006)
    sa.Column("created_by", sa.String(128)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("status_at", UTCDateTime),  # when status last changed
    sa.Column("status_by", sa.String(128)),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)


def local_day(at: datetime) -> str:
    return at.astimezone(LOCAL_TZ).date().isoformat()


@dataclass(frozen=True)
class Proposal:
    time: datetime
    text: str  # the expression it came from (明天下午3点)
    message: int  # the message's seq


def proposed_time(store: EventStore, conversation_id: str) -> Proposal | None:
    """The last visit time agreed in the chat's stored messages, resolved at each message's local time."""
    from yuyue.features.entities import parse_visit_time
    from yuyue.features.normalize import normalize

    found = None
    for m in store.messages(conversation_id):
        at = datetime.fromisoformat(m["at"]).astimezone(LOCAL_TZ)
        when, text = parse_visit_time(normalize(m["text"]), at)
        if when is not None:
            found = Proposal(when, text or "", m["seq"])
    return found


def view(row: Any) -> dict[str, Any]:
    out = dict(row)
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat()
    return out


class AppointmentBook:
    """Rows of the ``appointments`` table; every change is one conditional UPDATE (a concurrent change
    makes it a :class:`Conflict`, never a lost write)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def insert(self, cx: Connection, row: dict[str, Any], actor: str | None, now: datetime) -> dict[str, Any]:
        full = {
            "id": uuid.uuid4().hex,
            "status": "booked",
            "auto_no_show": False,
            "day": local_day(row["time"]),
            "created_by": actor,
            "created_at": now,
            "updated_at": now,
            **row,
        }
        cx.execute(appointments.insert().values(**full))
        return full

    def get(self, appointment_id: str, cx: Connection | None = None) -> dict[str, Any]:
        query = sa.select(appointments).where(appointments.c.id == appointment_id)
        if cx is not None:
            row = cx.execute(query).mappings().first()
        else:
            with self.engine.connect() as c:
                row = c.execute(query).mappings().first()
        if row is None:
            raise NotFound(f"no appointment {appointment_id!r}")
        return dict(row)

    def listing(
        self,
        *,
        day: str | None = None,
        department: str | None = None,
        doctor: str | None = None,
        status: str | None = None,
        conversation_id: str | None = None,
        consultant_id: str | None = None,
        hospitals: tuple[str, ...] | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> tuple[int, list[dict[str, Any]]]:
        """``hospitals``: the caller's (None: every hospital; an appointment carries its chat's)."""
        a = appointments.c
        where: list[Any] = [a.hospital.in_(hospitals)] if hospitals is not None else []
        for col, value in (
            (a.day, day),
            (a.department, department),
            (a.doctor, doctor),
            (a.status, status),
            (a.conversation_id, conversation_id),
            (a.consultant_id, consultant_id),
        ):
            if value is not None:
                where.append(col == value)
        with self.engine.connect() as cx:
            total = (
                cx.execute(sa.select(sa.func.count()).select_from(appointments).where(*where)).scalar() or 0
            )
            rows = cx.execute(
                sa.select(appointments).where(*where).order_by(a.time, a.id).limit(limit).offset(offset)
            ).mappings()
            return int(total), [dict(r) for r in rows]

    def move(
        self,
        cx: Connection,
        appointment_id: str,
        to: str,
        actor: str | None,
        now: datetime,
        auto: bool = False,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Change the status; :class:`Conflict` naming the transition when the rules do not allow it."""
        appt = self.get(appointment_id, cx)
        frm = appt["status"]
        allowed = to in MOVES.get(frm, ()) or (frm == "no_show" and appt["auto_no_show"] and to == "arrived")
        if not allowed:
            raise Conflict(
                f"appointment {appointment_id!r} is {frm}: it cannot be marked {to} "
                f"(allowed from {frm}: {', '.join(MOVES.get(frm, ())) or 'none'})"
            )
        values: dict[str, Any] = {
            "status": to,
            "auto_no_show": auto,
            "status_at": now,
            "status_by": actor,
            "updated_at": now,
        }
        if note is not None:
            values["note"] = note
        a = appointments.c
        res = cx.execute(
            appointments.update().where(a.id == appointment_id, a.status == frm).values(**values)
        )
        if res.rowcount != 1:
            raise Conflict(f"appointment {appointment_id!r} changed meanwhile; read it again")
        return {**appt, **values}

    def reschedule(
        self, cx: Connection, appointment_id: str, changes: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        appt = self.get(appointment_id, cx)
        if appt["status"] != "booked":
            raise Conflict(
                f"appointment {appointment_id!r} is {appt['status']}: only a booked appointment can be changed"
            )
        values = dict(changes, updated_at=now)
        if "time" in values:
            values["day"] = local_day(values["time"])
            values["time_source"] = "given"
        a = appointments.c
        res = cx.execute(
            appointments.update().where(a.id == appointment_id, a.status == "booked").values(**values)
        )
        if res.rowcount != 1:
            raise Conflict(f"appointment {appointment_id!r} changed meanwhile; read it again")
        return {**appt, **values}

    def due_no_shows(self, cx: Connection, cutoff: datetime) -> list[dict[str, Any]]:
        """Booked appointments whose time is before ``cutoff`` (now minus the grace)."""
        a = appointments.c
        rows = cx.execute(
            sa.select(appointments).where(a.status == "booked", a.time < cutoff).order_by(a.time)
        ).mappings()
        return [dict(r) for r in rows]


__all__ = ["STATUSES", "AppointmentBook", "Proposal", "appointments", "local_day", "proposed_time", "view"]
