"""Chats: open one, send its messages (the hot path), record its outcome, read it back; a consultant's
open chats with what waits for an answer."""

from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from yuyue.models.bundle import band
from yuyue.serving import privacy, schemas
from yuyue.serving.audit import AuditAction
from yuyue.serving.auth import Caller, Role, require_role
from yuyue.serving.deps import (
    SECURITY,
    Service,
    Who,
    authenticate,
    check_model,
    get_state,
    model_ready,
    raw_key,
)
from yuyue.serving.errors import Forbidden, errors, fast_json
from yuyue.serving.schemas import CONVERSATION_ID, FILTER, NewMessage, OpenChat, OutcomeUpdate

router = APIRouter(tags=["chats"])


@router.post(
    "/v1/conversations",
    status_code=201,
    dependencies=[Depends(model_ready)],
    response_model=schemas.OpenedChat,
    responses=errors(400, 401, 403, 409, 413, 422, 429, 503),
)
def open_chat(body: OpenChat, who: Who, service: Service) -> Response:
    """Open a chat with its visit trace; returns its id and the score from the visit trace alone."""
    out = service.open(who, **body.model_dump(exclude_none=False, exclude={"visit"}), visit=body.visit)
    return fast_json(out, 201)


# the hot path: the key is checked in the endpoint, not as a dependency (FastAPI's dependency
# resolution was about half of the framework's time per message); its security and answer are
# documented here, not validated
@router.post(
    "/v1/conversations/{conversation_id}/messages",
    openapi_extra={"security": SECURITY},
    responses={
        200: {"model": schemas.MessageScored, "description": "the message's scores, hints and suggestions"},
        **errors(400, 401, 403, 404, 409, 413, 422, 429, 503),
    },
)
async def add_message(conversation_id: CONVERSATION_ID, body: NewMessage, request: Request) -> Response:
    """Append one message; returns scores and their change, band, reasons, stage, hints, entities, suggestions."""  # noqa: E501
    who = await authenticate(raw_key(request), request)  # a cached key: no I/O, no thread
    state = get_state(request)
    check_model(state)
    # in a worker thread: a store write waiting on a lock (bounded by the database timeouts) must not
    # hold up the event loop, /healthz and the other chats
    out = await anyio.to_thread.run_sync(
        partial(
            state.service.message,
            who,
            conversation_id,
            body.role,
            body.text,
            body.at,
            k=min(body.k, state.settings.suggestions_k) if body.k else 0,
            expect_seq=body.seq,
        )
    )
    state.metrics.shown.inc(len(out["suggestions"]))
    state.metrics.cache_misses.set(state.service.cache_misses)
    return fast_json(out)


@router.post(
    "/v1/conversations/{conversation_id}/outcome",
    response_model=schemas.ChatView,
    responses=errors(400, 401, 403, 404, 413, 422, 429, 503),
)
def record_outcome(
    conversation_id: CONVERSATION_ID, body: OutcomeUpdate, who: Who, service: Service
) -> dict[str, Any]:
    """Record contact / booked / arrived as they become known (console or booking system)."""
    values = body.model_dump(exclude={"close"})
    return service.outcome(who, conversation_id, values, body.close)


@router.get(
    "/v1/conversations/{conversation_id}",
    response_model=schemas.ChatWithMessages,
    responses=errors(401, 403, 404, 422, 429, 503),
)
def get_chat(conversation_id: CONVERSATION_ID, who: Who, service: Service) -> dict[str, Any]:
    """A stored chat with its messages (masked unless the caller is its consultant); consultant messages
    carry the compliance verdict stored when they were sent."""
    out = service.conversation(who, conversation_id)  # checks who may read the chat
    _add_compliance(out["messages"], service.store.messages(conversation_id))
    if not out["masked"]:  # raw personal data read: recorded (the consultant's own view included)
        privacy.record(service.store, who, AuditAction.READ_RAW, conversation_id=conversation_id)
    return out


def _add_compliance(messages: list[dict[str, Any]], stored: list[dict[str, Any]]) -> None:
    """Each consultant message's stored verdict (``compliance`` in the message payload), by ``seq``.

    The verdict holds rule ids, categories and citations only (no message text), so masked views get it
    too. ChatService.conversation does not pass it on, hence the second read of the chat's payloads."""
    verdicts = {m["seq"]: m.get("compliance") for m in stored if m.get("role") == "consultant"}
    for m in messages:
        m["compliance"] = verdicts.get(m["seq"]) if m["role"] == "consultant" else None


class OpenChatItem(BaseModel):
    conversation_id: str
    department: str | None = None
    project: str | None = None
    consultant_id: str | None = None
    started_at: datetime
    last_at: datetime
    n_messages: int
    unanswered: int = Field(description="visitor messages after the consultant's last message (unread)")
    waiting_since: datetime | None = Field(
        description="the first of those: the visitor has waited since then"
    )
    waiting_s: float | None = Field(description="seconds since waiting_since (None: nothing waits)")
    last_visitor_at: datetime | None = None
    p_booked: float | None = None
    band: str | None = None
    contact: bool | None = None
    booked: bool | None = None


class OpenChats(BaseModel):
    total: int = Field(description="open chats in all (items holds the most recently active, up to limit)")
    limit: int
    items: list[OpenChatItem] = Field(description="waiting longest first, then the most recently active")


@router.get(
    "/v1/conversations",
    response_model=OpenChats,
    responses=errors(401, 403, 422, 429, 503),
)
def list_chats(
    who: Who,
    service: Service,
    state: Literal["open"] = Query("open", description="open: chats not closed (the only list so far)"),
    consultant: FILTER = None,
    limit: int = Query(20, ge=1, le=100),
) -> dict[str, Any]:
    """A consultant's open chats (接一待二招呼三): per chat the visitor messages not answered yet and
    since when the visitor waits; no message text. Consultants list their own; supervisors and admins
    anyone's (``consultant``) or everyone's; a key scoped to hospitals, those hospitals' chats only."""
    del state  # one list so far
    require_role(who, (Role.CONSULTANT, Role.SUPERVISOR))
    mine = _list_owner(who, consultant)
    total, rows = service.store.open_chats(mine, limit, who.hospitals)
    now = datetime.now(UTC)
    items = []
    for r in rows:
        since = r["waiting_since"]
        items.append(
            {
                **{
                    k: r[k]
                    for k in (
                        "department",
                        "project",
                        "consultant_id",
                        "started_at",
                        "last_at",
                        "n_messages",
                        "unanswered",
                        "waiting_since",
                        "last_visitor_at",
                        "p_booked",
                        "contact",
                        "booked",
                    )
                },
                "conversation_id": r["id"],
                "waiting_s": round(max(0.0, (now - since).total_seconds()), 1) if since is not None else None,
                "band": band(r["p_booked"]) if r["p_booked"] is not None else None,
            }
        )
    items.sort(
        key=lambda x: (x["waiting_since"] is None, x["waiting_since"] or now, -x["last_at"].timestamp())
    )
    return {"total": total, "limit": limit, "items": items}


def _list_owner(who: Caller, consultant: str | None) -> str | None:
    if who.role != Role.CONSULTANT:
        return consultant
    if consultant is not None and consultant != who.consultant_id:
        raise Forbidden(f"consultant {who.consultant_id!r} lists only its own chats, not {consultant!r}'s")
    return who.consultant_id
