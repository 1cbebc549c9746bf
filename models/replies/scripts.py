"""The script library (话术库): stage-tagged reply templates that hospitals edit, and slot filling.

The shipped library is ``library/scripts.yaml`` beside this module: a mapping with a
``scripts`` list, each entry ``{id, stage, text}`` plus optional ``concern`` (only for
``resolve_concern``), ``department`` and ``project``. Texts may hold the slots in
``SLOTS`` written as ``{name}``; any other ``{word}`` is an error, literal braces are not
supported.

Slot filling (``fill_slots``): a slot takes its value when one is given and not blank,
else its fallback (``DEFAULT_FALLBACKS``: ``address_form`` → 您, ``project`` → 这个项目,
``doctor`` → 医生, ``hospital`` → 我们医院, ``visit_time`` → 约好的时间). A slot with neither (by
default ``address``, ``phone``, ``consultant``, the consultant's own name, and the knowledge base's
``price_range``, ``duration``, ``doctor_intro``, ``activity``, ``directions``, ``bring``) drops the whole sentence that holds it (sentences end at 。！？；!?; or a
newline); when nothing is left the result is ``""`` and the caller should skip the entry.
Write scripts so that each slot's fallback still reads naturally (``{address_form}好`` →
您好), and keep an ``{address}``/``{phone}`` in a sentence of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from yuyue.data.contract import Stage

DEFAULT_LIBRARY = Path(__file__).parent / "library" / "scripts.yaml"

SLOTS: tuple[str, ...] = (
    "address_form",
    "project",
    "doctor",
    "hospital",
    "address",
    "phone",
    "consultant",
    "visit_time",
    # from the hospital's knowledge base (serving/knowledge.py); no fallback: unknown, the sentence goes
    "price_range",
    "duration",
    "doctor_intro",
    "activity",
    "directions",
    "bring",
)
DEFAULT_FALLBACKS: dict[str, str] = {
    "address_form": "您",
    "project": "这个项目",
    "doctor": "医生",
    "hospital": "我们医院",
    "visit_time": "约好的时间",
}

_SLOT = re.compile(r"\{(\w*)\}")
_SENTENCE = re.compile(r"[^。！？；!?;\n]+[。！？；!?;\n]*|[。！？；!?;\n]+")


class Concern(StrEnum):
    """What a ``resolve_concern`` script answers (打消顾虑)."""

    price = "price"
    safety = "safety"
    pain = "pain"
    recovery = "recovery"
    effect = "effect"
    privacy = "privacy"
    distance = "distance"
    time = "time"


class LibraryError(ValueError):
    """The script library cannot be read or is invalid; the message names the entry and field."""


def _slot_value(filled: Mapping[str, str], m: re.Match[str]) -> str:
    return filled[m.group(1)]


def slots_in(text: str) -> list[str]:
    """Slot names used in ``text``, in order of first use."""
    return list(dict.fromkeys(_SLOT.findall(text)))


class ScriptEntry(BaseModel):
    """One script of the library."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    stage: Stage
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    concern: Concern | None = None
    department: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None
    project: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None

    @field_validator("text")
    @classmethod
    def _known_slots(cls, text: str) -> str:
        unknown = [s for s in slots_in(text) if s not in SLOTS]
        if unknown:
            names = ", ".join("{" + s + "}" for s in unknown)
            raise ValueError(f"unknown slot {names}; known slots: {', '.join(SLOTS)}")
        return text

    @model_validator(mode="after")
    def _concern_only_when_resolving(self) -> ScriptEntry:
        if self.concern is not None and self.stage is not Stage.resolve_concern:
            raise ValueError(f"'concern' is only allowed with stage resolve_concern, not {self.stage.value}")
        return self

    @property
    def slots(self) -> list[str]:
        return slots_in(self.text)


def _field_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(entry)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "enum" and field == "stage":
        msg = f"unknown stage {err['input']!r}; expected one of {', '.join(s.value for s in Stage)}"
    return f"field '{field}': {msg}"


def parse_library(raw: object, source: str = "library") -> list[ScriptEntry]:
    """Validate an already-parsed library document (what ``yaml.safe_load`` returns)."""
    items = raw.get("scripts") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise LibraryError(f"{source}: expected a mapping with a 'scripts' list")
    entries: list[ScriptEntry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items, start=1):
        sid = item.get("id") if isinstance(item, dict) else None
        where = f"{source}: entry #{i}" + (f" ({sid})" if sid else "")
        try:
            entry = ScriptEntry.model_validate(item)
        except ValidationError as exc:
            raise LibraryError(f"{where}: {_field_error(exc)}") from None
        if entry.id in seen:
            raise LibraryError(f"{where}: field 'id': duplicate id (first at entry #{seen[entry.id]})")
        seen[entry.id] = i
        entries.append(entry)
    return entries


def load_library(path: str | Path | None = None) -> list[ScriptEntry]:
    """Read and validate a script library file (default: the shipped one)."""
    path = Path(path) if path is not None else DEFAULT_LIBRARY
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LibraryError(f"{path}: cannot read script library: {exc}") from None
    return parse_library(raw, str(path))


def fill_slots(text: str, values: Mapping[str, str | None], defaults: Mapping[str, str] | None = None) -> str:
    """``text`` with its slots filled; see the module docstring for fallbacks and dropped sentences.

    ``defaults`` replaces ``DEFAULT_FALLBACKS`` (pass ``{}`` for none). An unknown slot name
    raises ``ValueError``; values are inserted as they are, never re-expanded.
    """
    fallbacks = DEFAULT_FALLBACKS if defaults is None else defaults
    unknown = [s for s in slots_in(text) if s not in SLOTS]
    if unknown:
        raise ValueError(f"unknown slot(s) {', '.join(unknown)} in {text!r}")

    def value_of(name: str) -> str | None:
        given = values.get(name)
        if given is not None and given.strip():
            return given.strip()
        return fallbacks.get(name) or None

    out: list[str] = []
    for sentence in _SENTENCE.findall(text):
        found = {n: value_of(n) for n in slots_in(sentence)}
        filled = {n: v for n, v in found.items() if v is not None}
        if len(filled) < len(found):
            continue
        out.append(_SLOT.sub(partial(_slot_value, filled), sentence))
    return "".join(out).strip()


def scripts_for(
    entries: Iterable[ScriptEntry],
    stage: Stage | str,
    *,
    concern: Concern | str | None = None,
    department: str | None = None,
    project: str | None = None,
) -> list[ScriptEntry]:
    """Entries usable at ``stage``: general ones plus those for the given department / project / concern.

    An entry tagged with a department (project, concern) is kept only when that value is
    given and equal; untagged entries are always kept.
    """
    stage = Stage(stage)
    concern = Concern(concern) if concern is not None else None
    return [
        e
        for e in entries
        if e.stage is stage
        and (e.concern is None or e.concern is concern)
        and (e.department is None or e.department == department)
        and (e.project is None or e.project == project)
    ]
