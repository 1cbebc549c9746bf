"""Next-step hints for the consultant, from chat features and the stages done.

Rules and their Chinese wording are data (``models/hints.yaml``): each rule is a
list of conditions over :meth:`features.state.ConversationState.features` names
(absent names count as 0) and over the stages the chat has been through
(:class:`models.stages.ChatStageTracker`). :meth:`HintEngine.hints` returns the
firing rules, highest priority first, after each firing rule has hidden the ones
it ``suppresses``. Rules are validated at load time; a bad rule raises
:class:`HintRuleError` naming it.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yuyue.data.contract import STAGES

HINTS_FILE = Path(__file__).with_name("hints.yaml")


class HintRuleError(ValueError):
    """A hint rule in the YAML file is malformed."""


@dataclass(frozen=True)
class Hint:
    """One hint for the console: ``text`` is shown, ``id`` is stable, ``stage`` is what it points to."""

    id: str
    text: str
    priority: float
    stage: str | None = None


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_FEATURE_COND = re.compile(r"^\s*([A-Za-z0-9_.=\-]+)\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
_STAGE_COND = re.compile(r"^\s*(not\s+)?done\s+([a-z_]+)\s*$")
_RULE_KEYS = {"id", "priority", "text", "stage", "when", "any", "suppresses"}


@dataclass(frozen=True)
class _Condition:
    source: str
    feature: str | None = None
    op: Callable[[float, float], bool] | None = None
    value: float = 0.0
    stage: str | None = None
    negate: bool = False

    def holds(self, features: Mapping[str, float], stages_done: Collection[str]) -> bool:
        if self.stage is not None:
            return (self.stage in stages_done) != self.negate
        op, feature = self.op, self.feature
        if op is None or feature is None:  # _parse gives every condition a stage or a comparison
            raise ValueError(f"hint condition {self.source!r} has neither a stage nor a comparison")
        return op(float(features.get(feature, 0.0)), self.value)


@dataclass(frozen=True)
class _Rule:
    hint: Hint
    all_of: tuple[_Condition, ...]
    any_of: tuple[_Condition, ...]
    suppresses: tuple[str, ...]

    def fires(self, features: Mapping[str, float], stages_done: Collection[str]) -> bool:
        if not all(c.holds(features, stages_done) for c in self.all_of):
            return False
        return not self.any_of or any(c.holds(features, stages_done) for c in self.any_of)


def _parse_condition(text: Any, where: str, known_features: Collection[str] | None) -> _Condition:
    if not isinstance(text, str):
        raise HintRuleError(f"{where}: condition {text!r} must be a string")
    m = _STAGE_COND.match(text)
    if m:
        stage = m.group(2)
        if stage not in STAGES:
            raise HintRuleError(f"{where}: unknown stage {stage!r} in condition {text!r}")
        return _Condition(text, stage=stage, negate=bool(m.group(1)))
    m = _FEATURE_COND.match(text)
    if not m:
        raise HintRuleError(
            f"{where}: cannot parse condition {text!r}; "
            "expected '<feature> <op> <number>' or '[not] done <stage>'"
        )
    feature, op, value = m.groups()
    if known_features is not None and feature not in known_features:
        raise HintRuleError(f"{where}: unknown feature {feature!r} in condition {text!r}")
    return _Condition(text, feature=feature, op=_OPS[op], value=float(value))


def _conditions(raw: Any, key: str, where: str, known: Collection[str] | None) -> tuple[_Condition, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, list):
        raise HintRuleError(f"{where}: '{key}' must be a list of condition strings")
    return tuple(_parse_condition(c, where, known) for c in raw)


def parse_rules(
    spec: Any, known_features: Collection[str] | None = None
) -> tuple[list[_Rule], tuple[str, ...]]:
    """Validated rules (and banned words) from a loaded YAML document; raises :class:`HintRuleError`."""
    if not isinstance(spec, dict) or not isinstance(spec.get("hints"), list):
        raise HintRuleError("hint rules: the document needs a top-level 'hints' list")
    banned = spec.get("banned_words") or []
    if not isinstance(banned, list) or not all(isinstance(w, str) and w for w in banned):
        raise HintRuleError("hint rules: 'banned_words' must be a list of non-empty strings")
    rules: list[_Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(spec["hints"]):
        rid = raw.get("id") if isinstance(raw, dict) else None
        where = f"hint rule {rid!r} (#{i})" if rid else f"hint rule #{i}"
        if not isinstance(raw, dict):
            raise HintRuleError(f"{where}: must be a mapping")
        if not isinstance(rid, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", rid):
            raise HintRuleError(f"{where}: 'id' must be a lower-case identifier")
        if rid in seen:
            raise HintRuleError(f"{where}: duplicate id")
        seen.add(rid)
        extra = sorted(set(raw) - _RULE_KEYS)
        if extra:
            raise HintRuleError(f"{where}: unknown keys {extra}")
        text = raw.get("text")
        if not isinstance(text, str) or not text.strip():
            raise HintRuleError(f"{where}: 'text' must be non-empty")
        hits = [w for w in banned if w in text]
        if hits:
            raise HintRuleError(f"{where}: text uses pressure wording {hits}")
        priority = raw.get("priority")
        if isinstance(priority, bool) or not isinstance(priority, int | float):
            raise HintRuleError(f"{where}: 'priority' must be a number")
        stage = raw.get("stage")
        if stage is not None and stage not in STAGES:
            raise HintRuleError(f"{where}: unknown stage {stage!r}")
        all_of = _conditions(raw.get("when"), "when", where, known_features)
        any_of = _conditions(raw.get("any"), "any", where, known_features)
        if not all_of and not any_of:
            raise HintRuleError(f"{where}: needs at least one condition in 'when' or 'any'")
        suppresses = raw.get("suppresses") or []
        if not isinstance(suppresses, list) or not all(isinstance(s, str) for s in suppresses):
            raise HintRuleError(f"{where}: 'suppresses' must be a list of rule ids")
        hint = Hint(rid, text.strip(), float(priority), stage)
        rules.append(_Rule(hint, all_of, any_of, tuple(suppresses)))
    for r in rules:
        missing = sorted(set(r.suppresses) - seen)
        if missing:
            raise HintRuleError(f"hint rule {r.hint.id!r}: suppresses unknown rule ids {missing}")
    return rules, tuple(banned)


class HintEngine:
    """Evaluates the hint rules on one chat's features and stages done."""

    def __init__(self, rules: Iterable[_Rule], banned_words: Iterable[str] = ()):
        self.rules = list(rules)
        self.banned_words = tuple(banned_words)

    @classmethod
    def from_yaml(cls, path: str | Path, known_features: Collection[str] | None = None) -> HintEngine:
        """Rules from a YAML file; ``known_features`` (if given) rejects unknown feature names."""
        text = Path(path).read_text(encoding="utf-8")
        return cls.from_text(text, known_features, source=str(path))

    @classmethod
    def from_text(
        cls, text: str, known_features: Collection[str] | None = None, source: str = "<hints>"
    ) -> HintEngine:
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise HintRuleError(f"{source}: not valid YAML: {e}") from e
        rules, banned = parse_rules(spec, known_features)
        return cls(rules, banned)

    @classmethod
    def default(cls) -> HintEngine:
        """The packaged rules (``models/hints.yaml``), feature names checked against the state's."""
        from yuyue.features.state import feature_names

        text = HINTS_FILE.read_text(encoding="utf-8")
        return cls.from_text(text, set(feature_names()), source="models/hints.yaml")

    def hints(
        self, features: Mapping[str, float], stages_done: Collection[str] = (), top: int = 3
    ) -> list[Hint]:
        """The ``top`` firing hints, highest priority first (ties: file order)."""
        fired = [r for r in self.rules if r.fires(features, stages_done)]
        hidden = {s for r in fired for s in r.suppresses}
        shown = [r.hint for r in fired if r.hint.id not in hidden]
        shown.sort(key=lambda h: -h.priority)  # stable: file order breaks ties
        return shown[: max(0, top)]


__all__ = ["Hint", "HintEngine", "HintRuleError", "parse_rules"]
