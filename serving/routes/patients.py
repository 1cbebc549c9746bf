"""Patients: a returning visitor's chats linked by the keyed hash of their phone, WeChat, QQ, e-mail or
visitor id, with their history (chats, outcomes, appointments, calls, incidents), no-shows and flag
(see ``serving/patients.py`` for the rules). Supervisors read every patient and record complaints and
unpaid visits; a consultant reads the patients of its chats and tasks; personal data is masked except
for the chat's own consultant (whose raw read is audited)."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from yuyue.data.contract import Text128, Text1000
from yuyue.serving.auth import MAX_HOSPITALS, Caller, Role, check_read, require_role
from yuyue.serving.deps import State, Who, caller_hospitals
from yuyue.serving.errors import InvalidInput, errors
from yuyue.serving.schemas import CONVERSATION_ID

router = APIRouter(tags=["patients"])
PATIENT_ID = Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")
READERS = (Role.CONSULTANT, Role.SUPERVISOR)
# the desk's lists (patients, appointments, tasks): one or more hospitals, ?hospital=A&hospital=B
HOSPITALS = Annotated[
    list[Text128] | None,
    Query(
        alias="hospital",
        max_length=MAX_HOSPITALS,
        description="only these hospitals (repeat for several); a key scoped to hospitals gets 403 "
        "for one outside them. Default: every hospital of the key",
    ),
]


def list_hospitals(who: Caller, hospitals: list[str] | None) -> tuple[str, ...] | None:
    """The hospitals a desk list covers: those asked for, each checked as every list checks its
    ``hospital`` (:func:`~yuyue.serving.deps.caller_hospitals`: 403 naming one outside the key's), else
    the key's (None: every hospital)."""
    if not hospitals:
        return caller_hospitals(who)
    for h in hospitals:
        caller_hospitals(who, h)
    return tuple(dict.fromkeys(hospitals))


class PatientSummary(BaseModel):
    id: str
    chats: int = Field(description="chats linked to the patient, in the key's hospitals (or those asked for)")
    returning: bool = Field(description="more than one chat: a returning visitor")
    no_shows: int = Field(description="no-shows in the key's hospitals (or those asked for)")
    flagged: bool = Field(description="never refuses care: booking asks for confirmation (confirmed=true)")
    flag_reasons: list[str]


class PatientPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[PatientSummary]


class FlagReason(BaseModel):
    kind: Literal["no_show", "complaint", "unpaid"]
    count: int
    after: int = Field(description="the count that flags (the patient_flag_after setting)")
    text: str


class Flag(BaseModel):
    flagged: bool
    reasons: list[FlagReason]
    cleared_at: datetime | None = None
    cleared_by: str | None = None
    cleared_note: str | None = None


class Contact(BaseModel):
    type: Literal["phone", "wechat", "qq", "email"]
    value: str = Field(description="masked unless the caller is the consultant of the chat it came from")
    conversation_id: str
    message: int


class PatientHistory(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    created_at: datetime
    returning: bool
    flag: Flag
    counts: dict[str, int]
    chats: list[dict[str, Any]]
    appointments: list[dict[str, Any]]
    tasks: list[dict[str, Any]] = Field(description="call tasks, each with its calls")
    incidents: list[dict[str, Any]]
    contacts: list[Contact]
    masked: bool


class Incident(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["complaint", "unpaid"]
    note: Text1000 | None = None
    conversation_id: CONVERSATION_ID | None = Field(
        None, description="the chat it concerns, one of the patient's"
    )


class ClearFlag(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Text1000 = Field(description="why the flag is cleared")


@router.get("/v1/patients", response_model=PatientPage, responses=errors(401, 403, 404, 422, 429, 503))
def listing(
    who: Who,
    state: State,
    conversation_id: CONVERSATION_ID | None = Query(None, description="the patient of this chat"),
    flagged: bool | None = Query(None, description="true: the patients flagged now (supervisors)"),
    hospital: HOSPITALS = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    """The patient of a chat (linked on the spot; an empty page when the chat revealed nothing to link it
    by), or the flagged patients (those with a chat in the hospitals). A summary counts the chats and
    no-shows in the key's hospitals, or in ``hospital``; its flag is the group's."""
    require_role(who, READERS)
    hospitals = list_hospitals(who, hospital)
    patients = state.desk.patients
    if conversation_id is not None:
        if flagged is not None:
            raise InvalidInput("give conversation_id or flagged, not both")
        chat = state.service.store.conversation(conversation_id)
        check_read(who, conversation_id, chat)
        summary = patients.summary(patients.link(conversation_id, chat), hospitals)
        items = [summary] if summary else []
        return {
            "total": len(items),
            "limit": limit,
            "offset": offset,
            "items": items[offset : offset + limit],
        }
    if flagged:
        require_role(who, (Role.SUPERVISOR,))
        return patients.flagged(limit, offset, hospitals)
    raise InvalidInput("give conversation_id (the patient of a chat) or flagged=true (the flagged patients)")


@router.get(
    "/v1/patients/{patient_id}", response_model=PatientHistory, responses=errors(401, 403, 404, 422, 429, 503)
)
def history(who: Who, state: State, patient_id: str = PATIENT_ID) -> dict[str, Any]:
    """A patient's history: chats with outcomes, appointments (arrivals, no-shows), call tasks with
    every call, incidents, contacts; counts and the flag with its reasons. A merged patient answers as
    the patient it became."""
    require_role(who, READERS)
    state.desk.sweep()
    return state.desk.patients.history(who, patient_id)


@router.post(
    "/v1/patients/{patient_id}/incidents",
    response_model=PatientSummary,
    status_code=201,
    responses=errors(400, 401, 403, 404, 413, 422, 429, 503),
)
def incident(body: Incident, who: Who, state: State, patient_id: str = PATIENT_ID) -> dict[str, Any]:
    """Record a complaint or an unpaid visit (supervisors); enough of them flag the patient."""
    require_role(who, (Role.SUPERVISOR,))
    return state.desk.patients.record_incident(who, patient_id, body.kind, body.note, body.conversation_id)


@router.post(
    "/v1/patients/{patient_id}/clear-flag",
    response_model=PatientSummary,
    responses=errors(400, 401, 403, 404, 409, 413, 422, 429, 503),
)
def clear_flag(body: ClearFlag, who: Who, state: State, patient_id: str = PATIENT_ID) -> dict[str, Any]:
    """Clear a patient's flag (supervisors, with the reason): its counts start again; 409 when not flagged."""
    require_role(who, (Role.SUPERVISOR,))
    return state.desk.patients.clear_flag(who, patient_id, body.note)
