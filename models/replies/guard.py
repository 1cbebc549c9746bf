"""Compliance guard: keeps promises, cure rates, absolute claims, disparagement and pressure out of replies.

The rules are data (``rules/compliance.yaml``); this module only compiles and applies them.
A rule fires when one of its ``patterns`` matches the normalised text and that match is not
overlapped by a match of one of its ``unless`` patterns (negated or hedged wording such as
"不能保证效果" or "第一次"). Patterns must not use named groups or back-references: all
rules' patterns are also joined into one pre-filter regex, so that a compliant text — the
usual case — costs a single regex pass. Capturing groups are rewritten as non-capturing ones
and the pre-filter is gated by the set of characters a match can start with; a whole
``check`` (normalisation included) takes about 25 µs of CPU for a chat-length text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from re import _constants as _C  # the regex parser: finds the characters a rule's match starts with
from re import _parser
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from yuyue.features.normalize import normalize

DEFAULT_RULES = Path(__file__).parent / "rules" / "compliance.yaml"
_FLAGS = re.IGNORECASE


class Category(StrEnum):
    """What kind of non-compliant wording a rule catches."""

    promise_result = "promise_result"
    cure_rate = "cure_rate"
    absolute_claim = "absolute_claim"
    guarantee_safety = "guarantee_safety"
    disparage = "disparage"
    fear_pressure = "fear_pressure"
    appearance_anxiety = "appearance_anxiety"
    patient_testimonial = "patient_testimonial"
    endorsement = "endorsement"
    inducement = "inducement"
    cure_timeframe = "cure_timeframe"
    exclusive_cure = "exclusive_cure"
    price_bait = "price_bait"


class RuleExamples(BaseModel):
    """Texts that must (positive) and must not (negative) fire the rule; the tests run them."""

    model_config = ConfigDict(extra="forbid")

    positive: list[str] = Field(min_length=1)
    negative: list[str] = Field(default_factory=list)


def _non_capturing(pattern: str) -> str:
    """``pattern`` with every capturing group made non-capturing (faster, and safe to join)."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            # a "]" right after "[" or "[^" is a literal
            if pattern[i : i + 1] == "^":
                out.append("^")
                i += 1
            if pattern[i : i + 1] == "]":
                out.append("]")
                i += 1
            continue
        elif c == "(" and pattern[i + 1 : i + 2] != "?":
            out.append("(?:")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _first_chars(pattern: str) -> set[str] | None:
    """What a match of ``pattern`` can start with, or None when that cannot be bounded.

    Items are single characters, or (longer strings) regex class items such as ``\\d`` or ``a-z``.
    """

    def seq(items: Iterable[tuple[object, object]]) -> tuple[set[str] | None, bool]:
        out: set[str] = set()
        for op, av in items:
            first, nullable = item(op, av)
            if first is None:
                return None, False
            out |= first
            if not nullable:
                return out, False
        return out, True

    def item(op: object, av: object) -> tuple[set[str] | None, bool]:
        if op is _C.LITERAL:
            return {chr(av)}, False  # type: ignore[arg-type]
        if op is _C.IN:
            found: set[str] = set()
            for o, a in av:  # type: ignore[attr-defined]
                if o is _C.LITERAL:
                    found.add(chr(a))
                elif o is _C.RANGE:
                    found.add(f"{re.escape(chr(a[0]))}-{re.escape(chr(a[1]))}")
                elif o is _C.CATEGORY and a is _C.CATEGORY_DIGIT:
                    found.add(r"\d")
                else:
                    return None, False
            return found, False
        if op is _C.CATEGORY and av is _C.CATEGORY_DIGIT:
            return {r"\d"}, False
        if op is _C.BRANCH:
            found, any_nullable = set(), False
            for alt in av[1]:  # type: ignore[index]
                first, nullable = seq(alt)
                if first is None:
                    return None, False
                found |= first
                any_nullable |= nullable
            return found, any_nullable
        if op is _C.SUBPATTERN:
            return seq(av[3])  # type: ignore[index]
        if op in (_C.MAX_REPEAT, _C.MIN_REPEAT):
            lo, _hi, sub = av  # type: ignore[misc]
            first, nullable = seq(sub)
            return first, (first is not None and (lo == 0 or nullable))
        return None, False

    first, nullable = seq(_parser.parse(pattern, _FLAGS))
    if first is None or nullable:
        return None
    cased = {c.swapcase() for c in first if len(c) == 1 and c.swapcase() != c}
    return first | cased


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern, _FLAGS)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
    if compiled.groupindex:
        raise ValueError(f"named groups are not allowed: {pattern!r}")
    if re.search(r"\\[1-9]|\(\?P=", pattern):
        raise ValueError(f"back-references are not allowed: {pattern!r}")
    return re.compile(_non_capturing(pattern), _FLAGS)


class ComplianceRule(BaseModel):
    """One rule of the compliance file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
    category: Category
    cite: Annotated[str, StringConstraints(min_length=1)]
    patterns: list[str] = Field(min_length=1)
    unless: list[str] = Field(default_factory=list)
    examples: RuleExamples

    @field_validator("patterns", "unless")
    @classmethod
    def _valid_regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            _compile(pattern)
        return value


@dataclass(slots=True)
class Verdict:
    """Outcome of checking one text: ``allowed`` is False when any rule fired; ``rules`` are their ids."""

    allowed: bool
    rules: list[str]


class RulesFileError(ValueError):
    """The compliance rules file cannot be read or is invalid; the message names the rule and field."""


def _join(patterns: Iterable[str]) -> str:
    return "|".join(f"(?:{_non_capturing(p)})" for p in patterns)


def _gated(patterns: Sequence[str]) -> tuple[re.Pattern[str], frozenset[str] | None]:
    """One regex matching wherever any of ``patterns`` matches, gated by the characters a match
    can start with; and those characters when they are all plain characters (else None)."""
    body = _join(patterns)
    starts: set[str] = set()
    for p in patterns:
        first = _first_chars(p)
        if first is None:  # cannot bound where a match starts: no gate (slower, still correct)
            return re.compile(body, _FLAGS), None
        starts |= first
    gate = "".join(re.escape(c) if len(c) == 1 else c for c in sorted(starts))
    literal = frozenset(starts) if all(len(c) == 1 for c in starts) else None
    return re.compile(f"(?=[{gate}])(?:{body})", _FLAGS), literal


class _CompiledRule:
    __slots__ = ("id", "pattern", "starts", "unless")

    def __init__(self, rule: ComplianceRule) -> None:
        self.id = rule.id
        self.pattern, self.starts = _gated(rule.patterns)
        self.unless = re.compile(_join(rule.unless), _FLAGS) if rule.unless else None

    def fires(self, text: str) -> bool:
        matches = [m.span() for m in self.pattern.finditer(text)]
        if not matches:
            return False
        if self.unless is None:
            return True
        # finditer does not report overlapping matches, so search from every match start
        spans = []
        pos = 0
        while (m := self.unless.search(text, pos)) is not None:
            spans.append(m.span())
            pos = m.start() + 1
        return any(all(e <= us or s >= ue for us, ue in spans) for s, e in matches)


class ComplianceGuard:
    """Flags reply texts that break the compliance rules.

    Construct from rules (``ComplianceGuard(rules)``), from a YAML file
    (``ComplianceGuard.from_yaml(path)``) or with the shipped rules
    (``ComplianceGuard.default()``). Nothing is learned; ``check`` is pure.
    """

    def __init__(self, rules: Sequence[ComplianceRule]) -> None:
        ids = [r.id for r in rules]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule ids: {', '.join(duplicates)}")
        self.rules = tuple(rules)
        self._compiled = [_CompiledRule(r) for r in self.rules]
        patterns = [p for r in self.rules for p in r.patterns]
        self._prefilter = _gated(patterns)[0] if patterns else None

    @classmethod
    def from_yaml(cls, path: str | Path) -> ComplianceGuard:
        return cls(load_rules(path))

    @classmethod
    def default(cls) -> ComplianceGuard:
        """The guard with the shipped rules (built once and shared; it holds no mutable state)."""
        return _default_guard()

    @property
    def rules_by_id(self) -> dict[str, ComplianceRule]:
        return {r.id: r for r in self.rules}

    def check(self, text: str) -> Verdict:
        """Normalise ``text`` and apply every rule; rule ids come back in file order."""
        norm = normalize(text)
        if self._prefilter is None or self._prefilter.search(norm) is None:
            return Verdict(True, [])
        chars = set(norm)
        fired = [
            r.id
            for r in self._compiled
            if (r.starts is None or not r.starts.isdisjoint(chars)) and r.fires(norm)
        ]
        return Verdict(not fired, fired)

    def check_many(self, texts: Iterable[str]) -> list[Verdict]:
        return [self.check(t) for t in texts]

    def filter(self, texts: Iterable[str]) -> list[bool]:
        """A keep-mask: True for each text that passes every rule."""
        return [self.check(t).allowed for t in texts]


def load_rules(path: str | Path | None = None) -> list[ComplianceRule]:
    """Read and validate a compliance rules file (default: the shipped one)."""
    path = Path(path) if path is not None else DEFAULT_RULES
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RulesFileError(f"{path}: cannot read rules: {exc}") from None
    items = raw.get("rules") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise RulesFileError(f"{path}: expected a mapping with a 'rules' list")
    rules: list[ComplianceRule] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items, start=1):
        rid = item.get("id") if isinstance(item, dict) else None
        where = f"{path}: rule #{i}" + (f" ({rid})" if rid else "")
        try:
            rule = ComplianceRule.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(rule)"
            raise RulesFileError(f"{where}: field '{field}': {err['msg']}") from None
        if rule.id in seen:
            raise RulesFileError(f"{where}: field 'id': duplicate id (first at rule #{seen[rule.id]})")
        seen[rule.id] = i
        rules.append(rule)
    return rules


@lru_cache(maxsize=1)
def _default_guard() -> ComplianceGuard:
    return ComplianceGuard(load_rules(DEFAULT_RULES))
