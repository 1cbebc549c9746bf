"""What the challenger in the shadow costs per message (issue 18: at most +1 ms p50).

Run:
    .venv/bin/python bench/bench_shadow.py --model-dir DIR [--challenger-dir DIR2] [--chats 100] [--seed 5]

The chat service runs in process (SQLite in a temporary folder, in-process session cache, no HTTP).
Simulated chats are sent message by message twice, alternating chat by chat: once with no challenger,
once with the challenger set (``serving/shadow.py``), so both see the same load. The challenger is
``--challenger-dir``, else the champion's bundle loaded a second time (the same scorers: the cost of a
challenger of the champion's kind). Printed: the per-message time of ``ChatService.message`` (p50,
p90) with and without the challenger, the difference of the p50s, and the challenger's own scoring
time per message (``Shadow.timing``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from yuyue.config import Settings
from yuyue.data.io import read_conversations
from yuyue.data.simulator import generate_file
from yuyue.models.bundle import YuyueModel
from yuyue.serving.auth import Caller
from yuyue.serving.cache import MemoryCache
from yuyue.serving.db import create_all, make_engine
from yuyue.serving.service import ChatService, ModelHolder
from yuyue.serving.shadow import shadow_of
from yuyue.serving.state import warm_up
from yuyue.serving.store import EventStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True, type=Path)
    ap.add_argument("--challenger-dir", type=Path)
    ap.add_argument("--chats", type=int, default=100)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    champion = YuyueModel.load(args.model_dir)
    challenger = YuyueModel.load(args.challenger_dir or args.model_dir)
    warm_up(champion)
    warm_up(challenger)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chats.jsonl"
        generate_file(path, n=args.chats, seed=args.seed, workers=1)
        settings = Settings(var_dir=Path(tmp) / "var", model_poll_seconds=0)
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        create_all(engine)
        service = ChatService(settings, EventStore(engine), MemoryCache(), ModelHolder(champion, "champion"))
        shadow = shadow_of(service)
        caller = Caller("bench", "supervisor")
        times: dict[bool, list[float]] = {False: [], True: []}
        for i, conv in enumerate(read_conversations(path)):
            for on in (i % 2 == 0, i % 2 == 1):  # alternate which run goes first
                if on:
                    shadow.set(challenger, "challenger")
                else:
                    shadow.clear()
                cid = f"{conv.conversation_id}-{int(on)}"
                service.open(
                    caller,
                    conversation_id=cid,
                    started_at=conv.started_at,
                    visit=conv.visit,
                    hospital=conv.hospital,
                    department=conv.department,
                    project=conv.project,
                    consultant_id=conv.consultant_id,
                )
                for m in conv.messages:
                    t0 = time.perf_counter()
                    service.message(caller, cid, str(getattr(m.role, "value", m.role)), m.text, m.at)
                    times[on].append((time.perf_counter() - t0) * 1e3)
        engine.dispose()
    off, on = np.array(times[False]), np.array(times[True])
    print(f"messages: {len(off)} without, {len(on)} with the challenger ({args.chats} chats each)")
    print(f"without: p50 {np.percentile(off, 50):.3f} ms, p90 {np.percentile(off, 90):.3f} ms")
    print(f"with:    p50 {np.percentile(on, 50):.3f} ms, p90 {np.percentile(on, 90):.3f} ms")
    print(f"difference of the p50s: {np.percentile(on, 50) - np.percentile(off, 50):+.3f} ms")
    print(f"the challenger's own scoring per message: {shadow.timing()}")


if __name__ == "__main__":
    main()
