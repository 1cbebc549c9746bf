"""Per-message feature-update time at message 5 and 200, and the serialised state size.

Run: .venv/bin/python bench/bench_features.py [--reps 2000]
Prints median and p99 microseconds of ConversationState.update at message 5 and
at message 200 of a long simulated chat, their ratio, and the state size.
"""

from __future__ import annotations

import argparse
import statistics
import time

from yuyue.data.contract import Conversation
from yuyue.data.simulator import iter_records
from yuyue.features.state import ConversationState


def _long_chat(min_messages: int) -> Conversation:
    """Concatenate simulated chats until the transcript is long enough (times kept increasing)."""
    msgs: list[dict] = []
    first = None
    for rec in iter_records(400, seed=11):
        first = first or rec
        msgs.extend(m for m in rec["messages"] if m["role"] != "system")
        if len(msgs) >= min_messages + 1:
            break
    base = Conversation.model_validate(first)
    start = base.started_at
    from datetime import timedelta

    fixed = [
        {"at": (start + timedelta(seconds=20 * i)).isoformat(), "role": m["role"], "text": m["text"]}
        for i, m in enumerate(msgs[: min_messages + 1])
    ]
    return base.model_copy(update={"messages": [base.messages[0].model_validate(m) for m in fixed]})


def time_update_at(conv: Conversation, index: int, probes: list, reps: int) -> list[float]:
    """Microseconds to fold one probe message into a state that already holds ``index`` messages.

    The same probe texts are used at every position, so a difference between
    positions comes from the state's size, not from the text.
    """
    state = ConversationState.for_conversation(conv)
    for m in conv.messages[:index]:
        state.update(m.role, m.text, m.at)
    blob = state.to_bytes()
    at = conv.messages[index - 1].at
    out = []
    for r in range(reps):
        msg = probes[r % len(probes)]
        s = ConversationState.from_bytes(blob)
        t0 = time.perf_counter()
        s.update(msg.role, msg.text, at)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if q < 100 else max(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args()
    conv = _long_chat(200)
    probes = conv.messages[1:11]
    rows = {}
    for label, idx in (("message 5", 5), ("message 200", 200)):
        time_update_at(conv, idx, probes, 200)  # warm-up
        times = time_update_at(conv, idx, probes, args.reps)
        rows[label] = (statistics.median(times), _p(times, 99))
        print(f"{label:>12}: median {rows[label][0]:7.1f} us   p99 {rows[label][1]:7.1f} us")
    print(f"ratio 200/5 (median): {rows['message 200'][0] / rows['message 5'][0]:.2f}")
    state = ConversationState.for_conversation(conv)
    for m in conv.messages:
        state.update(m.role, m.text, m.at)
    print(f"serialised state after {len(conv.messages)} messages: {len(state.to_bytes())} bytes")
    state5 = ConversationState.for_conversation(conv)
    for m in conv.messages[:5]:
        state5.update(m.role, m.text, m.at)
    print(f"serialised state after 5 messages: {len(state5.to_bytes())} bytes")


if __name__ == "__main__":
    main()
