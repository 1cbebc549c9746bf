"""Hospital knowledge: what an admin tells Yuyue about the hospital, and the rules that fill replies from it.

The knowledge of one hospital (:class:`Knowledge`, keyed by a hospital id: a hospital's code, or the
``hospital_id`` setting for the default document; see "Several hospitals" below)
holds departments and their projects (price range in yuan, typical duration, aliases the visitors use),
doctors (title, department, specialties, weekly duty days and hours, leave), activities (title, wording,
validity dates, conditions, the departments and projects they apply to) and the hospital's address,
phone, directions and what to bring. An admin edits it (``PUT /v1/knowledge``, ``yuyue knowledge
import FILE``, the console's 医院资料 page); everyone reads it. A write is checked whole first
(:func:`problems`: fields, references between its parts, and every activity's wording through the
compliance guard, refused naming the rule) and stored in one row (``hospital_knowledge``: the document
as JSON, a revision one higher per write), so a bad write or import changes nothing.

At serve time (:func:`serving`, called by ``ChatService`` around each message) the suggester's hook
(:class:`KnowledgeHook`, ``ReplySuggester.knowledge``) adds to the facts the suggester fills replies
from (:func:`slot_facts`):

- the day: the visit time named last in the chat (parsed as the chat state parses it), else today,
  or tomorrow once today's duty hours of the department's doctors are over;
- ``doctor`` / ``doctor_intro``: a doctor of the chat's department (those whose specialties name the
  chat's project first) on duty then: a duty on that weekday, no leave covering the day, and, when the
  chat's words named an hour (下午3点) or a part of the day (下午), hours that cover it (:class:`Visit`,
  :meth:`DayDuty.covers`). A duty's hours: its ``hours`` ("09:00-12:00,14:00-17:30"), else its
  ``start``/``end``, else the doctor's ``hours``, else 08:00-17:00. Nobody on duty: no name (the reply
  says 医生, as without knowledge);
- ``activity``: the first activity valid that day (``valid_from`` ≤ day ≤ ``valid_to``) whose
  departments and projects include the chat's (empty lists: every one);
- ``price_range`` / ``duration``: the chat's project (by name or alias, in the department); a price
  answer quotes the range with 具体费用面诊后确定 (the ``knowledge_price`` script);
- ``address``, ``phone``, ``hospital``, ``directions``, ``bring`` from the hospital (a department's
  ``bring`` first).

A value the knowledge lacks is simply absent: the script library's sentence holding that slot is left
out and the generic replies remain. The knowledge is cached in process (:class:`KnowledgeBook`), per
hospital: a write through this process replaces it at once, other processes see it within
:data:`REFRESH_S` seconds (one indexed ``SELECT rev`` per hospital per poll).

Several hospitals: each may have its own document (the row keyed by its code, the ``hospital`` of its
chats); a chat of a hospital with one is served from it, a chat without a hospital or of a hospital
without a document from the default one (the ``hospital_id`` setting's). A document is whole, never
merged with the default: one without ``hospital.name`` leaves the ``hospital_name`` setting in replies.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from yuyue.serving.db import UTCDateTime, metadata, utcnow
from yuyue.serving.store import Conflict

log = logging.getLogger("yuyue.serving")

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
REFRESH_S = 2.0  # how often a process checks the stored revision of the knowledge it serves
MAX_HOSPITAL_ID = 128  # hospital_knowledge.hospital_id: as long as a chat's hospital (conversations.hospital)
MAX_CACHED = 10_000  # hospitals whose knowledge a process keeps (its chats' hospitals)
EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "knowledge_example.yaml"
MAX_YAML_BYTES = 1_000_000
WEEKDAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
# the script library's knowledge_* replies, lifted above the generic ones of their intent when filled
BOOST = {
    "price_range": ("s-knowledge_price", 0.5),
    "duration": ("s-knowledge_duration", 0.3),
    "doctor_intro": ("s-knowledge_doctor", 0.5),
    "activity": ("s-knowledge_activity", 0.5),
    "directions": ("s-knowledge_directions", 0.5),
    "bring": ("s-knowledge_bring", 0.3),
}
KNOWLEDGE_SLOTS = frozenset(BOOST)

# ---------------------------------------------------------------------------------------- the document

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Long = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Clock = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Project(_Part):
    """A project (item) of a department, e.g. 双眼皮 in 整形美容."""

    name: Name
    aliases: list[Name] = Field(default_factory=list, max_length=20, description="other words visitors use")
    price_low: int | None = Field(None, ge=0, le=10_000_000, description="yuan")
    price_high: int | None = Field(None, ge=0, le=10_000_000, description="yuan")
    duration: Short | None = Field(None, description="typical duration, e.g. 约1小时，一周后拆线")

    @model_validator(mode="after")
    def _range(self) -> Project:
        if (self.price_low is None) != (self.price_high is None):
            raise ValueError("give both price_low and price_high (a range) or neither")
        if self.price_low is not None and self.price_high is not None and self.price_low >= self.price_high:
            raise ValueError("price_high must be above price_low (a range; the price is set after the visit)")
        return self


class Department(_Part):
    name: Name
    projects: list[Project] = Field(default_factory=list, max_length=200)
    bring: Short | None = Field(None, description="what to bring for this department (else the hospital's)")


DEFAULT_START, DEFAULT_END = "08:00", "17:00"  # a duty that names no hours (documents before ``hours``)
Hours = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})\s*[-–~～至]\s*(\d{1,2}):(\d{2})$")
_RANGES_SPLIT = re.compile(r"[,，、;；]+")
HOURS_EXAMPLE = "09:00-12:00,14:00-17:30"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@lru_cache(maxsize=4096)
def parse_hours(text: str) -> tuple[tuple[int, int], ...]:
    """The ranges of an ``hours`` text ("09:00-12:00,14:00-17:30"; an end may be 24:00) as (start, end)
    minutes since midnight, in order; :class:`ValueError` naming the range that is wrong."""
    parts = [p.strip() for p in _RANGES_SPLIT.split(text) if p.strip()]
    if not parts:
        raise ValueError("no time range")
    out = []
    for part in parts:
        m = _RANGE.match(part)
        if m is None:
            raise ValueError(f"{part!r} is not a range HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 > 0):
            raise ValueError(f"{part!r} is not a time of day (00:00 to 24:00)")
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start >= end:
            raise ValueError(f"{part!r} does not end after it starts")
        out.append((start, end))
    out.sort()
    for (a1, b1), (a2, b2) in zip(out, out[1:], strict=False):
        if a2 < b1:
            raise ValueError(f"{_hhmm(a1)}-{_hhmm(b1)} and {_hhmm(a2)}-{_hhmm(b2)} overlap")
    return tuple(out)


class Duty(_Part):
    """A weekday on duty and its hours: ``hours`` ("09:00-12:00,14:00-17:30"), or one range ``start`` /
    ``end`` (the older form), else the doctor's ``hours``, else 08:00-17:00."""

    weekday: int = Field(ge=1, le=7, description="1 = Monday … 7 = Sunday")
    start: Clock | None = Field(None, description="one range's start (else 08:00 when end is given)")
    end: Clock | None = Field(None, description="one range's end (else 17:00 when start is given)")
    hours: Hours | None = Field(
        None, description=f"ranges that day, e.g. {HOURS_EXAMPLE!r} (not with start/end)"
    )

    @model_validator(mode="after")
    def _order(self) -> Duty:
        start, end = self.start or DEFAULT_START, self.end or DEFAULT_END
        if (self.start or self.end) and start >= end:
            raise ValueError(f"end {end} is not after start {start}")
        return self


class Leave(_Part):
    first_day: date
    last_day: date

    @model_validator(mode="after")
    def _order(self) -> Leave:
        if self.first_day > self.last_day:
            raise ValueError("last_day is before first_day")
        return self


class Doctor(_Part):
    name: Name
    title: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] = ""
    department: Name
    specialties: list[Name] = Field(default_factory=list, max_length=20)
    duty: list[Duty] = Field(default_factory=list, max_length=21, description="weekly duty")
    hours: Hours | None = Field(
        None, description=f"hours of every duty day that names none, e.g. {HOURS_EXAMPLE!r}"
    )
    leave: list[Leave] = Field(default_factory=list, max_length=50, description="days off, inclusive")

    @model_validator(mode="before")
    @classmethod
    def _old_default(cls, raw: Any) -> Any:
        """A duty that names no hours, of a doctor without ``hours``: 08:00-17:00, written out (as the
        documents before ``hours`` were stored); a duty with only ``start`` or ``end``: the other as
        before. Anything malformed is left to the field checks."""
        if not isinstance(raw, dict) or not isinstance(raw.get("duty"), list):
            return raw
        duty = []
        for d in raw["duty"]:
            if isinstance(d, dict) and d.get("hours") is None:
                if d.get("start") is not None or d.get("end") is not None or raw.get("hours") is None:
                    d = {**d, "start": d.get("start") or DEFAULT_START, "end": d.get("end") or DEFAULT_END}
            duty.append(d)
        return {**raw, "duty": duty}

    @model_validator(mode="after")
    def _hours(self) -> Doctor:
        """Every ``hours`` parses, and a duty gives either ``hours`` or ``start``/``end``; the message
        names the doctor and the value."""
        found = []
        for duty in self.duty:
            day = f"{WEEKDAYS[duty.weekday - 1]} (weekday {duty.weekday})"
            if duty.hours is not None and (duty.start is not None or duty.end is not None):
                found.append(f"duty on {day} gives both hours {duty.hours!r} and start/end; keep one")
            elif duty.hours is not None:
                try:
                    parse_hours(duty.hours)
                except ValueError as exc:
                    found.append(f"hours {duty.hours!r} on {day}: {exc}")
        if self.hours is not None:
            try:
                parse_hours(self.hours)
            except ValueError as exc:
                found.append(f"hours {self.hours!r}: {exc}")
            if not self.duty:
                found.append(f"hours {self.hours!r} but no duty days; add duty weekdays")
        if found:
            raise ValueError(
                f"doctor {self.name!r}: " + "; ".join(found) + f" (hours look like {HOURS_EXAMPLE!r})"
            )
        return self


class Activity(_Part):
    id: Slug
    title: Name
    wording: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    valid_from: date
    valid_to: date
    conditions: Short | None = None
    departments: list[Name] = Field(default_factory=list, max_length=20, description="empty: every one")
    projects: list[Name] = Field(default_factory=list, max_length=50, description="empty: every one")

    @model_validator(mode="after")
    def _order(self) -> Activity:
        if self.valid_from > self.valid_to:
            raise ValueError("valid_to is before valid_from")
        return self


class HospitalInfo(_Part):
    name: Name | None = Field(None, description="overrides the hospital_name setting in replies")
    address: Short | None = None
    phone: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)] | None = None
    directions: Long | None = None
    bring: Short | None = None


class Knowledge(_Part):
    """One hospital's knowledge (the body of ``PUT /v1/knowledge``, the YAML file's content)."""

    hospital: HospitalInfo = Field(default_factory=HospitalInfo)
    departments: list[Department] = Field(default_factory=list, max_length=50)
    doctors: list[Doctor] = Field(default_factory=list, max_length=500)
    activities: list[Activity] = Field(default_factory=list, max_length=200)


@dataclass(frozen=True)
class Problem:
    """What is wrong with a document, at ``loc`` (field names and list positions)."""

    loc: tuple[str | int, ...]
    msg: str

    def __str__(self) -> str:
        return f"{'.'.join(str(p) for p in self.loc) or '(document)'}: {self.msg}"


class KnowledgeError(ValueError):
    """A document that cannot be stored; :attr:`problems` name each field."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems[:10]))


def _duplicates(names: Sequence[str]) -> list[int]:
    seen: set[str] = set()
    out = []
    for i, n in enumerate(names):
        if n in seen:
            out.append(i)
        seen.add(n)
    return out


def _reference_problems(k: Knowledge) -> list[Problem]:
    """Names unique where they identify something; doctors and activities name existing departments."""
    out = [
        Problem(("departments", i, "name"), "duplicate department")
        for i in _duplicates([d.name for d in k.departments])
    ]
    for i, dept in enumerate(k.departments):
        out += [
            Problem(("departments", i, "projects", j, "name"), "duplicate project")
            for j in _duplicates([p.name for p in dept.projects])
        ]
    depts = {d.name for d in k.departments}
    projects = {p.name for d in k.departments for p in d.projects}
    keys = [f"{d.department}/{d.name}" for d in k.doctors]
    out += [Problem(("doctors", i, "name"), "duplicate doctor in this department") for i in _duplicates(keys)]
    for i, doc in enumerate(k.doctors):
        if doc.department not in depts:
            out.append(
                Problem(
                    ("doctors", i, "department"),
                    f"unknown department {doc.department!r}; add it to departments",
                )
            )
    out += [
        Problem(("activities", i, "id"), "duplicate activity id")
        for i in _duplicates([a.id for a in k.activities])
    ]
    for i, a in enumerate(k.activities):
        for j, name in enumerate(a.departments):
            if name not in depts:
                out.append(Problem(("activities", i, "departments", j), f"unknown department {name!r}"))
        for j, name in enumerate(a.projects):
            if name not in projects:
                out.append(Problem(("activities", i, "projects", j), f"unknown project {name!r}"))
    return out


def wording_problem(text: str) -> str | None:
    """Why a text shown to visitors breaks the compliance guard (its rules, then its classifier, as a
    consultant's message is checked), naming the rule and its citation; None when it passes."""
    from yuyue.models.replies.guard import ComplianceGuard, check_consultant_message

    guard = ComplianceGuard.default()
    verdict = guard.check(text)
    if not verdict.allowed:
        rules = guard.rules_by_id
        named = [f"{r} ({rules[r].cite})" if r in rules else r for r in verdict.rules]
        return "breaks the compliance rule(s) " + ", ".join(named)
    combined = check_consultant_message(text)
    if not combined["allowed"]:
        named = [f"{r['id']} ({r.get('citation') or r['category']})" for r in combined["rules"]]
        return "breaks the compliance rule(s) " + ", ".join(named)
    return None


def problems(k: Knowledge) -> list[Problem]:
    """Everything wrong with a validated document beyond its fields: references, and activities'
    wording, title and conditions through the compliance guard."""
    out = _reference_problems(k)
    for i, a in enumerate(k.activities):
        for name in ("title", "wording", "conditions"):
            value = getattr(a, name)
            why = wording_problem(value) if value else None
            if why:
                out.append(Problem(("activities", i, name), why))
    return out


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    return [Problem(tuple(e["loc"]), str(e["msg"]).removeprefix("Value error, ")) for e in exc.errors()]


def parse(raw: object) -> Knowledge:
    """A checked document from parsed YAML / JSON; :class:`KnowledgeError` naming every problem."""
    if not isinstance(raw, dict):
        raise KnowledgeError(
            [Problem((), "expected a mapping with hospital, departments, doctors, activities")]
        )
    try:
        k = Knowledge.model_validate(raw)
    except ValidationError as exc:
        raise KnowledgeError(_pydantic_problems(exc)) from None
    found = problems(k)
    if found:
        raise KnowledgeError(found)
    return k


def parse_yaml(text: str) -> Knowledge:
    """:func:`parse` of a YAML text (bounded to :data:`MAX_YAML_BYTES`)."""
    if len(text.encode("utf-8")) > MAX_YAML_BYTES:
        raise KnowledgeError([Problem((), f"the file is over {MAX_YAML_BYTES} bytes")])
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f"line {where.line + 1}, column {where.column + 1}: " if where is not None else ""
        raise KnowledgeError([Problem((), f"not YAML: {at}{getattr(exc, 'problem', None) or exc}")]) from None
    return parse(raw if raw is not None else {})


def to_yaml(k: Knowledge) -> str:
    """The document as YAML (what ``yuyue knowledge export`` writes; :func:`parse_yaml` reads it back)."""
    data = k.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=120)


# ---------------------------------------------------------------------------------------- storage

hospital_knowledge = sa.Table(
    "hospital_knowledge",
    metadata,
    sa.Column("hospital_id", sa.String(MAX_HOSPITAL_ID), primary_key=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("rev", sa.Integer, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("updated_by", sa.String(128), nullable=True),
)


@dataclass(frozen=True)
class Stored:
    hospital_id: str
    knowledge: Knowledge
    rev: int
    updated_at: datetime | None
    updated_by: str | None


class KnowledgeStore:
    """Read and write the knowledge rows (one per hospital id)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def read(self, hospital_id: str) -> Stored:
        """The stored knowledge (an empty one at revision 0 when none was ever written)."""
        with self.engine.connect() as cx:
            row = (
                cx.execute(
                    sa.select(hospital_knowledge).where(hospital_knowledge.c.hospital_id == hospital_id)
                )
                .mappings()
                .first()
            )
        if row is None:
            return Stored(hospital_id, Knowledge(), 0, None, None)
        k = Knowledge.model_validate(orjson.loads(row["document"]))
        return Stored(hospital_id, k, int(row["rev"]), row["updated_at"], row["updated_by"])

    def has_other(self, hospital_id: str) -> bool:
        """Whether a hospital besides ``hospital_id`` has a stored document."""
        t = hospital_knowledge
        with self.engine.connect() as cx:
            found = cx.execute(
                sa.select(t.c.hospital_id).where(t.c.hospital_id != hospital_id).limit(1)
            ).first()
        return found is not None

    def hospitals(self) -> list[str]:
        """The hospital ids with a stored document, sorted."""
        with self.engine.connect() as cx:
            ids = cx.execute(sa.select(hospital_knowledge.c.hospital_id)).scalars().all()
        return sorted(ids)

    def rev(self, hospital_id: str) -> int:
        with self.engine.connect() as cx:
            rev = cx.execute(
                sa.select(hospital_knowledge.c.rev).where(hospital_knowledge.c.hospital_id == hospital_id)
            ).scalar()
        return int(rev or 0)

    def write(
        self, hospital_id: str, k: Knowledge, actor: str | None, expect_rev: int | None = None
    ) -> Stored:
        """Check ``k`` whole (:class:`KnowledgeError`), then store it as the next revision; with
        ``expect_rev``, :class:`Conflict` when someone wrote another revision meanwhile."""
        found = problems(k)
        if found:
            raise KnowledgeError(found)
        doc = orjson.dumps(k.model_dump(mode="json", exclude_none=True)).decode()
        now = utcnow()
        t = hospital_knowledge
        with self.engine.begin() as cx:
            current = cx.execute(
                sa.select(t.c.rev).where(t.c.hospital_id == hospital_id).with_for_update()
            ).scalar()
            rev = int(current or 0)
            if expect_rev is not None and expect_rev != rev:
                raise Conflict(
                    f"the knowledge of {hospital_id!r} is at revision {rev}, not {expect_rev}; reload it"
                )
            values = {"document": doc, "rev": rev + 1, "updated_at": now, "updated_by": actor}
            if current is None:
                cx.execute(t.insert().values(hospital_id=hospital_id, **values))
            else:
                cx.execute(t.update().where(t.c.hospital_id == hospital_id).values(**values))
        return Stored(hospital_id, k, rev + 1, now, actor)


# ---------------------------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class Index:
    """One hospital's knowledge arranged for the per-message rules."""

    knowledge: Knowledge
    rev: int
    departments: dict[str, Department] = field(default_factory=dict)
    # (department, lower-cased name or alias, project), longest names first
    names: list[tuple[str, str, Project]] = field(default_factory=list)

    @classmethod
    def of(cls, k: Knowledge, rev: int) -> Index:
        names = [
            (d.name, n.lower(), p) for d in k.departments for p in d.projects for n in (p.name, *p.aliases)
        ]
        names.sort(key=lambda t: -len(t[1]))
        return cls(k, rev, {d.name: d for d in k.departments}, names)


def find_project(
    index: Index, department: str | None, project: str | None, texts: Sequence[str]
) -> Project | None:
    """The knowledge's project for the chat: its project named (by name or alias, in its department when
    known), else the first project a visitor's message names."""
    wanted = [t for t in index.names if department is None or t[0] == department]
    if project:
        p = project.lower()
        for _, name, proj in wanted:
            if name == p or (len(name) >= 2 and (name in p or p in name)):
                return proj
    for text in reversed(texts):
        low = text.lower()
        for _, name, proj in wanted:
            if name in low:
                return proj
    return None


@dataclass(frozen=True)
class DayDuty:
    """A doctor's hours on one day: (start, end) minutes since midnight, in order."""

    ranges: tuple[tuple[int, int], ...]

    @property
    def start(self) -> str:
        return _hhmm(self.ranges[0][0])

    @property
    def end(self) -> str:
        return _hhmm(self.ranges[-1][1])

    @property
    def hours(self) -> str:
        """``09:00-12:00,14:00-17:30``."""
        return ",".join(f"{_hhmm(a)}-{_hhmm(b)}" for a, b in self.ranges)

    def covers(self, lo: int, hi: int) -> bool:
        """On duty at minute ``lo`` (``lo == hi``), or at some time in [``lo``, ``hi``) (a part of day)."""
        if lo == hi:
            return any(a <= lo < b for a, b in self.ranges)
        return any(a < hi and lo < b for a, b in self.ranges)


def duty_ranges(doctor: Doctor, duty: Duty) -> tuple[tuple[int, int], ...]:
    """The hours of one duty: its ``hours``, else its ``start``/``end``, else the doctor's ``hours``,
    else 08:00-17:00."""
    if duty.hours is not None:
        return parse_hours(duty.hours)
    if duty.start is not None or duty.end is not None or doctor.hours is None:
        return parse_hours(f"{duty.start or DEFAULT_START}-{duty.end or DEFAULT_END}")
    return parse_hours(doctor.hours)


def on_leave(doctor: Doctor, day: date) -> bool:
    return any(lv.first_day <= day <= lv.last_day for lv in doctor.leave)


def on_duty(doctor: Doctor, day: date) -> DayDuty | None:
    """The doctor's hours on ``day``: its duties on that weekday (their ranges together) and no leave
    covering the day (else None)."""
    if on_leave(doctor, day):
        return None
    ranges = sorted(r for d in doctor.duty if d.weekday == day.isoweekday() for r in duty_ranges(doctor, d))
    if not ranges:
        return None
    merged = [ranges[0]]
    for a, b in ranges[1:]:  # two duties of one weekday may touch or overlap: one range
        if a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return DayDuty(tuple(merged))


def _specialised(doctor: Doctor, project: Project | None) -> bool:
    if project is None:
        return False
    names = [project.name, *project.aliases]
    return any(n in s or s in n for s in doctor.specialties for n in names)


def doctors_on_duty(
    index: Index,
    department: str | None,
    project: Project | None,
    day: date,
    minutes: tuple[int, int] | None = None,
) -> list[tuple[Doctor, DayDuty]]:
    """Doctors of the department (any, when unknown but the project is) on duty on ``day`` (and, with
    ``minutes``, at that time of it: :meth:`DayDuty.covers`); those whose specialties name the project
    first, then in the knowledge's order."""
    if department is None and project is None:
        return []
    out = []
    for d in index.knowledge.doctors:
        if department is not None and d.department != department:
            continue
        if department is None and not _specialised(d, project):
            continue
        duty = on_duty(d, day)
        if duty is not None and (minutes is None or duty.covers(*minutes)):
            out.append((d, duty))
    out.sort(key=lambda dd: not _specialised(dd[0], project))
    return out


def activities_on(index: Index, department: str | None, project: Project | None, day: date) -> list[Activity]:
    """Activities valid on ``day`` for the department and project (an activity limited to some
    departments or projects is never shown to a chat outside them, nor to one whose is unknown)."""
    out = []
    for a in index.knowledge.activities:
        if not a.valid_from <= day <= a.valid_to:
            continue
        if a.departments and department not in a.departments:
            continue
        if a.projects and (project is None or project.name not in a.projects):
            continue
        out.append(a)
    return out


_CLAUSE = re.compile(r"[，,。？?！!；;\n]+")


@lru_cache(maxsize=4096)
def _normalized(text: str) -> str:
    from yuyue.features.normalize import normalize

    return normalize(text)


# what a visit time's words say of the hour: a clock time (下午3点, 15:30), else a part of the day, whose
# window (minutes since midnight) a doctor's hours must meet, else only the day
_CLOCK_WORDS = re.compile(r"(?:\d{1,2}|[一二两三四五六七八九十]{1,3})\s?(?:点|(?<=\d)时)|\d{1,2}:\d{2}")
_PARTS_OF_DAY = (
    (re.compile(r"上午|早上|早晨|今早|明早"), (6 * 60, 12 * 60)),
    (re.compile(r"中午"), (11 * 60, 14 * 60)),
    (re.compile(r"下午"), (12 * 60, 18 * 60)),
    (re.compile(r"傍晚"), (17 * 60, 19 * 60)),
    (re.compile(r"晚上|夜里|今晚|明晚"), (18 * 60, 24 * 60)),
)


@dataclass(frozen=True)
class Visit:
    """The visit time named last in a chat: its day and, when the words gave one, the hour (``minutes``
    = (m, m)) or the part of the day (``minutes`` = [start, end)); ``minutes`` None: only the day."""

    day: date
    minutes: tuple[int, int] | None = None


def _visit(when: datetime, words: str) -> Visit:
    local = when.astimezone(LOCAL_TZ)
    if _CLOCK_WORDS.search(words):
        m = local.hour * 60 + local.minute
        return Visit(local.date(), (m, m))
    for pattern, window in _PARTS_OF_DAY:
        if pattern.search(words):
            return Visit(local.date(), window)
    return Visit(local.date())


def visit_time(messages: Sequence[tuple[str, str]], at: datetime) -> Visit | None:
    """The visit time named last in the chat (relative to ``at``), None when none is."""
    from yuyue.features.entities import parse_visit_time

    for _, text in reversed(messages[-8:]):
        # clause by clause, newest last: the parser reads a long message conservatively
        for clause in reversed(_CLAUSE.split(_normalized(text))):
            when, words = parse_visit_time(clause, at) if clause else (None, None)
            if when is not None:
                return _visit(when, words or "")
    return None


def visit_day(messages: Sequence[tuple[str, str]], at: datetime) -> date | None:
    """The day of the visit time named last in the chat (relative to ``at``), None when none is."""
    visit = visit_time(messages, at)
    return visit.day if visit is not None else None


def day_label(day: date, today: date) -> str:
    """明天（周三） / 3月5日（周四）."""
    near = {0: "今天", 1: "明天", 2: "后天"}.get((day - today).days)
    return f"{near or f'{day.month}月{day.day}日'}（{WEEKDAYS[day.weekday()]}）"


def _clock(hhmm: str) -> str:
    return f"{int(hhmm[:2])}:{hhmm[3:]}"


def _strip_end(text: str) -> str:
    return text.rstrip("。.！!；;，, ")


def pick_doctor(
    index: Index,
    department: str | None,
    project: Project | None,
    at: datetime,
    named: Visit | date | None,
) -> tuple[Doctor, DayDuty, date] | None:
    """The doctor to recommend: on duty at the named time (the hour, or the part of the day, when the
    words gave one; else the day); else today while their hours last, else tomorrow."""
    local = at.astimezone(LOCAL_TZ)
    if isinstance(named, date):
        named = Visit(named)
    if named is not None:
        found = doctors_on_duty(index, department, project, named.day, named.minutes)
        return (found[0][0], found[0][1], named.day) if found else None
    today = local.date()
    now = local.hour * 60 + local.minute
    for d, duty in doctors_on_duty(index, department, project, today):
        if duty.ranges[-1][1] > now:
            return d, duty, today
    tomorrow = today + timedelta(days=1)
    found = doctors_on_duty(index, department, project, tomorrow)
    return (found[0][0], found[0][1], tomorrow) if found else None


def _doctor_slots(doctor: Doctor, duty: DayDuty, day: date, today: date) -> dict[str, str]:
    hours = "、".join(f"{_clock(_hhmm(a))}–{_clock(_hhmm(b))}" for a, b in duty.ranges)
    intro = f"{doctor.department}的{doctor.name}{doctor.title}{day_label(day, today)}{hours}出诊"
    if doctor.specialties:
        intro += "，平时主要看" + "、".join(doctor.specialties[:3])
    return {"doctor": doctor.name + doctor.title, "doctor_intro": intro}


def _activity_text(a: Activity, today: date) -> str:
    year = f"{a.valid_to.year}年" if a.valid_to.year != today.year else ""
    valid = f"{year}{a.valid_to.month}月{a.valid_to.day}日前有效"
    cond = f"；{_strip_end(a.conditions)}" if a.conditions else ""
    return f"{a.title}：{_strip_end(a.wording)}（{valid}{cond}）"


def _hospital_slots(k: Knowledge, dept: Department | None) -> dict[str, str]:
    h = k.hospital
    bring = (dept.bring if dept is not None else None) or h.bring
    out = {
        "hospital": h.name,
        "address": h.address,
        "phone": h.phone,
        "directions": _strip_end(h.directions) if h.directions else None,
        "bring": _strip_end(bring) if bring else None,
    }
    return {k_: v for k_, v in out.items() if v}


def slot_facts(
    index: Index, facts: Mapping[str, Any], messages: Sequence[tuple[str, str]], at: datetime
) -> dict[str, Any]:
    """What the knowledge adds to a chat's facts: ``doctor``, ``slots`` (reply slot values), ``boost``
    (the knowledge scripts whose slots are filled) and ``project`` when only a visitor's words named it."""
    department = facts.get("department") or None
    chat_project = facts.get("project") or None
    visitor = [t for r, t in messages if r == "visitor"]
    project = find_project(index, department, chat_project, visitor)
    named = visit_time(messages, at)
    today = at.astimezone(LOCAL_TZ).date()
    slots = _hospital_slots(index.knowledge, index.departments.get(department) if department else None)
    out: dict[str, Any] = {}
    picked = pick_doctor(index, department, project, at, named)
    if picked is not None:
        d_slots = _doctor_slots(*picked, today)
        out["doctor"] = d_slots.pop("doctor")
        slots.update(d_slots)
    activity = next(iter(activities_on(index, department, project, named.day if named else today)), None)
    if activity is not None:
        slots["activity"] = _activity_text(activity, today)
    if project is not None:
        if project.price_low is not None:
            slots["price_range"] = f"{project.price_low}到{project.price_high}元"
        if project.duration:
            slots["duration"] = _strip_end(project.duration)
        if not chat_project:
            out["project"] = project.name
    out["slots"] = slots
    out["boost"] = dict(BOOST[s] for s in KNOWLEDGE_SLOTS if s in slots)
    return out


# ---------------------------------------------------------------------------------------- serving


class KnowledgeBook:
    """The knowledge served, per hospital id, cached; re-read when its stored revision changed (checked
    at most every ``refresh_s`` seconds) and replaced at once by :meth:`written`."""

    def __init__(self, engine: sa.Engine, hospital_id: str, refresh_s: float = REFRESH_S):
        self.store = KnowledgeStore(engine)
        self.hospital_id = hospital_id
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, Index | None]] = {}  # id -> (next check, index or None)
        self._others = (0.0, False)  # (next check, whether another hospital has a document)
        self.loads = 0

    def get(self, hospital_id: str | None = None) -> Index | None:
        """The hospital's knowledge (None when it holds nothing)."""
        hid = hospital_id or self.hospital_id
        now = time.monotonic()
        cached = self._cached.get(hid)
        if cached is not None and now < cached[0]:
            return cached[1]
        with self._lock:
            old = cached[1] if cached is not None else None
            try:
                rev = self.store.rev(hid)
                index = old if old is not None and old.rev == rev else self._load(hid, rev)
            except sa.exc.SQLAlchemyError as exc:  # keep what was read last; try again later
                log.warning("could not read the knowledge base: %s", type(exc).__name__)
                index = old
            self._cached[hid] = (now + self.refresh_s, index)
        return index

    def others(self) -> bool:
        """Whether a hospital besides the default has a stored document (checked at most every
        ``refresh_s`` seconds): until one has, no chat's hospital needs looking up."""
        now = time.monotonic()
        if now < self._others[0]:
            return self._others[1]
        try:
            found = self.store.has_other(self.hospital_id)
        except sa.exc.SQLAlchemyError as exc:  # keep what was read last; try again later
            log.warning("could not read the knowledge base: %s", type(exc).__name__)
            found = self._others[1]
        self._others = (now + self.refresh_s, found)
        return found

    def for_chat(self, hospital_id: str | None) -> Index | None:
        """The knowledge a chat of ``hospital_id`` is served from: its hospital's own document when it has
        one, else the default (the book's ``hospital_id``: a chat without a hospital, a hospital without
        a document)."""
        if hospital_id and hospital_id != self.hospital_id:
            if len(self._cached) > MAX_CACHED and hospital_id not in self._cached:
                with self._lock:
                    self._cached.clear()  # hospital ids come from chats: keep the cache bounded
            own = self.get(hospital_id)
            if own is not None:
                return own
        return self.get()

    def _load(self, hospital_id: str, rev: int) -> Index | None:
        if rev == 0:
            return None
        stored = self.store.read(hospital_id)
        self.loads += 1
        return Index.of(stored.knowledge, stored.rev) if _has_content(stored.knowledge) else None

    def written(self, stored: Stored) -> None:
        """A write through this process: serve it from the next message on."""
        index = Index.of(stored.knowledge, stored.rev) if _has_content(stored.knowledge) else None
        with self._lock:
            self._cached[stored.hospital_id] = (time.monotonic() + self.refresh_s, index)
            if stored.hospital_id != self.hospital_id:
                self._others = (time.monotonic() + self.refresh_s, True)


def _has_content(k: Knowledge) -> bool:
    return bool(k.departments or k.doctors or k.activities or k.hospital.model_dump(exclude_none=True))


# a chat's hospital, or a function giving it (looked up only once some hospital has its own document)
HospitalOf = str | Callable[[], str | None] | None
_message: contextvars.ContextVar[tuple[datetime, HospitalOf] | None] = contextvars.ContextVar(
    "yuyue_knowledge_message", default=None
)


@dataclass
class KnowledgeHook:
    """The suggester's hook (``ReplySuggester.knowledge``): the chat's facts plus :func:`slot_facts` of
    the hospital's knowledge at the message's time, inside :func:`message_time` (else the facts as given)."""

    book: KnowledgeBook

    def facts(self, facts: Mapping[str, Any], messages: Sequence[tuple[str, str]]) -> dict[str, Any]:
        message = _message.get()
        if message is None:  # not a message the service is serving (a replay, a benchmark): as without
            return dict(facts)
        at, hospital = message
        if callable(hospital):
            hospital = hospital() if self.book.others() else None
        index = self.book.for_chat(hospital)
        if index is None:
            return dict(facts)
        return {**facts, **slot_facts(index, facts, messages, at)}


_books_lock = threading.Lock()


def book(service: Any) -> KnowledgeBook:
    """The knowledge book of a ``ChatService`` (made on first use, on its store's database)."""
    found: KnowledgeBook | None = getattr(service, "knowledge_book", None)
    if found is None:
        with _books_lock:
            found = getattr(service, "knowledge_book", None)
            if found is None:
                found = KnowledgeBook(service.store.engine, service.settings.hospital_id)
                service.knowledge_book = found
    return found


def attach(suggester: Any, knowledge_book: KnowledgeBook) -> None:
    """Make ``suggester`` consult the book, and give its pool the library's knowledge_* scripts when it
    was built before they existed (an older bundle)."""
    from yuyue.models.replies.pool import PoolEntry
    from yuyue.models.replies.scripts import load_library

    pool = suggester.pool
    missing = [e for e in load_library() if KNOWLEDGE_SLOTS & set(e.slots) and "s-" + e.id not in pool]
    if missing:
        pool.swap_entries(
            add=[
                PoolEntry(
                    id="s-" + e.id,
                    text=e.text,
                    source="script",
                    stage=e.stage.value,
                    booked_after=pool.base_rate,
                    status="allowed",
                    concern=e.concern.value if e.concern is not None else None,
                    department=e.department,
                    project=e.project,
                )
                for e in missing
            ]
        )
        suggester._fit_scripts()  # the script index: the new scripts by their wording
    suggester.knowledge = KnowledgeHook(knowledge_book)


@contextmanager
def message_time(at: datetime, hospital_id: HospitalOf = None) -> Iterator[None]:
    """Within it, an attached suggester fills replies from the knowledge of ``hospital_id`` (the chat's
    hospital: its own document, else the book's default one; a function giving it is called only once
    some hospital has its own document) for a message sent at ``at``."""
    token = _message.set((at, hospital_id))
    try:
        yield
    finally:
        _message.reset(token)


@contextmanager
def serving(service: Any, model: Any, at: datetime, hospital_id: HospitalOf = None) -> Iterator[None]:
    """Around ``model.on_message``: its suggester fills replies from the hospital's knowledge as of ``at``."""
    suggester = getattr(model, "suggester", None)
    if suggester is not None:
        kb = book(service)
        hook = getattr(suggester, "knowledge", None)
        if not isinstance(hook, KnowledgeHook) or hook.book is not kb:
            attach(suggester, kb)
    with message_time(at, hospital_id):
        yield


def load_example() -> Knowledge:
    """The example knowledge (``config/knowledge_example.yaml``) the demo starts with."""
    return parse_yaml(EXAMPLE.read_text(encoding="utf-8"))


__all__ = [
    "Activity",
    "DayDuty",
    "Department",
    "Doctor",
    "Duty",
    "HospitalInfo",
    "Index",
    "Knowledge",
    "KnowledgeBook",
    "KnowledgeError",
    "KnowledgeHook",
    "KnowledgeStore",
    "MAX_HOSPITAL_ID",
    "Leave",
    "Problem",
    "Project",
    "Stored",
    "Visit",
    "activities_on",
    "attach",
    "book",
    "doctors_on_duty",
    "duty_ranges",
    "find_project",
    "hospital_knowledge",
    "load_example",
    "message_time",
    "on_duty",
    "on_leave",
    "parse",
    "parse_hours",
    "parse_yaml",
    "pick_doctor",
    "problems",
    "serving",
    "slot_facts",
    "to_yaml",
    "visit_day",
    "visit_time",
]
