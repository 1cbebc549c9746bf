"""Reply review: the pool's replies with their decision, usage and acceptance; allow, block or edit one.

A decision applies to the running server at once (``serving/reviews.py``): the next suggestion of
this worker, of other workers within ``reviews.REFRESH_S`` seconds, no retraining or reload.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from yuyue.models.replies.pool import ReplyPool
from yuyue.serving.auth import Caller, Role
from yuyue.serving.deps import State, caller_hospitals, check_model, require, require_group
from yuyue.serving.errors import InvalidInput, errors
from yuyue.serving.reviews import LIST_STATUSES, Decision, ReviewBook, ReviewError
from yuyue.serving.schemas import FILTER
from yuyue.serving.state import Yuyue
from yuyue.serving.store import Filters, NotFound

router = APIRouter(tags=["supervisors"])

# the model's replies serve every hospital: reviews need a group-level key
Reviewer = Annotated[Caller, Depends(require_group(Role.SUPERVISOR, what="reviewing the model's replies"))]
Reader = Annotated[Caller, Depends(require(Role.SUPERVISOR, Role.ANALYST))]
REPLY_ID = Annotated[str, Path(min_length=1, max_length=128, description="the reply's pool id")]


class ReplyUsage(BaseModel):
    shown: int = Field(
        description="times suggested (suggestions stored with this reply's id); in the list, in the "
        "key's hospitals (or ?hospital=)"
    )
    used: int
    edited: int
    dismissed: int
    acceptance_rate: float | None = Field(description="(used + edited) / answered; null before any feedback")


class ReplyItem(BaseModel):
    id: str
    text: str = Field(description="the reply as mined (masked, slots such as {address_form})")
    edited_text: str | None = Field(None, description="the text served instead (status edited)")
    status: Literal["unreviewed", "allowed", "blocked", "edited"]
    source: str
    stage: str | None = None
    department: str | None = None
    mined_count: int = Field(description="how often consultants wrote it in the training chats")
    reviewed_by: str | None = None
    reviewed_at: str | None = None
    usage: ReplyUsage


class ReplyList(BaseModel):
    total: int
    limit: int
    offset: int
    serve_unreviewed: bool
    items: list[ReplyItem]


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["allow", "block", "edit"]
    text: str | None = Field(None, max_length=2000, description="the new text (action edit only)")


def _book(state: Yuyue) -> ReviewBook:
    return state.reviews


def _pool(state: Yuyue) -> ReplyPool:
    check_model(state)
    model, _ = state.models.get()
    if model.suggester is None:
        raise InvalidInput("the model in use has no reply suggester (trained without replies)")
    return model.suggester.pool


def _item(entry: Any, status: str, decision: Decision | None, usage: dict[str, int]) -> dict[str, Any]:
    answered = usage["used"] + usage["edited"] + usage["dismissed"]
    return {
        "id": entry.id,
        "text": entry.text,
        "edited_text": decision.text if decision is not None and decision.status == "edited" else None,
        "status": status,
        "source": entry.source,
        "stage": entry.stage,
        "department": entry.department,
        "mined_count": entry.count,
        "reviewed_by": decision.reviewed_by if decision else None,
        "reviewed_at": decision.updated_at.isoformat() if decision else None,
        "usage": {
            **usage,
            "acceptance_rate": round((usage["used"] + usage["edited"]) / answered, 4) if answered else None,
        },
    }


@router.get("/v1/replies", response_model=ReplyList, responses=errors(401, 403, 422, 429, 503))
def list_replies(
    who: Reader,
    state: State,
    status: Literal[LIST_STATUSES] | None = Query(  # type: ignore[valid-type]
        None, description="one of " + ", ".join(LIST_STATUSES)
    ),
    hospital: FILTER = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    """The replies of the model in use, most used first, with their review status (a decision, else
    scripts allowed and mined replies unreviewed), usage and acceptance. Supervisors, analysts, admins.
    The replies serve every hospital; their usage counts the chats of the key's hospitals (a group-level
    key: every hospital, or ``hospital``; 403 for one outside the key's)."""
    scope = Filters(hospital, hospitals=caller_hospitals(who, hospital))
    book = _book(state)
    total, page = book.listing(_pool(state), status, limit, offset)
    usage = book.usage([e.id for e, _, _ in page], scope)
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "serve_unreviewed": book.serve_unreviewed,
        "items": [_item(e, st, d, usage[e.id]) for e, st, d in page],
    }


@router.post(
    "/v1/replies/{reply_id}/review",
    response_model=ReplyItem,
    responses=errors(400, 401, 403, 404, 413, 422, 429, 503),
)
def review_reply(reply_id: REPLY_ID, body: Review, who: Reviewer, state: State) -> dict[str, Any]:
    """Allow, block or edit a reply (supervisors and admins). Applies to the next suggestion, survives
    retraining. An edited text must pass the compliance guard and hold no personal data (422 naming the
    rule or the kind of data otherwise). The model's replies serve every hospital: keys scoped to
    hospitals get 403."""
    pool = _pool(state)
    entry = pool.get(reply_id)
    if entry is None:
        raise NotFound(f"no reply {reply_id!r} in the model in use")
    book = _book(state)
    model, _ = state.models.get()
    try:
        decision = book.decide(
            entry,
            body.action,
            body.text,
            actor=who.name,
            role=str(who.role),
            guard=model.suggester.guard
            if model.suggester is not None
            else None,  # swapped meanwhile: default
        )
    except ReviewError as exc:
        raise InvalidInput(str(exc)) from None
    usage = book.usage([entry.id])[entry.id]
    return _item(entry, decision.status, decision, usage)
