"""Back-scoring throughput (``yuyue score --from-store``, issue 20): N stored chats re-scored with and
without Ray.

Fills a fresh SQLite store with ``--chats`` simulated chats (``data/simulator``, seed ``--seed``), written
directly as the service stores them (a ``conversations`` row, left open, and one ``message`` event per
message with its role, text and time: what back-scoring reads), then times
:func:`serving.backscore.backscore` on all of them:

- ``plain``: one loop in this process;
- ``ray``: ``--ray`` as the command runs it, a local Ray with ``--workers`` CPUs started and shut down
  inside the timing;
- ``ray warm``: the same in a Ray already started (the per-run cost without Ray's start);

and checks that the Ray runs wrote the plain run's scores. Each run writes another version label, so
each re-scores every chat.

The model: ``--model DIR`` (a saved bundle), else one trained here on ``--train-chats`` simulated chats
(seed 101) and saved under ``--var`` for the next run.

    .venv/bin/python bench/bench_backscore.py --chats 2000 --workers 2 --var /tmp/backscore-bench
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def fill(engine, path: Path) -> int:
    """The simulated chats of ``path`` as open chats of the store (rows and message events)."""
    import orjson

    from yuyue.serving.monitoring import LOCAL_TZ
    from yuyue.serving.store import conversations, events

    now = datetime.now(UTC)
    rows, evs = [], []
    n = 0
    for line in path.read_bytes().splitlines():
        rec = orjson.loads(line)
        started = datetime.fromisoformat(rec["started_at"])
        msgs = rec.get("messages") or []
        cid = rec["conversation_id"]
        rows.append(
            {
                "id": cid,
                "hospital": rec.get("hospital"),
                "department": rec.get("department"),
                "project": rec.get("project"),
                "consultant_id": rec.get("consultant_id"),
                "started_at": started,
                "last_at": datetime.fromisoformat(msgs[-1]["at"]) if msgs else started,
                "day": started.astimezone(LOCAL_TZ).date().isoformat(),
                "visit": orjson.dumps(rec["visit"]).decode() if rec.get("visit") else None,
                "n_messages": len(msgs),
                "n_visitor": sum(m["role"] == "visitor" for m in msgs),
                "closed": False,
                "contact_seen": False,
                "model_version": "seed",
                "updated_at": now,
            }
        )
        for seq, m in enumerate(msgs):
            at = datetime.fromisoformat(m["at"])
            payload = {"role": m["role"], "text": m["text"], "at": at.isoformat()}
            evs.append(
                {
                    "conversation_id": cid,
                    "seq": seq,
                    "kind": "message",
                    "at": at,
                    "recorded_at": now,
                    "actor": "bench",
                    "payload": orjson.dumps(payload).decode(),
                }
            )
        n += 1
    with engine.begin() as cx:
        cx.execute(conversations.insert(), rows)
        cx.execute(events.insert(), evs)
    return n


def load_model(args, var: Path):
    from yuyue.models.bundle import YuyueModel

    if args.model:
        return YuyueModel.load(args.model)
    saved = var / f"model-{args.train_chats}"
    if saved.is_dir():
        return YuyueModel.load(saved)
    from yuyue.config import Settings
    from yuyue.data.simulator import generate_file
    from yuyue.training.train import train

    data = var / f"train-{args.train_chats}.jsonl"
    generate_file(data, n=args.train_chats, seed=101, workers=2)
    settings = Settings(var_dir=var / "train-var", hospital_name="杭州美悦医院")
    t0 = time.perf_counter()
    result = train(data, settings=settings, workers=2, echo=lambda _: None)
    print(f"trained a model on {args.train_chats} chats in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    result.model.save(saved)
    return result.model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chats", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=404)
    ap.add_argument("--workers", type=int, default=2, help="the local Ray's CPUs")
    ap.add_argument("--chunk", type=int, default=200)
    ap.add_argument("--model", help="a saved bundle (default: train one, kept under --var)")
    ap.add_argument("--train-chats", type=int, default=3000)
    ap.add_argument("--var", help="keep the data, model and store here (default: a temporary folder)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from yuyue.data.simulator import generate_file
    from yuyue.serving.backscore import backscore
    from yuyue.serving.db import make_engine, prepare_schema
    from yuyue.serving.store import conversations
    from yuyue.training.distributed import ray_session

    var = Path(args.var or tempfile.mkdtemp(prefix="backscore-bench-"))
    var.mkdir(parents=True, exist_ok=True)
    model = load_model(args, var)
    sim = var / f"sim-{args.chats}-{args.seed}.jsonl"
    if not sim.exists():
        generate_file(sim, n=args.chats, seed=args.seed, workers=2)
    db = var / f"store-{args.chats}-{args.seed}-{int(time.time())}.db"
    engine = make_engine(f"sqlite:///{db}")
    prepare_schema(engine)
    t0 = time.perf_counter()
    n = fill(engine, sim)
    fill_s = time.perf_counter() - t0

    import sqlalchemy as sa

    def scores() -> dict[str, tuple]:
        with engine.connect() as cx:
            c = conversations.c
            return {r[0]: r[1:] for r in cx.execute(sa.select(c.id, c.p_booked, c.p_arrived, c.reasons))}

    runs = []

    def timed(label: str, **kw) -> dict:
        out = backscore(engine, model, f"bench-{label.replace(' ', '-')}", chunk=args.chunk, **kw)
        assert out.rescored == n, out
        row = {
            "run": label,
            "chats": out.rescored,
            "seconds": out.seconds,
            "chats_per_s": round(out.rescored / out.seconds, 1),
        }
        runs.append(row)
        return row

    timed("plain")
    plain = scores()
    timed("ray", ray=True, workers=args.workers)
    same_ray = scores() == plain
    with ray_session(num_cpus=args.workers):
        timed("ray warm", ray=True, workers=args.workers)
    same_warm = scores() == plain
    result = {
        "chats": n,
        "messages": sum(len(json.loads(line).get("messages") or []) for line in sim.read_text().splitlines()),
        "fill_s": round(fill_s, 2),
        "workers": args.workers,
        "chunk": args.chunk,
        "cpus": os.cpu_count(),
        "ray_equals_plain": same_ray and same_warm,
        "runs": runs,
    }
    engine.dispose()
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{n} stored chats ({result['messages']} messages), SQLite, chunk {args.chunk}, "
        f"{args.workers} Ray CPUs on a {os.cpu_count()}-CPU machine; Ray wrote the plain run's scores: "
        f"{result['ray_equals_plain']}"
    )
    for r in runs:
        print(f"  {r['run']:<9} {r['seconds']:7.2f} s  {r['chats_per_s']:8.1f} chats/s")


if __name__ == "__main__":
    main()
