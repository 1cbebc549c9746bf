"""The conversation record contract as typed models.

Mirrors ``data/schema/conversation.schema.json`` (a copy of the team contract);
``tests/data/test_contract.py`` checks that both accept and reject the same records.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError


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

# characters no text field may hold: NUL (PostgreSQL text cannot store it) and lone UTF-16 surrogates
# (not Unicode characters: they cannot be encoded as UTF-8, so no store, log or JSON answer can hold them)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_text(value: Any) -> Any:
    """``value`` unless it is a string holding a NUL character or a lone surrogate (an error naming
    which, and where). Runs before pydantic's own string checks, which refuse a surrogate vaguely."""
    bad = _UNSTORABLE.search(value) if isinstance(value, str) else None
    if bad is not None:
        ch = bad.group()
        what = "a NUL character (\\u0000)" if ch == "\x00" else f"a lone surrogate (\\u{ord(ch):04x})"
        raise PydanticCustomError(
            "invalid_character",
            "text holds {what} at position {position}; it cannot be stored",
            {"what": what, "position": bad.start()},
        )
    return value


def check_instant(value: datetime) -> datetime:
    """``value`` unless it has no UTC equivalent within years 1-9999 (e.g. 9999-12-31T23:59:59-12:00)."""
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise PydanticCustomError(
                "datetime_out_of_range",
                "{value} is outside the years 1-9999 once converted to UTC",
                {"value": value.isoformat()},
            ) from None
    return value


Text = Annotated[str, BeforeValidator(check_text)]


def bounded_text(max_length: int | None = None, min_length: int | None = None) -> Any:
    """A :data:`Text` type with length limits (inside the type, so an optional field's error reads
    'String should have at most N characters')."""
    return Annotated[
        str, StringConstraints(min_length=min_length, max_length=max_length), BeforeValidator(check_text)
    ]


# bounded_text(N) as named types, which a type checker can read (it cannot evaluate a call in an annotation)
Text64 = Annotated[str, StringConstraints(max_length=64), BeforeValidator(check_text)]
Text128 = Annotated[str, StringConstraints(max_length=128), BeforeValidator(check_text)]
Text256 = Annotated[str, StringConstraints(max_length=256), BeforeValidator(check_text)]
Text500 = Annotated[str, StringConstraints(max_length=500), BeforeValidator(check_text)]
Text512 = Annotated[str, StringConstraints(max_length=512), BeforeValidator(check_text)]
Text1000 = Annotated[str, StringConstraints(max_length=1000), BeforeValidator(check_text)]
Text1024 = Annotated[str, StringConstraints(max_length=1024), BeforeValidator(check_text)]
Text4096 = Annotated[str, StringConstraints(max_length=4096), BeforeValidator(check_text)]
Text10000 = Annotated[str, StringConstraints(max_length=10000), BeforeValidator(check_text)]
Id128 = Annotated[str, StringConstraints(min_length=1, max_length=128), BeforeValidator(check_text)]
Instant = Annotated[AwareDatetime, AfterValidator(check_instant)]
NonBlank = Annotated[Text, StringConstraints(min_length=1)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)


class Page(_Record):
    url: Text4096
    title: Text1024 | None = None
    at: Instant | None = None
    dwell_s: float | None = Field(None, ge=0, allow_inf_nan=False)  # JSON numbers are finite


class Visit(_Record):
    visitor_id: Text128 | None = None
    engine: Engine | None = None
    keyword: Text512 | None = None
    landing_url: Text4096 | None = None
    referrer: Text4096 | None = None
    pages: list[Page] | None = Field(None, max_length=1000)
    region: Text256 | None = None
    device: Device | None = None
    visits_before: StrictInt | None = Field(None, ge=0)


class Message(_Record):
    at: Instant
    role: Role
    text: Text10000
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
    booked_at: Instant | None = None
    arrived_at: Instant | None = None


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
    conversation_id: Id128
    hospital: Text128 | None = None
    department: Text64 | None = None
    project: Text64 | None = None
    consultant_id: Text128 | None = None
    started_at: Instant
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
