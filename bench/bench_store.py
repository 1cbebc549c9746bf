"""Cost of the event-store write per message (``EventStore.append_message``), SQLite and PostgreSQL.

Run: .venv/bin/python bench/bench_store.py [--n 2000] [--pg postgresql://postgres@127.0.0.1:5432/test]

Opens 50 chats in a throwaway store, then appends ``--n`` messages round-robin
(message event + 3 suggestions + the chat's projection, one transaction each, as
the per-message endpoint does) and prints wall and CPU time per write. SQLite
runs in a temporary directory; with ``--pg`` the tables go to that database and
the chats written are deleted at the end.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from yuyue.serving.db import create_all, make_engine
from yuyue.serving.store import EventStore, conversations, events, suggestions


def run(url: str, n: int) -> str:
    engine = make_engine(url)
    create_all(engine)
    store = EventStore(engine)
    now = datetime.now(UTC)
    cids = [f"bench-{uuid.uuid4().hex}" for _ in range(50)]
    try:
        for cid in cids:
            row = {
                "id": cid,
                "started_at": now,
                "last_at": now,
                "day": now.date().isoformat(),
                "n_messages": 0,
            }
            store.open(row, "bench", now)
        seqs = dict.fromkeys(cids, 0)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(n):
            cid = cids[i % len(cids)]
            at = now + timedelta(seconds=i)
            shown = [
                {"id": uuid.uuid4().hex, "rank": r, "text": "您好，建议您先来面诊" * 3, "source": "mined"}
                for r in range(3)
            ]
            message = {
                "role": "visitor",
                "text": "你好，请问隆鼻大概多少钱？" * 2,
                "at": at.isoformat(),
                "stage": None,
                "pii": [],
                "scores": {"booked": 0.1, "arrived": 0.05},
                "model_version": "bench",
                "suggestions": [s["id"] for s in shown],
            }
            update = {
                "last_at": at,
                "visitor": 1,
                "contact": False,
                "p_booked": 0.1,
                "p_arrived": 0.05,
                "reasons": "{}",
                "model_version": "bench",
            }
            store.append_message(cid, seqs[cid], message, shown, update, "bench")
            seqs[cid] += 1
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        with engine.begin() as cx:
            for table in (suggestions, events):
                cx.execute(table.delete().where(table.c.conversation_id.in_(cids)))
            cx.execute(conversations.delete().where(conversations.c.id.in_(cids)))
        engine.dispose()
    return f"{engine.dialect.name}: append_message {wall / n * 1e3:.3f} ms wall, {cpu / n * 1e3:.3f} ms CPU per message (n={n})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--pg", help="also run against this PostgreSQL URL")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(run(f"sqlite:///{Path(tmp) / 'bench.db'}", args.n))
    if args.pg:
        print(run(args.pg, args.n))


if __name__ == "__main__":
    main()
