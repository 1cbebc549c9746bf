"""The conversation record contract as typed models.

Mirrors ``data/schema/conversation.schema.json`` (a copy of the team contract);
``tests/data/test_contract.py`` checks that both accept and reject the same records.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)


class Stage(StrEnum):
    """Playbook stage ids of the contract."""

    greet = "greet"
    probe_status = "probe_status"
    probe_expectation = "probe_expectation"
    explain_treatment = "explain_treatment"
    describe_outcome = "describe_outcome"
    resolve_concern = "resolve_concern"
    recommend_expert = "recommend_expert"
    promotion = "promotion"
    book = "book"
    directions = "directions"
    collect_contact = "collect_contact"
    close = "close"


STAGES: tuple[str, ...] = tuple(s.value for s in Stage)
ENGINES: tuple[str, ...] = (
    "baidu",
    "sogou",
    "so360",
    "shenma",
    "bing",
    "google",
    "toutiao",
    "direct",
    "other",
)
DEVICES: tuple[str, ...] = ("pc", "mobile", "tablet", "unknown")
ROLES: tuple[str, ...] = ("visitor", "consultant", "system")
ENTITY_TYPES: tuple[str, ...] = ("phone", "wechat", "qq", "id_card", "surname")

Engine = Literal["baidu", "sogou", "so360", "shenma", "bing", "google", "toutiao", "direct", "other"]
Device = Literal["pc", "mobile", "tablet", "unknown"]
Role = Literal["visitor", "consultant", "system"]
Grade = Literal["极佳", "较好", "一般"]
NonBlank = Annotated[str, StringConstraints(min_length=1)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)


class Page(_Record):
    url: str = Field(max_length=4096)
    title: str | None = Field(None, max_length=1024)
    at: AwareDatetime | None = None
    dwell_s: float | None = Field(None, ge=0)


class Visit(_Record):
    visitor_id: str | None = Field(None, max_length=128)
    engine: Engine | None = None
    keyword: str | None = Field(None, max_length=512)
    landing_url: str | None = Field(None, max_length=4096)
    referrer: str | None = Field(None, max_length=4096)
    pages: list[Page] | None = Field(None, max_length=1000)
    region: str | None = Field(None, max_length=256)
    device: Device | None = None
    visits_before: StrictInt | None = Field(None, ge=0)


class Message(_Record):
    at: AwareDatetime
    role: Role
    text: str = Field(max_length=10000)
    stage: Stage | None = None

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty message text")
        return value


class Outcome(_Record):
    contact: StrictBool | None = None
    booked: StrictBool | None = None
    arrived: StrictBool | None = None
    booked_at: AwareDatetime | None = None
    arrived_at: AwareDatetime | None = None


class TruthEntity(_Record):
    message: StrictInt = Field(ge=0)
    type: Literal["phone", "wechat", "qq", "id_card", "surname"]
    value: str


class Truth(BaseModel):
    """Simulator internals. For evaluation only: training and serving never read it."""

    model_config = ConfigDict(extra="allow")

    p_book: float | None = Field(None, ge=0, le=1)
    p_arrive: float | None = Field(None, ge=0, le=1)
    entities: list[TruthEntity] | None = None


class Conversation(_Record):
    conversation_id: str = Field(min_length=1, max_length=128)
    hospital: str | None = Field(None, max_length=128)
    department: str | None = Field(None, max_length=64)
    project: str | None = Field(None, max_length=64)
    consultant_id: str | None = Field(None, max_length=128)
    started_at: AwareDatetime
    visit: Visit | None = None
    messages: list[Message] = Field(min_length=1)
    outcome: Outcome | None = None
    grade: Grade | None = None
    truth: Truth | None = None

    @model_validator(mode="after")
    def _messages_in_time_order(self) -> Conversation:
        for i in range(1, len(self.messages)):
            if self.messages[i].at < self.messages[i - 1].at:
                raise ValueError(
                    f"messages.{i}.at: message is older than message {i - 1} "
                    f"({self.messages[i].at.isoformat()} < {self.messages[i - 1].at.isoformat()})"
                )
        if self.truth and self.truth.entities:
            for e in self.truth.entities:
                if e.message >= len(self.messages):
                    raise ValueError(f"truth.entities: message index {e.message} out of range")
        return self

    @property
    def hospital_code(self) -> str:
        return self.hospital or "default"

    def to_record(self) -> dict[str, Any]:
        """The record as plain JSON types, absent fields left out (the contract's JSONL form)."""
        return self.model_dump(mode="json", exclude_none=True)

    def without_truth(self) -> Conversation:
        """A copy with the evaluation-only ``truth`` removed (what training and serving see)."""
        return self.model_copy(update={"truth": None})
