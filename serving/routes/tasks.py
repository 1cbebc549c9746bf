"""The work list: call tasks (lead, reminder, no-show callback, after-care), ranked by the model's
expected value, assigned or claimed, their calls recorded (see ``serving/tasks.py`` for the states and
rules). Supervisors assign and see all; consultants see their own, assigned and claimable tasks and act
on those assigned to them; analysts read."""

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from yuyue.data.contract import Text64, Text128, Text1000
from yuyue.serving.auth import Role, require_group, require_role
from yuyue.serving.deps import AnyRole, State, Who
from yuyue.serving.errors import errors
from yuyue.serving.routes.appointments import Appointment
from yuyue.serving.routes.patients import HOSPITALS, PatientSummary, list_hospitals
from yuyue.serving.schemas import FILTER

router = APIRouter(tags=["work list"])
TASK_ID = Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")
Kind = Literal["lead_call", "reminder", "no_show_callback", "aftercare"]
TaskState = Literal["open", "assigned", "attempted", "snoozed", "done"]
Result = Literal["reached", "no_answer", "refused", "rebooked", "wrong_number"]


class Task(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    kind: Kind
    state: TaskState
    conversation_id: str
    appointment_id: str | None = None
    appointment_time: datetime | None = None
    department: str | None = None
    consultant_id: str | None = None
    assignee: str | None = None
    due_at: datetime
    overdue: bool
    snoozed_until: datetime | None = None
    attempts: int
    last_result: Result | None = None
    closed_reason: str | None = None
    priority: float = Field(
        description="p(booked) for a lead; 1 - p(arrived | booked) for a reminder or no-show"
    )
    summary: str
    reasons: list[dict[str, Any]]


class Attempt(BaseModel):
    model_config = ConfigDict(extra="allow")
    at: datetime
    actor: str | None = None
    result: Result
    note: str | None = None
    appointment_id: str | None = None


class MaskedContact(BaseModel):
    type: Literal["phone", "wechat", "qq", "email"]
    value: str = Field(description="masked: POST /v1/tasks/{id}/reveal gives the number to whoever calls")
    message: int


class TaskDetail(Task):
    attempt_log: list[Attempt]
    appointment: Appointment | None = Field(None, description="the new appointment of a rebooking")
    patient: PatientSummary | None = Field(None, description="the chat's patient: history, no-shows, flag")
    contacts: list[MaskedContact] = Field(default_factory=list)


class Revealed(BaseModel):
    task_id: str
    conversation_id: str
    contacts: list[dict[str, Any]] = Field(description="{type, value (unmasked), message}")
    recorded: bool = Field(description="written to the audit log (read_raw, with the task)")


class TaskPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[Task]


class Assign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignee: Text128 = Field(description="the consultant id")


class CallResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    result: Result
    note: Text1000 | None = None
    time: AwareDatetime | None = Field(
        None, description="the new appointment's time (result 'rebooked' only)"
    )
    doctor: Text64 | None = None
    confirmed: bool = Field(False, description="a flagged patient's rebooking was confirmed with them")


class Snooze(BaseModel):
    model_config = ConfigDict(extra="forbid")
    until: AwareDatetime


class Done(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Text1000 | None = None


class SweepResult(BaseModel):
    no_shows: int
    woken: int
    leads: int
    linked: int = Field(description="chats linked to their patient (at most SWEEP_LINKS per call)")


SWEEP_LINKS = 500  # chats linked per POST /v1/tasks/sweep (`yuyue tasks sweep` links them all)


ACTORS = (Role.CONSULTANT, Role.SUPERVISOR)
BODY_ERRORS = errors(400, 401, 403, 404, 409, 413, 422, 429, 503)


@router.get("/v1/tasks", response_model=TaskPage, responses=errors(401, 403, 422, 429, 503))
def listing(
    who: AnyRole,
    state: State,
    kind: Kind | None = None,
    task_state: TaskState | None = Query(None, alias="state", description="default: every state but done"),
    assignee: FILTER = None,
    department: FILTER = None,
    due: Literal["overdue", "today"] | None = Query(None, description="overdue, or due by the end of today"),
    hospital: HOSPITALS = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    """The work list, ranked by expected value; due no-shows and snoozes are brought up to date first.
    Keys scoped to hospitals see their hospitals' tasks (``hospital`` narrows it)."""
    hospitals = list_hospitals(who, hospital)
    state.desk.sweep()
    return state.desk.tasks(
        who,
        hospitals=hospitals,
        kind=kind,
        state=task_state,
        assignee=assignee,
        department=department,
        due=due,
        limit=limit,
        offset=offset,
    )


@router.post("/v1/tasks/sweep", response_model=SweepResult, responses=errors(401, 403, 429, 503))
def sweep(who: Who, state: State) -> dict[str, int]:
    """Run the time-based rules now, open lead tasks for chats that left contact without booking, and
    link chats to their patients. It runs over every hospital: keys scoped to hospitals get 403 (their
    lists run the time-based rules anyway)."""
    require_group(require_role(who, (Role.SUPERVISOR,)), "the sweep")
    return state.desk.sweep(leads=True, link_limit=SWEEP_LINKS)


@router.get("/v1/tasks/{task_id}", response_model=TaskDetail, responses=errors(401, 403, 404, 422, 429, 503))
def get(who: AnyRole, state: State, task_id: str = TASK_ID) -> dict[str, Any]:
    return state.desk.task(who, task_id)


@router.post("/v1/tasks/{task_id}/assign", response_model=TaskDetail, responses=BODY_ERRORS)
def assign(body: Assign, who: Who, state: State, task_id: str = TASK_ID) -> dict[str, Any]:
    """Supervisors assign (or reassign) a task to a consultant."""
    require_role(who, (Role.SUPERVISOR,))
    return state.desk.assign(who, task_id, body.assignee)


@router.post(
    "/v1/tasks/{task_id}/claim",
    response_model=TaskDetail,
    responses=errors(401, 403, 404, 409, 422, 429, 503),
)
def claim(who: Who, state: State, task_id: str = TASK_ID) -> dict[str, Any]:
    """A consultant takes an open task of its own chats (or of no one's)."""
    require_role(who, (Role.CONSULTANT,))
    return state.desk.claim(who, task_id)


@router.post("/v1/tasks/{task_id}/attempts", response_model=TaskDetail, responses=BODY_ERRORS)
def attempt(body: CallResult, who: Who, state: State, task_id: str = TASK_ID) -> dict[str, Any]:
    """Record a call: reached / no_answer keep the task; refused, wrong_number and rebooked (with a time:
    a new appointment) end it."""
    require_role(who, ACTORS)
    return state.desk.attempt(who, task_id, body.result, body.note, body.time, body.doctor, body.confirmed)


@router.post("/v1/tasks/{task_id}/snooze", response_model=TaskDetail, responses=BODY_ERRORS)
def snooze(body: Snooze, who: Who, state: State, task_id: str = TASK_ID) -> dict[str, Any]:
    """Put a task aside until a time (it comes back open or assigned then)."""
    require_role(who, ACTORS)
    return state.desk.snooze(who, task_id, body.until)


@router.post("/v1/tasks/{task_id}/done", response_model=TaskDetail, responses=BODY_ERRORS)
def done(body: Done, who: Who, state: State, task_id: str = TASK_ID) -> dict[str, Any]:
    """Close a task after at least one call (409 before)."""
    require_role(who, ACTORS)
    return state.desk.done(who, task_id, body.note)


@router.post(
    "/v1/tasks/{task_id}/reveal", response_model=Revealed, responses=errors(401, 403, 404, 409, 422, 429, 503)
)
def reveal(who: Who, state: State, task_id: str = TASK_ID) -> dict[str, Any]:
    """The phone (and other contacts) of a task's chat, unmasked, for whoever calls: the consultant the
    task is assigned to, a supervisor. Every reveal is written to the audit log (GET /v1/audit,
    action read_raw); 409 for a done task or an open one (claim it first)."""
    require_role(who, ACTORS)
    return state.desk.reveal(who, task_id)
