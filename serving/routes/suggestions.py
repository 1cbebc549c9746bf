"""Reply suggestions: what the consultant did with one."""

from typing import Any

from fastapi import APIRouter

from yuyue.serving import schemas
from yuyue.serving.deps import State, Who
from yuyue.serving.errors import errors
from yuyue.serving.schemas import SUGGESTION_ID, Feedback

router = APIRouter(tags=["chats"])


@router.post(
    "/v1/suggestions/{suggestion_id}/feedback",
    response_model=schemas.FeedbackRecorded,
    responses=errors(400, 401, 403, 404, 413, 422, 429, 503),
)
def suggestion_feedback(
    suggestion_id: SUGGESTION_ID, body: Feedback, who: Who, state: State
) -> dict[str, Any]:
    """What the chat's consultant did with a suggestion: used, edited (with the final text) or dismissed.
    A supervisor or admin may record it too (recorded with their role)."""
    out = state.service.feedback(who, suggestion_id, body.action, body.final_text)
    state.metrics.feedback.labels(body.action).inc()
    return out
