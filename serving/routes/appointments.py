"""Appointments: booked from a chat, listed by day / department / doctor, rescheduled, cancelled, marked
arrived or no-show (see ``serving/appointments.py`` for the states, ``serving/tasks.py`` for the rules)."""

from datetime import date as Date
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from yuyue.data.contract import Text64, Text500
from yuyue.serving.auth import Role, require_role
from yuyue.serving.deps import AnyRole, State, Who
from yuyue.serving.errors import errors
from yuyue.serving.routes.patients import HOSPITALS, PatientSummary, list_hospitals
from yuyue.serving.schemas import CONVERSATION_ID, FILTER

router = APIRouter(tags=["appointments"])
APPOINTMENT_ID = Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")
WRITERS = (Role.CONSULTANT, Role.SUPERVISOR)


class NewAppointment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conversation_id: CONVERSATION_ID
    time: AwareDatetime | None = Field(None, description="default: the visit time agreed in the chat")
    doctor: Text64 | None = None
    project: Text64 | None = Field(None, description="default: the chat's project")
    department: Text64 | None = Field(None, description="default: the chat's department")
    note: Text500 | None = None
    confirmed: bool = Field(
        False,
        description="the visitor's patient is flagged (no-shows, complaints, unpaid visits) and the "
        "booking was confirmed with them (a flagged patient's booking is a 409 without it)",
    )


class AppointmentChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time: AwareDatetime | None = None
    doctor: Text64 | None = None
    project: Text64 | None = None
    department: Text64 | None = None
    note: Text500 | None = None


class Appointment(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    conversation_id: str
    time: datetime
    day: str
    status: Literal["booked", "arrived", "no_show", "cancelled"]
    auto_no_show: bool
    time_source: Literal["given", "chat"]
    doctor: str | None = None
    department: str | None = None
    project: str | None = None
    rebooked_from: str | None = None
    flag_ack: str | None = Field(None, description="the patient's flag reasons confirmed at booking")


class AppointmentPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[Appointment]


class Proposal(BaseModel):
    conversation_id: str
    time: datetime | None = Field(None, description="the last visit time agreed in the chat, if any")
    text: str | None = Field(None, description="the words it came from (明天下午3点)")
    message: int | None = Field(None, description="the message's seq")
    patient: PatientSummary | None = Field(
        None, description="the chat's patient (its flag asks for confirmation)"
    )


@router.post(
    "/v1/appointments",
    status_code=201,
    response_model=Appointment,
    responses=errors(400, 401, 403, 404, 409, 413, 422, 429, 503),
)
def create(body: NewAppointment, who: Who, state: State) -> dict[str, Any]:
    """Book an appointment from a chat (its booking outcome is recorded if it had none); a reminder
    task is due the day before. A flagged patient's booking is a 409 naming the reasons unless
    ``confirmed`` (a flag never refuses care)."""
    require_role(who, WRITERS)
    return state.desk.create_appointment(who, **body.model_dump())


@router.get(
    "/v1/appointments",
    response_model=AppointmentPage,
    responses=errors(401, 403, 422, 429, 503),
)
def listing(
    who: AnyRole,
    state: State,
    date: Date | None = Query(None, description="local day of the appointments, e.g. 2026-12-01"),
    department: FILTER = None,
    doctor: FILTER = None,
    status: Literal["booked", "arrived", "no_show", "cancelled"] | None = None,
    conversation_id: FILTER = None,
    hospital: HOSPITALS = None,
    limit: int = Query(200, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    """One day's (or every) appointment in time order; consultants see those of their own chats, keys
    scoped to hospitals those of their hospitals (``hospital`` narrows it). Due no-shows are marked
    first."""
    hospitals = list_hospitals(who, hospital)
    state.desk.sweep()
    return state.desk.appointments(
        who,
        hospitals=hospitals,
        day=date.isoformat() if date else None,
        department=department,
        doctor=doctor,
        status=status,
        conversation_id=conversation_id,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/v1/appointments/proposal",
    response_model=Proposal,
    responses=errors(401, 403, 404, 422, 429, 503),
)
def proposal(
    who: AnyRole, state: State, conversation_id: Annotated[CONVERSATION_ID, Query()]
) -> dict[str, Any]:
    """The appointment time the chat agreed on (the default of a new appointment)."""
    return state.desk.proposal(who, conversation_id)


@router.get(
    "/v1/appointments/{appointment_id}",
    response_model=Appointment,
    responses=errors(401, 403, 404, 422, 429, 503),
)
def get(who: AnyRole, state: State, appointment_id: str = APPOINTMENT_ID) -> dict[str, Any]:
    state.desk.sweep()
    return state.desk.appointment(who, appointment_id)


@router.patch(
    "/v1/appointments/{appointment_id}",
    response_model=Appointment,
    responses=errors(400, 401, 403, 404, 409, 413, 422, 429, 503),
)
def change(
    body: AppointmentChange, who: Who, state: State, appointment_id: str = APPOINTMENT_ID
) -> dict[str, Any]:
    """Reschedule (time) or change doctor, project, department, note of a booked appointment (409
    otherwise); the reminder moves with it."""
    require_role(who, WRITERS)
    return state.desk.reschedule(who, appointment_id, body.model_dump(exclude_none=True))


def _marker(action: str, status: str, doc: str) -> None:
    @router.post(
        f"/v1/appointments/{{appointment_id}}/{action}",
        response_model=Appointment,
        responses=errors(401, 403, 404, 409, 422, 429, 503),
        name=f"appointment_{action.replace('-', '_')}",
        description=doc,
    )
    def mark(who: Who, state: State, appointment_id: str = APPOINTMENT_ID) -> dict[str, Any]:
        require_role(who, WRITERS)
        return state.desk.mark(who, appointment_id, status)


_marker(
    "arrived",
    "arrived",
    "Mark a booked appointment arrived (the chat's arrived outcome is recorded; "
    "after-care tasks follow). 409 from any other status but an automatic no-show.",
)
_marker(
    "no-show",
    "no_show",
    "Mark a booked appointment a no-show (the chat's arrived=false is recorded; a "
    "callback task follows). 409 from any other status.",
)
_marker("cancel", "cancelled", "Cancel a booked appointment (its reminder ends). 409 from any other status.")
