"""Data-subject rights (PIPL) and the audit log: erase and read a chat's personal data, list who
accessed personal data. The logic is ``serving/privacy.py``."""

from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from yuyue.serving import privacy
from yuyue.serving.audit import AuditAction
from yuyue.serving.auth import Caller, Role, check_read, check_write, require_group
from yuyue.serving.deps import Service, Store, require
from yuyue.serving.errors import InvalidInput, errors
from yuyue.serving.schemas import CONVERSATION_ID, FILTER

router = APIRouter(tags=["privacy"])

# erasure and access requests are handled by supervisors (and admins); the audit log is admins' only
Supervisor = Annotated[Caller, Depends(require(Role.SUPERVISOR))]
Admin = Annotated[Caller, Depends(require())]


class Erased(BaseModel):
    conversation_id: str
    erased: bool = Field(description="always true: the chat's raw text is masked in the store")
    changed: dict[str, int] = Field(
        description="rows rewritten by this request (messages, events, suggestions); 0 when repeated"
    )
    session_dropped: bool = Field(description="the cached session (this worker's and Redis') was dropped")


class PersonalData(BaseModel):
    """What the store holds about the visitor of one chat (raw: the answer to a data-subject request)."""

    model_config = {"extra": "allow"}
    conversation_id: str
    messages: list[dict[str, Any]] = Field(description="the messages the visitor sent: seq, at, text")
    detected: list[dict[str, Any]] = Field(
        description="personal data detected in them: type, value (normalised), text (as typed), message"
    )
    entities: dict[str, Any] | None = Field(description="what Yuyue derived (None while no model is loaded)")
    outcome: dict[str, Any]
    scores: dict[str, Any]
    erased: dict[str, Any] | None = Field(description="when and why the raw text was masked, if it was")


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str | None
    role: str | None
    action: AuditAction
    conversation_id: str | None
    scope: str | None
    detail: str | None = Field(description="JSON object: counts, filters")


class AuditPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AuditEntry]


@router.delete(
    "/v1/conversations/{conversation_id}/personal-data",
    response_model=Erased,
    responses=errors(401, 403, 404, 422, 429, 503),
)
async def erase_personal_data(conversation_id: CONVERSATION_ID, who: Supervisor, service: Service) -> Any:
    """Erase the chat's personal data: its raw text, entities and suggestion texts are masked for good,
    its cached session is dropped; outcome, scores and counts stay. Recorded in the audit log; repeating
    it changes nothing."""
    check_write(who, conversation_id, service.store.conversation(conversation_id), "erase personal data of")
    return await anyio.to_thread.run_sync(privacy.erase, service, who, conversation_id)


@router.get(
    "/v1/conversations/{conversation_id}/personal-data",
    response_model=PersonalData,
    responses=errors(401, 403, 404, 422, 429, 503),
)
async def personal_data(conversation_id: CONVERSATION_ID, who: Supervisor, service: Service) -> Any:
    """The visitor's data held for this chat, for a data-subject access request (raw; recorded)."""
    check_read(who, conversation_id, service.store.conversation(conversation_id))
    return await anyio.to_thread.run_sync(privacy.personal_data, service, who, conversation_id)


@router.get("/v1/audit", response_model=AuditPage, responses=errors(401, 403, 422, 429, 503))
def audit(
    who: Admin,
    store: Store,
    actor: FILTER = None,
    action: AuditAction | None = Query(None, description="read_raw, export, erase, access or purge"),
    conversation_id: CONVERSATION_ID | None = Query(None),
    since: datetime | None = Query(None, description="entries at or after (with offset)"),
    until: datetime | None = Query(None, description="entries before (with offset)"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10_000_000),
) -> Any:
    """Who read raw personal data, exported, erased, answered an access request or purged; newest first.
    The log spans every hospital: keys scoped to hospitals get 403."""
    require_group(who, "the audit log")
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} must carry a timezone offset, e.g. 2025-03-05T00:00:00+08:00")
    return store.audit_entries(
        actor=actor,
        action=action.value if action else None,
        conversation_id=conversation_id,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
