"""Score stability on the hand-written desk chats: single-message swings of p(booked).

Every chat of ``tests/data/chats/desk_chats.jsonl`` (33 realistic chats) is played message by message
through a model's :meth:`YuyueModel.on_message` (suggestions off). Each message's change of p(booked)
is labelled from what the state saw in that message:

- decisive: contact given (a phone / WeChat / QQ), contact refused (``refuses_contact``), a visit time
  proposed or agreed (``ent.visit_time_*`` set by this message), the visitor declining or leaving
  (``negative``), the consultant closing the chat (``closing``);
- buying signal (visitor): asking the way or the address (``asks_address``), asking about times
  (``asks_time``) or what to bring / prepare (见 ``BRING``), unless the same message is decisive;
- everything else: ordinary.

Prints, per model, the largest and p95 absolute swing of ordinary messages (the message that caused
the largest), the decisive swings for comparison, and every buying-signal message that lowered the
score.

    .venv/bin/python bench/bench_stability.py --model /work/scratch/testmodel [--model other_dir]
    .venv/bin/python bench/bench_stability.py --train 3000     # train a bundle on simulated chats first
"""

from __future__ import annotations

import argparse
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yuyue.data.io import read_conversations

CHATS = Path(__file__).resolve().parents[1] / "tests" / "data" / "chats" / "desk_chats.jsonl"
# what to bring / how to prepare: no signal of its own in features.signals
BRING = re.compile(r"带什么|要带|需要带|准备什么|要准备|空腹|带上什么|带身份证")


@dataclass
class Step:
    chat: str
    index: int
    role: str
    text: str
    before: float
    after: float
    kind: str  # "decisive" | "buying" | "ordinary"
    why: list[str] = field(default_factory=list)

    @property
    def delta(self) -> float:
        return self.after - self.before


def classify(role: str, analysis, flags_before: dict, flags_after: dict) -> tuple[str, list[str]]:
    sigs = analysis.signals
    why = []
    if role == "visitor" and analysis.entities.contact_kinds:
        why.append("contact given")
    if "refuses_contact" in sigs:
        why.append("contact refused")
    if analysis.entities.visit_time is not None or (
        flags_after.get("visit_time_agreed") and not flags_before.get("visit_time_agreed")
    ):
        why.append("visit time")
    if role == "visitor" and "negative" in sigs:
        why.append("visitor declines / leaves")
    if role == "consultant" and "closing" in sigs:
        why.append("consultant closes")
    if why:
        return "decisive", why
    if role == "visitor":
        buying = [s for s in ("asks_address", "asks_time") if s in sigs]
        if BRING.search(analysis.text):
            buying.append("what to bring")
        if buying:
            return "buying", buying
    return "ordinary", []


def play(model, path: Path = CHATS, target: str = "booked") -> list[Step]:
    """Every message of every chat in ``path``, with p(target) before and after it."""
    steps = []
    for conv in read_conversations(path):
        session, scores = model.open_chat(
            started_at=conv.started_at,
            visit=conv.visit,
            department=conv.department,
            project=conv.project,
            consultant_id=conv.consultant_id,
        )
        p = scores[target].probability
        for i, m in enumerate(conv.messages):
            before_flags = dict(session.state.flags)
            insight = model.on_message(session, m.role, m.text, m.at, suggest=False, budget_ms=None)
            q = insight.scores[target].probability
            kind, why = classify(m.role, insight.analysis, before_flags, session.state.flags)
            steps.append(Step(conv.conversation_id, i, m.role, m.text, p, q, kind, why))
            p = q
    return steps


def summary(steps: list[Step]) -> dict:
    ordinary = [s for s in steps if s.kind == "ordinary"]
    decisive = [s for s in steps if s.kind == "decisive"]
    buying = [s for s in steps if s.kind == "buying"]
    sw = np.abs([s.delta for s in ordinary]) if ordinary else np.zeros(1)
    dw = np.abs([s.delta for s in decisive]) if decisive else np.zeros(1)
    worst = max(ordinary, key=lambda s: abs(s.delta)) if ordinary else None
    return {
        "messages": len(steps),
        "ordinary": len(ordinary),
        "ordinary_max": float(sw.max()),
        "ordinary_p95": float(np.quantile(sw, 0.95)),
        "worst": worst,
        "decisive": len(decisive),
        "decisive_max": float(dw.max()),
        "buying": len(buying),
        "buying_lowered": [s for s in buying if s.delta < 0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", type=Path, default=[], help="a saved bundle (repeatable)")
    ap.add_argument("--train", type=int, default=0, help="also train a bundle on this many simulated chats")
    ap.add_argument("--chats", type=Path, default=CHATS)
    args = ap.parse_args()
    from yuyue.models.bundle import YuyueModel

    models = [(str(p), YuyueModel.load(p)) for p in args.model]
    if args.train or not models:
        from yuyue.data.io import write_jsonl
        from yuyue.data.simulator import iter_records
        from yuyue.training.train import train

        n = args.train or 3000
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "sim.jsonl"
            write_jsonl(data, iter_records(n, seed=1))
            trained = train(data, out_dir=Path(tmp) / "b", echo=lambda _s: None).model
            models.append((f"trained on {n} simulated chats", trained))
    for name, model in models:
        kinds = {k: getattr(s, "kind", "?") for k, s in model.scorers.items()}
        s = summary(play(model, args.chats))
        w = s["worst"]
        print(f"== {name}  (scorers {kinds})")
        print(
            f"  {s['messages']} messages: {s['ordinary']} ordinary, {s['decisive']} decisive, {s['buying']} buying"
        )
        print(f"  ordinary swing |dp(booked)|: max {s['ordinary_max']:.4f}  p95 {s['ordinary_p95']:.4f}")
        if w is not None:
            print(
                f"    largest: {w.chat} #{w.index} {w.role} {w.text[:40]!r}  {w.before:.3f} -> {w.after:.3f}"
            )
        print(f"  decisive swing max {s['decisive_max']:.4f}")
        print(f"  buying signals that lowered p(booked): {len(s['buying_lowered'])} of {s['buying']}")
        for b in s["buying_lowered"]:
            print(f"    {b.chat} #{b.index} {b.why} {b.text[:40]!r}  {b.before:.3f} -> {b.after:.3f}")


if __name__ == "__main__":
    main()
