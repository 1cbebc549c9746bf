"""Replay one fresh simulated chat through the champion model, as the console would see it."""

from __future__ import annotations

from collections.abc import Callable

from yuyue.config import Settings
from yuyue.data.contract import Conversation
from yuyue.data.simulator import iter_records
from yuyue.features.normalize import normalize
from yuyue.features.pii import mask_text
from yuyue.models.bundle import band
from yuyue.training import registry


def replay_chat(settings: Settings, seed: int = 99991, echo: Callable[[str], None] = print) -> None:
    """Print scores, stage, hints and suggestions after each message (personal data masked)."""
    model, version = registry.load(registry.CHAMPION, settings)
    rec = next(r for r in iter_records(50, seed=seed) if len(r["messages"]) >= 8)
    conv = Conversation.model_validate(rec).without_truth()
    session, scores = model.open_chat(
        started_at=conv.started_at,
        visit=conv.visit,
        department=conv.department,
        project=conv.project,
        consultant_id=conv.consultant_id,
    )
    echo(
        f"model version {version}; chat {conv.conversation_id} ({conv.department}, {conv.visit.engine if conv.visit else '-'})"
    )
    if scores:
        echo(
            f"  opened: booked {scores['booked'].probability:.2f}  arrived {scores['arrived'].probability:.2f}"
        )
    for m in conv.messages:
        ins = model.on_message(session, m.role, m.text, m.at)
        who = {"visitor": "访客", "consultant": "咨询", "system": "系统"}[m.role]
        echo(f"{who}: {mask_text(normalize(m.text))}")
        if ins.scores:
            b = ins.scores["booked"]
            reasons = "; ".join(r.render() for r in b.reasons[:3])
            echo(
                f"    booked {b.probability:.2f} ({ins.changes['booked']:+.2f}) band {band(b.probability)}  "
                f"arrived {ins.scores['arrived'].probability:.2f}  | {reasons}"
            )
        if ins.stage:
            echo(f"    stage {ins.stage} (reached {ins.stage_reached})")
        for h in ins.hints[:2]:
            echo(f"    hint: {h.text}")
        for s in ins.suggestions[:2]:
            echo(f"    suggest: {s.text}")
    if conv.outcome:
        echo(f"actual outcome: booked={conv.outcome.booked} arrived={conv.outcome.arrived}")
