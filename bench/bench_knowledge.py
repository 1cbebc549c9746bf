"""Added latency of the hospital knowledge per visitor message (serving/knowledge.py).

Replays visitor messages of simulated chats through a bundle's reply suggester twice: without the
knowledge hook, and with it (the example knowledge in a SQLite store, cached as the server caches it).
Prints the hook's own time per message (mean, p50, p95) and the suggester's time both ways.

    .venv/bin/python bench/bench_knowledge.py --model-dir DIR --data FILE.jsonl [--messages 600]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from yuyue.data.io import read_conversations
from yuyue.models.bundle import YuyueModel
from yuyue.serving import knowledge as kb
from yuyue.serving.db import create_all, make_engine


def _contexts(path: Path, n: int) -> list[tuple[list[tuple[str, str]], dict]]:
    out = []
    for conv in read_conversations(path):
        msgs: list[tuple[str, str]] = []
        for m in conv.messages:
            msgs.append((str(m.role.value if hasattr(m.role, "value") else m.role), m.text))
            if msgs[-1][0] == "visitor":
                out.append((list(msgs[-12:]), {"department": conv.department, "project": conv.project}))
                if len(out) >= n:
                    return out
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--messages", type=int, default=600)
    args = ap.parse_args()
    model = YuyueModel.load(args.model_dir)
    sug = model.suggester
    assert sug is not None
    rows = _contexts(args.data, args.messages)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/k.db")
        create_all(engine)
        kb.KnowledgeStore(engine).write("default", kb.load_example(), "bench")
        book = kb.KnowledgeBook(engine, "default")
        at = datetime.now(kb.LOCAL_TZ)
        for msgs, facts in rows[:20]:  # warm up: guard classifier, caches
            sug.suggest(msgs, facts)
        plain = [_timed(lambda m=m, f=f: sug.suggest(m, f)) for m, f in rows]
        kb.attach(sug, book)
        hook = sug.knowledge
        with kb.message_time(at):
            own = [_timed(lambda m=m, f=f: hook.facts(f, m)) for m, f in rows]
            served = [_timed(lambda m=m, f=f: sug.suggest(m, f)) for m, f in rows]
        engine.dispose()
    print(f"{len(rows)} visitor messages, bundle {args.model_dir}")
    for name, xs in (("knowledge hook alone", own), ("suggest without", plain), ("suggest with", served)):
        xs = sorted(xs)
        p95 = xs[int(0.95 * (len(xs) - 1))]
        print(
            f"{name:22} mean {statistics.fmean(xs):7.3f} ms  p50 {statistics.median(xs):7.3f} ms  p95 {p95:7.3f} ms"
        )


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


if __name__ == "__main__":
    main()
