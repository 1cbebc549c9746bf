"""Hospital knowledge (医院资料): doctors with duty and leave, projects with price ranges, activities,
address and directions. Everyone with a key reads it; admins write it whole (``PUT``), checked first:
a 422 names each bad field (an activity's wording naming the compliance rule it breaks) and stores
nothing. The served replies use a write from the next message on (other workers within 2 s).

Each hospital may have its own document (``?hospital=H``; its chats' replies are filled from it) and
the default document (the ``hospital_id`` setting's) serves chats without a hospital and hospitals
without one. Without ``?hospital=``: the key's hospital for a key scoped to one, else the default.
A key scoped to hospitals reads and (admins) writes only its hospitals' documents (403 naming the
hospital otherwise); the default document is the group's: writing it needs a group-level key.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from yuyue.serving import knowledge as kb
from yuyue.serving.auth import Caller, Role
from yuyue.serving.auth import require_group as auth_require_group
from yuyue.serving.deps import State, Who, caller_hospitals, require
from yuyue.serving.errors import InvalidInput, errors, validation_problem
from yuyue.serving.state import Yuyue

router = APIRouter(tags=["knowledge"])

Admin = Annotated[Caller, Depends(require())]  # admins only (require admits admins to every role)
HospitalParam = Query(
    None,
    min_length=1,
    max_length=kb.MAX_HOSPITAL_ID,
    description="the hospital's document; default: the key's hospital (a key scoped to one), else the "
    "default document (the hospital_id setting's, serving chats of hospitals without their own)",
)


class KnowledgeView(BaseModel):
    hospital_id: str = Field(description="whose document: a hospital's code, or the default's id")
    default: bool = Field(description="the default document (chats of hospitals without their own)")
    rev: int = Field(description="one higher per write; 0: nothing written yet")
    updated_at: str | None
    updated_by: str | None
    editable: bool = Field(description="whether the caller may write it (admins; the default: group-level)")
    hospitals: list[str] = Field(
        description="the documents the caller may pick (?hospital=): the default one's id first, then the "
        "key's hospitals (a group-level key: every hospital with a stored document)"
    )
    knowledge: kb.Knowledge


class DoctorOnDuty(BaseModel):
    name: str
    title: str
    department: str
    specialties: list[str]
    start: str = Field(description="the first range's start")
    end: str = Field(description="the last range's end")
    hours: str = Field(description="every range that day, e.g. 09:00-12:00,14:00-17:30")


class DoctorOff(BaseModel):
    name: str
    department: str
    why: str = Field(description="leave | no duty that weekday")


class DayView(BaseModel):
    date: date
    department: str | None
    project: kb.Project | None = Field(description="the knowledge's project for the given name or alias")
    on_duty: list[DoctorOnDuty] = Field(
        description="recommended in this order (specialised in the project first)"
    )
    off: list[DoctorOff]
    activities: list[kb.Activity] = Field(description="valid that day for the department and project")


class _Refused(InvalidInput):
    """A document whose parts the field checks passed but the whole does not (references, wording)."""

    def __init__(self, exc: kb.KnowledgeError):
        super().__init__(str(exc))
        self.problems = exc.problems

    def response(self) -> Response:
        return validation_problem(
            [{"type": "knowledge", "loc": ["body", *p.loc], "msg": p.msg} for p in self.problems]
        )


def _view(stored: kb.Stored, who: Caller, state: Yuyue) -> dict[str, Any]:
    default_id = state.settings.hospital_id
    hospitals = who.hospitals if who.hospitals is not None else _store(state).hospitals()
    return {
        "hospital_id": stored.hospital_id,
        "default": stored.hospital_id == default_id,
        "rev": stored.rev,
        "updated_at": stored.updated_at.isoformat() if stored.updated_at else None,
        "updated_by": stored.updated_by,
        "editable": who.has_role(Role.ADMIN) and (stored.hospital_id != default_id or who.hospitals is None),
        "hospitals": [default_id, *(h for h in hospitals if h != default_id)],
        "knowledge": stored.knowledge,
    }


def _store(state: Yuyue) -> kb.KnowledgeStore:
    return kb.KnowledgeStore(state.engine)


def _hospital(who: Caller, state: Yuyue, hospital: str | None) -> str:
    """Whose document a request is about: ``hospital`` (403 outside the key's hospitals; the default
    document, shared by every hospital, is read by every key), else the key's only hospital, else the
    default document's id."""
    default_id = state.settings.hospital_id
    if hospital == default_id:
        return default_id
    scope = caller_hospitals(who, hospital)
    if hospital is not None:
        return hospital
    if scope is not None and len(scope) == 1:
        return scope[0]
    return default_id


@router.get("/v1/knowledge", response_model=KnowledgeView, responses=errors(401, 403, 422, 429, 503))
def get_knowledge(who: Who, state: State, hospital: str | None = HospitalParam) -> dict[str, Any]:
    """A hospital's knowledge as stored (every role; rev 0 and empty: none written, its chats are served
    from the default document)."""
    return _view(_store(state).read(_hospital(who, state, hospital)), who, state)


@router.put(
    "/v1/knowledge", response_model=KnowledgeView, responses=errors(400, 401, 403, 409, 413, 422, 429, 503)
)
def put_knowledge(
    body: kb.Knowledge,
    who: Admin,
    state: State,
    rev: int | None = Query(
        None, ge=0, le=2**31 - 1, description="the revision edited: 409 when another was written since"
    ),
    hospital: str | None = HospitalParam,
) -> dict[str, Any]:
    """Replace the hospital's knowledge (admins). Checked whole before anything is stored: 422 naming each
    bad field, an unknown department a doctor or activity names, an activity's title, wording or
    conditions that break the compliance guard (naming the rule). A key scoped to hospitals writes its
    hospitals' documents only; the default document is shared by every hospital: a group-level key."""
    hid = _hospital(who, state, hospital)
    if hid == state.settings.hospital_id:
        auth_require_group(who, "writing the default knowledge")
    if len(hid) > kb.MAX_HOSPITAL_ID:  # a key's only hospital may be longer (chats allow 128)
        raise InvalidInput(
            f"hospital {hid!r}: a knowledge document's hospital is at most {kb.MAX_HOSPITAL_ID} characters"
        )
    try:
        stored = _store(state).write(hid, body, who.name, expect_rev=rev)
    except kb.KnowledgeError as exc:
        raise _Refused(exc) from None
    kb.book(state.service).written(stored)
    return _view(stored, who, state)


@router.get("/v1/knowledge/day", response_model=DayView, responses=errors(401, 403, 422, 429, 503))
def knowledge_day(
    who: Who,
    state: State,
    day: date = Query(alias="date", description="the visit day"),
    department: str | None = Query(None, min_length=1, max_length=64),
    project: str | None = Query(None, min_length=1, max_length=64, description="a project's name or alias"),
    hospital: str | None = HospitalParam,
) -> dict[str, Any]:
    """What the replies would use for a visit on ``date``: the doctors on duty (and those off, why),
    the activities valid, the project's price range and duration (every role)."""
    stored = _store(state).read(_hospital(who, state, hospital))
    index = kb.Index.of(stored.knowledge, stored.rev)
    proj = kb.find_project(index, department, project, [])
    doctors = [d for d in stored.knowledge.doctors if department is None or d.department == department]
    if department is None and proj is None:
        on = [(d, duty) for d in doctors if (duty := kb.on_duty(d, day)) is not None]
    else:
        on = kb.doctors_on_duty(index, department, proj, day)
    working = {(d.department, d.name) for d, _ in on}
    off = [
        {
            "name": d.name,
            "department": d.department,
            "why": "leave" if kb.on_leave(d, day) else "no duty that weekday",
        }
        for d in doctors
        if (d.department, d.name) not in working
    ]
    return {
        "date": day,
        "department": department,
        "project": proj,
        "on_duty": [
            {
                "name": d.name,
                "title": d.title,
                "department": d.department,
                "specialties": d.specialties,
                "start": duty.start,
                "end": duty.end,
                "hours": duty.hours,
            }
            for d, duty in on
        ],
        "off": off,
        "activities": kb.activities_on(index, department, proj, day),
    }
