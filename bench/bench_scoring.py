"""In-process time to score one message: features + booked and arrived scores + reasons.

Run: .venv/bin/python bench/bench_scoring.py [--model champion|VERSION|DIR] [--n 2000]
Replays simulated chats the model did not train on through YuyueModel.on_message
and prints median and p99 of (a) features + both scores with reasons and (b) the
whole step including stage, hints and reply suggestions.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from yuyue.config import get_settings
from yuyue.data.contract import Conversation
from yuyue.data.simulator import iter_records
from yuyue.models.bundle import YuyueModel


def _load(ref: str) -> YuyueModel:
    if Path(ref).is_dir():
        return YuyueModel.load(ref)
    from yuyue.training import registry

    return registry.load(ref, get_settings())[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="champion")
    ap.add_argument("--n", type=int, default=2000, help="messages to time")
    args = ap.parse_args()
    model = _load(args.model)
    core, whole = [], []
    for rec in iter_records(400, seed=424242):
        conv = Conversation.model_validate(rec).without_truth()
        session, _ = model.open_chat(
            started_at=conv.started_at,
            visit=conv.visit,
            department=conv.department,
            project=conv.project,
            consultant_id=conv.consultant_id,
        )
        for m in conv.messages:
            t0 = time.perf_counter()
            ins = model.on_message(session, m.role, m.text, m.at)
            whole.append((time.perf_counter() - t0) * 1e3)
            core.append(ins.timings_ms["features"] + ins.timings_ms["scores"])
        if len(core) >= args.n:
            break
    warm = 50
    core, whole = core[warm:], whole[warm:]
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1]  # noqa: E731
    print(f"messages timed: {len(core)}")
    print(
        f"features + both scores + reasons: median {statistics.median(core):.2f} ms  p99 {q(core, 99):.2f} ms"
    )
    print(
        f"whole step (+ stage, hints, replies): median {statistics.median(whole):.2f} ms  "
        f"mean {statistics.fmean(whole):.2f} ms  p99 {q(whole, 99):.2f} ms"
    )


if __name__ == "__main__":
    main()
