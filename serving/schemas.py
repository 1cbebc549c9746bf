"""What the API answers, as models for the OpenAPI document (and, where cheap, for validation).

Error bodies: every 4xx/5xx carries ``{"detail": str}`` (:class:`Problem`); a 422 from request
validation adds ``errors`` (:class:`ValidationProblem`), one item per problem with its location
and at most a short prefix of the offending value. Answers allow more fields than they name
(``additionalProperties``), so a model that adds a field does not break clients or the schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---- errors ----------------------------------------------------------------------------------
class Problem(BaseModel):
    detail: str = Field(description="what is wrong, in words")


class ValidationErrorItem(BaseModel):
    type: str = Field(description="pydantic's error type, e.g. string_too_long, invalid_character")
    loc: list[str | int] = Field(
        description="where: 'body', 'query', 'path' or 'header', then the field path"
    )
    msg: str
    input: Any = Field(
        None, description="the offending value; long or structured values as a short text prefix"
    )
    ctx: dict[str, Any] | None = None


class ValidationProblem(BaseModel):
    detail: str = Field(description="every problem as 'field: message', joined by '; '")
    errors: list[ValidationErrorItem]


# ---- answers ---------------------------------------------------------------------------------
class Reason(_Answer):
    group: str
    text: str
    delta: float


class Score(_Answer):
    probability: float
    reasons: list[Reason]


class OpenedChat(_Answer):
    conversation_id: str
    model_version: str
    scores: dict[str, Score]
    band: str | None


class ShownSuggestion(_Answer):
    id: str
    text: str
    source: str | None
    stage: str | None


class MessageScored(_Answer):
    """The per-message answer (documented, not validated: it is built on the hot path)."""

    conversation_id: str
    seq: int
    model_version: str
    scores: dict[str, Score]
    changes: dict[str, float]
    band: str | None
    stage: str | None
    hints: list[dict[str, Any]]
    suggestions: list[ShownSuggestion]
    entities: dict[str, Any]
    message_pii: list[dict[str, Any]]
    masked: bool
    timings_ms: dict[str, float]


class ChatView(_Answer):
    id: str
    consultant_id: str | None
    started_at: str
    last_at: str
    n_messages: int
    closed: bool
    contact: bool | None
    booked: bool | None
    arrived: bool | None
    booked_at: str | None
    arrived_at: str | None
    p_booked: float | None
    p_arrived: float | None
    band: str | None
    visit: dict[str, Any] | None
    reasons: dict[str, Any]


class StoredMessage(_Answer):
    seq: int
    role: str
    text: str
    at: str
    stage: str | None
    scores: dict[str, float | None] | None


class ChatWithMessages(_Answer):
    conversation: ChatView
    messages: list[StoredMessage]
    masked: bool


class FeedbackRecorded(_Answer):
    suggestion_id: str
    action: Literal["used", "edited", "dismissed"]
    conversation_id: str


class FollowupItem(_Answer):
    conversation_id: str
    kind: Literal["lead_not_booked", "booking_at_risk"]
    priority: float
    summary: str
    reasons: list[Reason]


class FollowupPage(_Answer):
    total: int
    limit: int
    offset: int
    items: list[FollowupItem]


class FunnelGroup(_Answer):
    group: Any
    visits: int
    chats: int
    contact: int
    booked: int
    arrived: int


class Funnel(_Answer):
    group_by: str | None
    groups: list[FunnelGroup]
    suggestions: dict[str, Any]


class Reloaded(_Answer):
    version: str | None
    changed: bool


class ModelInfo(_Answer):
    version: str | None
    caller: dict[str, str | None]


class Health(_Answer):
    status: Literal["ok"]


class Readiness(_Answer):
    ready: bool
    model_version: str | None
    problems: list[str]
