"""Dataset summary: counts and outcome rates overall and by department, engine and consultant."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yuyue.data.contract import Conversation
from yuyue.data.io import SkipReport, read_conversations


@dataclass
class Rates:
    """Chat counts and outcome counts for one group."""

    chats: int = 0
    messages: int = 0
    labelled: int = 0
    contact: int = 0
    booked: int = 0
    arrived: int = 0

    def add(self, conv: Conversation) -> None:
        self.chats += 1
        self.messages += len(conv.messages)
        if conv.outcome is not None:
            self.labelled += 1
            self.contact += bool(conv.outcome.contact)
            self.booked += bool(conv.outcome.booked)
            self.arrived += bool(conv.outcome.booked and conv.outcome.arrived)

    def as_dict(self) -> dict[str, Any]:
        lab = self.labelled or 1
        return {
            "chats": self.chats,
            "messages_per_chat": round(self.messages / (self.chats or 1), 2),
            "labelled": self.labelled,
            "contact_rate": round(self.contact / lab, 4),
            "booked_rate": round(self.booked / lab, 4),
            "arrived_per_booking": round(self.arrived / (self.booked or 1), 4),
        }


@dataclass
class DatasetSummary:
    overall: Rates = field(default_factory=Rates)
    by: dict[str, dict[str, Rates]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(Rates)))
    skipped: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.as_dict(),
            "skipped_invalid": self.skipped,
            **{
                f"by_{key}": {k: r.as_dict() for k, r in sorted(groups.items(), key=lambda kv: -kv[1].chats)}
                for key, groups in self.by.items()
            },
        }


GROUPS = {
    "department": lambda c: c.department or "(none)",
    "engine": lambda c: c.visit.engine if c.visit and c.visit.engine else "(none)",
    "consultant": lambda c: c.consultant_id or "(none)",
}


def summarize(path: str | Path, *, strict: bool = False, report: SkipReport | None = None) -> DatasetSummary:
    """One streaming pass over a JSONL file."""
    report = report if report is not None else SkipReport()
    summary = DatasetSummary()
    for conv in read_conversations(path, strict=strict, report=report):
        summary.overall.add(conv)
        for key, get in GROUPS.items():
            summary.by[key][get(conv)].add(conv)
    summary.skipped = report.skipped
    return summary


def format_summary(summary: DatasetSummary, top: int = 10) -> str:
    """A readable table of the summary."""
    lines = []
    o = summary.overall.as_dict()
    lines.append(
        f"chats {o['chats']}  msgs/chat {o['messages_per_chat']}  contact {o['contact_rate']:.1%}  "
        f"booked {o['booked_rate']:.1%}  arrived/booked {o['arrived_per_booking']:.1%}  "
        f"(skipped invalid: {summary.skipped})"
    )
    for key, groups in summary.by.items():
        lines.append(f"\nby {key}:")
        lines.append(f"  {'group':<16}{'chats':>8}{'contact':>10}{'booked':>10}{'arr/bkd':>10}")
        for name, rates in sorted(groups.items(), key=lambda kv: -kv[1].chats)[:top]:
            d = rates.as_dict()
            lines.append(
                f"  {name:<16}{d['chats']:>8}{d['contact_rate']:>10.1%}{d['booked_rate']:>10.1%}"
                f"{d['arrived_per_booking']:>10.1%}"
            )
    return "\n".join(lines)
