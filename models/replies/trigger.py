"""Trigger: whether to offer reply suggestions at all for the visitor's latest message.

Sensitive matters (self-harm, minors, especially around abortion or cosmetic surgery) get no
suggestions: a person must answer. Emergency symptoms get only one fixed reply that advises urgent
care. The rules are data, in ``triggers.yaml`` beside this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml

from yuyue.compat import end_anchored_width
from yuyue.features.normalize import normalize

TRIGGERS_FILE = Path(__file__).with_name("triggers.yaml")
Action = Literal["suggest", "none", "emergency"]
_CN_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


def _cn_number(s: str) -> int | None:
    """Integer of a small number written in digits or Chinese (十五, 二十, 九)."""
    if s.isdigit():
        return int(s)
    if "十" in s:
        tens, _, ones = s.partition("十")
        t = _CN_DIGITS.get(tens, 1) if tens else 1
        o = _CN_DIGITS.get(ones, 0) if ones else 0
        return t * 10 + o
    return _CN_DIGITS.get(s) if len(s) == 1 else None


def _end_anchored_width(pattern: str) -> int | None:
    """How many characters a pattern ending in ``$`` (and looking neither behind nor back) can span;
    None when it is not such a pattern or its width is unbounded (then the whole prefix is searched)."""
    return end_anchored_width(pattern, below=1000, plain=True)


@dataclass(frozen=True)
class TriggerResult:
    """What the console should do: ``suggest`` as usual, ``none``, or only the safety reply."""

    action: Action
    reason: str | None = None  # the rule that fired
    matched: str | None = None  # the text that fired it


@dataclass(frozen=True)
class TriggerRule:
    name: str
    action: Action
    patterns: tuple[re.Pattern[str], ...]
    exclude: tuple[str, ...] = ()
    not_after: re.Pattern[str] | None = None
    requires: re.Pattern[str] | None = None
    max_age: int | None = None
    # not_after ends in $ and spans at most this many characters: only that much text before a
    # match is searched (searching from 0 for every match was quadratic: 10k chars of 不会胸痛, 0.5 s)
    not_after_width: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TriggerRule:
        action = d.get("action")
        if action not in ("none", "emergency"):
            raise ValueError(f"trigger rule {d.get('name')!r}: action must be none or emergency")
        requires = d.get("requires")
        return cls(
            name=str(d["name"]),
            action=action,
            patterns=tuple(re.compile(p, re.IGNORECASE) for p in d["patterns"]),
            exclude=tuple(sorted(d.get("exclude", ()), key=len, reverse=True)),
            not_after=re.compile(d["not_after"]) if d.get("not_after") else None,
            not_after_width=_end_anchored_width(d["not_after"]) if d.get("not_after") else None,
            requires=re.compile("|".join(map(re.escape, requires))) if requires else None,
            max_age=d.get("max_age"),
        )

    def match(self, text: str) -> str | None:
        """The fired span of ``text`` (already normalised), or None."""
        for phrase in self.exclude:
            text = text.replace(phrase, "　" * len(phrase))
        if self.requires is not None and not self.requires.search(text):
            return None
        width = self.not_after_width
        for pat in self.patterns:
            for m in pat.finditer(text):
                if self.not_after is not None:
                    lo = 0 if width is None else max(0, m.start() - width)
                    if self.not_after.search(text, lo, m.start()):
                        continue
                if self.max_age is not None and "age" in pat.groupindex and m.group("age"):
                    age = _cn_number(m.group("age"))
                    if age is None or age > self.max_age:
                        continue
                return m.group(0)
        return None


class Trigger:
    """Decides per visitor message whether suggestions may be shown."""

    def __init__(self, rules: list[TriggerRule], safety_reply: str):
        self.rules = rules
        self.safety_reply = safety_reply

    @classmethod
    def from_yaml(cls, path: str | Path = TRIGGERS_FILE) -> Trigger:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return cls([TriggerRule.from_dict(r) for r in data["rules"]], str(data["safety_reply"]))

    @classmethod
    def default(cls) -> Trigger:
        return _default_trigger()

    def check(self, visitor_text: str) -> TriggerResult:
        """``suggest`` unless a rule fires on the (raw or normalised) visitor text."""
        text = normalize(visitor_text)
        if not text:
            return TriggerResult("suggest")
        for rule in self.rules:
            hit = rule.match(text)
            if hit is not None:
                return TriggerResult(rule.action, rule.name, hit)
        return TriggerResult("suggest")


@lru_cache(maxsize=1)
def _default_trigger() -> Trigger:
    return Trigger.from_yaml(TRIGGERS_FILE)


__all__ = ["TRIGGERS_FILE", "Trigger", "TriggerResult", "TriggerRule"]
