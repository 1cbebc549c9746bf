"""What the API takes and answers, as models for the OpenAPI document (and, where cheap, for validation).

Error bodies: every 4xx/5xx carries ``{"detail": str}`` (:class:`Problem`); a 422 from request
validation adds ``errors`` (:class:`ValidationProblem`), one item per problem with its location
and at most a short prefix of the offending value. Answers allow more fields than they name
(``additionalProperties``), so a model that adds a field does not break clients or the schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from yuyue.data.contract import Page, Text, Text64, Text128, Text10000, Visit
from yuyue.serving.edge import Recent

# ---- path and query parameters ---------------------------------------------------------------
CONVERSATION_ID = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w.\-:]+$")]
SUGGESTION_ID = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[\w.\-:]+$")]
FILTER = Annotated[Text128 | None, Query()]


# ---- request bodies (with OpenAPI examples) ---------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# seconds on one page, and on all the pages of a visit: the contract sets no maximum, and an
# unbounded dwell (1e308 is finite) pushed both scores to 0.9999 through the dwell features
MAX_DWELL_S = 86_400.0


class PageIn(Page):
    at: Recent | None = None
    dwell_s: float | None = Field(
        None, ge=0, le=MAX_DWELL_S, allow_inf_nan=False, description="seconds on the page (at most a day)"
    )


class VisitIn(Visit):
    """The contract's visit trace, its page times within the accepted window around now."""

    # PageIn is a Page with bounded times; list is invariant, so mypy sees a narrowed field as a clash
    pages: list[PageIn] | None = Field(None, max_length=1000)  # type: ignore[assignment]
    # the contract sets no maximum; a count beyond 64 bits could not be exported as JSON
    visits_before: StrictInt | None = Field(None, ge=0, le=1_000_000)

    @field_validator("pages")
    @classmethod
    def _dwell_adds_up(cls, pages: list[PageIn] | None) -> list[PageIn] | None:
        total = sum(p.dwell_s or 0.0 for p in pages or ())
        if total > MAX_DWELL_S:
            raise ValueError(
                f"the pages' dwell_s add up to {total:.0f} s, "
                f"more than a visit can last ({MAX_DWELL_S:.0f} s)"
            )
        return pages


class OpenChat(_Body):
    conversation_id: CONVERSATION_ID | None = Field(
        None, description="your chat tool's id; generated when absent"
    )
    started_at: Recent | None = Field(None, description="chat start (default: now)")
    visit: VisitIn | None = None
    hospital: Text128 | None = None
    department: Text64 | None = None
    project: Text64 | None = None
    consultant_id: Text128 | None = Field(None, description="defaults to the calling consultant")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "swt-20250305-0001",
                    "started_at": "2025-03-05T14:02:11+08:00",
                    "department": "整形美容",
                    "project": "隆鼻",
                    "visit": {
                        "engine": "baidu",
                        "keyword": "杭州隆鼻多少钱",
                        "landing_url": "https://example.com/lb/price.html",
                        "region": "浙江省杭州市",
                        "device": "mobile",
                        "visits_before": 1,
                    },
                }
            ]
        },
    )


class NewMessage(_Body):
    role: Literal["visitor", "consultant", "system"]
    text: Text = Field(min_length=1, max_length=10_000)
    at: Recent | None = Field(
        None, description="when it was sent (default: now); never before the last message"
    )
    k: int = Field(3, ge=0, le=10, description="how many reply suggestions (visitor messages only)")
    seq: int | None = Field(
        None,
        ge=0,
        description="optional: the position this message takes (how many messages the sender has seen). "
        "When the chat holds a different number of messages the answer is 409 and nothing is stored, "
        "so resending after a lost answer cannot store a message twice",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "role": "visitor",
                    "text": "你好，隆鼻大概多少钱？疼不疼",
                    "at": "2025-03-05T14:02:30+08:00",
                    "seq": 0,
                }
            ]
        },
    )


class OutcomeUpdate(_Body):
    contact: StrictBool | None = None
    booked: StrictBool | None = None
    arrived: StrictBool | None = None
    booked_at: Recent | None = None
    arrived_at: Recent | None = None
    close: bool = Field(False, description="the chat has ended: no more messages")

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"contact": True, "booked": True, "close": True}]}
    )


class Feedback(_Body):
    action: Literal["used", "edited", "dismissed"]
    final_text: Text10000 | None = Field(None, description="what was sent, for 'edited'")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"action": "edited", "final_text": "王女士您好，隆鼻的费用要看方案…"}]
        },
    )


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


class ComplianceHit(_Answer):
    id: str = Field(description="the rule that fired, or classifier_<category> for the learned classifier")
    category: str = Field(description="what is prohibited, e.g. promise_result, cure_rate, disparage")
    citation: str = Field(description="the legal basis (广告法, 医疗广告管理办法 …) and why it applies")
    source: Literal["rule", "classifier"]


class StoredCompliance(_Answer):
    """The compliance verdict kept with a consultant message (nothing was blocked or altered)."""

    allowed: bool = Field(description="false when the message looks like a prohibited claim")
    rules: list[ComplianceHit] = Field(description="what fired; empty when allowed")


class MessageCompliance(StoredCompliance):
    alternative: str | None = Field(
        description="a compliant library reply for the same intent, when the message is not allowed"
    )


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
    compliance: MessageCompliance | None = Field(
        None, description="consultant messages only: the compliance check of what was typed"
    )


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
    compliance: StoredCompliance | None = Field(
        None,
        description="consultant messages: the compliance verdict stored when the message was sent "
        "(no message text, so the same in masked views); null for visitor messages and messages "
        "stored without one",
    )


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
    version: str | None = Field(description="the champion's version now in use (null: none registered)")
    changed: bool = Field(
        description="whether the champion or a hospital's or department's own model was switched"
    )
    hospitals: dict[str, str] = Field(
        description="hospital code -> version of each hospital served by its own model (a ``hospital-*`` "
        "alias, ``yuyue train --per-hospital``); {} when the champion scores every chat",
        examples=[{"hz-a": "7"}],
    )
    departments: dict[str, str] = Field(
        default_factory=dict,
        description="department -> version of each department served by its own model (a ``department-*`` "
        "alias, ``yuyue train --per-department``; a chat's hospital's own model comes first); {} when none",
        examples=[{"妇科": "9"}],
    )
    previous: str | None = Field(
        None, description="the champion's version before the switch (only when the champion changed)"
    )
    detail: str | None = Field(
        None, description="why nothing was loaded (only when no champion is registered)"
    )


class ModelInfo(_Answer):
    version: str | None
    caller: dict[str, str | None]


class Health(_Answer):
    status: Literal["ok"]


class Readiness(_Answer):
    ready: bool
    model_version: str | None
    problems: list[str]
