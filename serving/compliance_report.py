"""The supervisors' compliance report: consultant messages checked and flagged, per consultant,
rule category or day, with masked examples (``GET /v1/stats/compliance``).

Each consultant message is checked when it is sent (``ChatService.message``) and the verdict is
kept with its message event; messages stored before that are checked again here with the same
combined guard (rules + classifier, about 0.1 ms each), so the report covers them too. The scan
streams the messages in batches: memory stays bounded by the number of groups, not of messages.
Examples are masked (:func:`~yuyue.serving.service.masked_text`): the report is not the
consultant's live view, so it shows no personal data, not even to the consultant it is about.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from yuyue.models.replies.guard import default_combined
from yuyue.serving.service import LOCAL_TZ, masked_text, stored_compliance
from yuyue.serving.store import EventStore, Filters

COMPLIANCE_GROUPS = ("consultant", "category", "day")
EXAMPLES_PER_GROUP = 3


class RuleHit(BaseModel):
    id: str
    category: str
    citation: str = ""
    source: str = Field("rule", description="rule | classifier")


class FlaggedExample(BaseModel):
    conversation_id: str
    seq: int
    at: str
    consultant_id: str | None
    text: str = Field(description="the message as typed, personal data masked")
    rules: list[RuleHit]


class ComplianceGroup(BaseModel):
    group: str | None
    checked: int | None = Field(description="consultant messages checked (None when grouped by category)")
    flagged: int = Field(description="of those, flagged by the guard (for a category: flagged with it)")
    flagged_rate: float | None
    by_category: dict[str, int] = Field(description="flagged messages per rule category")
    examples: list[FlaggedExample] = Field(description=f"the latest {EXAMPLES_PER_GROUP} flagged, masked")


class ComplianceReport(BaseModel):
    group_by: str | None
    checked: int
    flagged: int
    flagged_rate: float | None
    by_category: dict[str, int]
    groups: list[ComplianceGroup]


class _Tally:
    __slots__ = ("by_category", "checked", "examples", "flagged")

    def __init__(self) -> None:
        self.checked = 0
        self.flagged = 0
        self.by_category: dict[str, int] = {}
        self.examples: deque[dict[str, Any]] = deque(maxlen=EXAMPLES_PER_GROUP)

    def add(self, categories: Iterable[str], example: dict[str, Any] | None, checked: bool = True) -> None:
        self.checked += checked
        if example is None:
            return
        self.flagged += 1
        for cat in categories:
            self.by_category[cat] = self.by_category.get(cat, 0) + 1
        self.examples.append(example)

    def view(self, group: str | None, with_checked: bool = True) -> dict[str, Any]:
        return {
            "group": group,
            "checked": self.checked if with_checked else None,
            "flagged": self.flagged,
            "flagged_rate": _rate(self.flagged, self.checked) if with_checked else None,
            "by_category": dict(sorted(self.by_category.items(), key=lambda kv: (-kv[1], kv[0]))),
            "examples": list(reversed(self.examples)),
        }


def _rate(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def verdict(message: dict[str, Any]) -> dict[str, Any]:
    """A stored consultant message's compliance verdict: the one kept with it, else checked now."""
    stored: dict[str, Any] | None = message.get("compliance")
    if stored is not None:
        return stored
    return stored_compliance(default_combined().check(message["text"]))


def _day(at: str) -> str:
    return datetime.fromisoformat(at).astimezone(LOCAL_TZ).date().isoformat()


def compliance_report(store: EventStore, group_by: str | None, filters: Filters) -> dict[str, Any]:
    """Counts of consultant messages checked and flagged (with categories and masked examples),
    overall and per ``group_by`` (``consultant``, ``category``, ``day`` or None)."""
    if group_by not in (None, *COMPLIANCE_GROUPS):
        raise ValueError(f"group_by must be one of {', '.join(COMPLIANCE_GROUPS)}, not {group_by!r}")
    total = _Tally()
    groups: dict[str | None, _Tally] = {}
    for m in store.consultant_messages(filters):
        v = verdict(m)
        categories = list(dict.fromkeys(r["category"] for r in v["rules"]))
        example = None
        if not v["allowed"]:
            example = {
                "conversation_id": m["conversation_id"],
                "seq": m["seq"],
                "at": m["at"],
                "consultant_id": m["consultant_id"],
                "text": masked_text(m),
                "rules": v["rules"],
            }
        total.add(categories, example)
        if group_by == "category":
            for cat in categories:
                groups.setdefault(cat, _Tally()).add([cat], example, checked=False)
            continue
        key = (
            m["consultant_id"] if group_by == "consultant" else _day(m["at"]) if group_by == "day" else "all"
        )
        groups.setdefault(key, _Tally()).add(categories, example)
    views = [t.view(k, with_checked=group_by != "category") for k, t in groups.items()]
    if group_by == "day":
        views.sort(key=lambda g: g["group"] or "")
    else:
        views.sort(key=lambda g: (-g["flagged"], -(g["checked"] or 0), g["group"] or ""))
    out = total.view(None)
    return {
        "group_by": group_by,
        "checked": out["checked"],
        "flagged": out["flagged"],
        "flagged_rate": out["flagged_rate"],
        "by_category": out["by_category"],
        "groups": views,
    }
