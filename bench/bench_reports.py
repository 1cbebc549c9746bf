"""Desk report latency with many stored chats (issue 17: a report over 100,000 chats in <= 1 s).

Seeds a fresh SQLite database (or ``--url``) with ``--chats`` conversations written directly (the rows
bench_desk.py writes, plus what the reports read: the ``open`` event with its open-time scores,
``--messages`` message events per chat alternating visitor / consultant with realistic payloads, three
suggestions per visitor message, some with feedback), builds their summaries as the migration does
(``report_summary.rebuild``: timed), then, in a fresh process, times the report endpoints through the
ASGI app (TestClient, sequential): ``GET /v1/reports/consultants`` (period month and day) and
``GET /v1/reports/sources`` (by engine and by paid), the first request of that process apart, and the
same reports called in process (``consultant_report`` / ``source_report``, no HTTP).

``--var DIR`` keeps the store there (SQLite) and ``--reuse`` times a store already seeded with
``--chats`` chats (SQLite in ``--var``, or ``--url``), upgrading its schema first when it is behind.

    .venv/bin/python bench/bench_reports.py --chats 100000 --messages 10 --var /tmp/reports-100k
    .venv/bin/python bench/bench_reports.py --chats 100000 --var /tmp/reports-100k --reuse
    .venv/bin/python bench/bench_reports.py --chats 100000 --url postgresql://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

VISITOR_TEXTS = (
    "隆鼻多少钱",
    "做双眼皮疼不疼",
    "手术安全吗，有没有风险",
    "恢复期要多久",
    "效果能保持几年",
    "你们医院在哪里",
    "我想了解一下",
    "好的谢谢",
    "我电话13812345678",
    "明天下午可以去吗",
)
CONSULTANT_TEXTS = (
    "您好，请问有什么可以帮您？",
    "价格要看具体方案，面诊后医生会给您报价",
    "手术由经验丰富的医生操作，术前会做全面检查",
    "一般一周左右可以消肿",
    "我们地址在市中心，地铁可以到",
    "您方便留个电话吗？",
    "好的，给您预约明天下午两点",
)


def seed(engine, n_chats: int, n_messages: int, start: datetime) -> None:
    import orjson

    from yuyue.serving.store import conversations, events, suggestions

    rng = random.Random(7)
    allowed = {"allowed": True, "rules": []}
    flagged = {
        "allowed": False,
        "rules": [{"id": "guarantee", "category": "效果承诺", "citation": "广告法", "source": "rule"}],
    }
    rows, evs, sugs = [], [], []

    def flush() -> None:
        with engine.begin() as cx:
            if rows:
                cx.execute(conversations.insert(), rows)
            if evs:
                cx.execute(events.insert(), evs)
            if sugs:
                cx.execute(suggestions.insert(), sugs)
        rows.clear(), evs.clear(), sugs.clear()

    for i in range(n_chats):
        at = start + timedelta(seconds=i * 20)
        cid = f"r-{i:07d}"
        cons = f"c{rng.randrange(1, 21):02d}"
        p_b, p_a = rng.random() * 0.6, rng.random() * 0.3
        booked = rng.random() < p_b
        arrived = booked and rng.random() < 0.6
        url = "https://m.example.com/longbi/" + ("?bdjj=1" if rng.random() < 0.5 else "")
        visit = orjson.dumps({"engine": "baidu", "landing_url": url}).decode()
        t = at
        n_v = 0
        for seq in range(n_messages):
            role = "visitor" if seq % 2 == 0 else "consultant"
            t = t + timedelta(seconds=rng.randrange(5, 90))
            payload = {
                "role": role,
                "text": rng.choice(VISITOR_TEXTS if role == "visitor" else CONSULTANT_TEXTS),
                "at": t.isoformat(),
                "stage": None,
                "pii": [],
                "scores": {"booked": p_b, "arrived": p_a, "contact": 0.3},
                "model_version": "bench",
                "suggestions": [],
            }
            if role == "visitor":
                n_v += 1
                ids = [f"{cid}-{seq}-{k}" for k in range(3)]
                payload["suggestions"] = ids
                for k, sid in enumerate(ids):
                    fb = rng.choice((None, None, "used", "edited", "dismissed")) if k == 0 else None
                    sugs.append(
                        {
                            "id": sid,
                            "conversation_id": cid,
                            "seq": seq,
                            "rank": k,
                            "text": "建议回复",
                            "source": "pool",
                            "reply_id": None,
                            "created_at": t,
                            "feedback": fb,
                        }
                    )
            else:
                payload["compliance"] = flagged if rng.random() < 0.02 else allowed
            evs.append(
                {
                    "conversation_id": cid,
                    "seq": seq,
                    "kind": "message",
                    "at": t,
                    "recorded_at": t,
                    "actor": "bench",
                    "payload": orjson.dumps(payload).decode(),
                }
            )
        evs.append(
            {
                "conversation_id": cid,
                "seq": None,
                "kind": "open",
                "at": at,
                "recorded_at": at,
                "actor": "bench",
                "payload": orjson.dumps({"consultant_id": cons, "p_booked": p_b, "p_arrived": p_a}).decode(),
            }
        )
        rows.append(
            {
                "id": cid,
                "hospital": "h1",
                "department": rng.choice(["整形美容", "口腔科", "皮肤科"]),
                "project": "隆鼻",
                "consultant_id": cons,
                "started_at": at,
                "last_at": t,
                "day": (at + timedelta(hours=8)).date().isoformat(),
                "visit": visit,
                "engine": rng.choice(["baidu", "sogou", "360", "shenma"]),
                "keyword_category": rng.choice(["project", "brand", "price", "symptom"]),
                "landing_page": rng.choice(["project", "home", "case"]),
                "region": rng.choice(["杭州市", "宁波市", "上海市"]),
                "n_messages": n_messages,
                "n_visitor": n_v,
                "closed": True,
                "contact_seen": rng.random() < 0.3,
                "contact": None,
                "booked": booked,
                "arrived": arrived,
                "p_booked": p_b,
                "p_arrived": p_a,
                "reasons": "{}",
                "model_version": "bench",
                "updated_at": t,
            }
        )
        if len(rows) == 2000:
            flush()
    flush()


def timed(client, path, headers, n, params) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path, params=params, headers=headers)
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
    return out


def report(name: str, ms: list[float], cpu: list[float] | None = None) -> None:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    print(
        f"{name:58s} n={len(ms):3d}  p50 {statistics.median(ms):7.1f}  p95 {p95:7.1f}  max {ms[-1]:7.1f} ms"
        + (f"  (CPU p50 {statistics.median(cpu):7.1f} ms)" if cpu else "")
    )


def timed_calls(fn, n: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of ``n`` calls (the CPU time of this process: on a shared machine the
    wall time also counts the waits for a core)."""
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return wall, cpu


PATHS = (
    ("/v1/reports/consultants", {"period": "month"}),
    ("/v1/reports/consultants", {"period": "day"}),
    ("/v1/reports/sources", {"by": "engine"}),
    ("/v1/reports/sources", {"by": "paid"}),
)


def _app(var: Path, url: str | None, key: str = "bench-sup"):
    from yuyue.config import Settings
    from yuyue.serving.app import create_app

    settings = Settings(var_dir=var, database_url=url, model_poll_seconds=0, rate_per_minute=10_000_000)
    app = create_app(settings, None, "bench")
    return app, {"X-API-Key": app.state.yuyue.keys.create(key, "supervisor")[1]}


def measure(var: Path, url: str | None, span: dict[str, str], n: int) -> None:
    """The timings, in this (fresh) process: its first report apart."""
    from fastapi.testclient import TestClient

    from yuyue.serving.report_summary import stale

    app, sup = _app(var, url, f"bench-sup-{os.getpid()}")
    with app.state.yuyue.service.store.engine.connect() as cx:
        print("summaries missing or behind:", len(stale(cx, [])))
    with TestClient(app) as client:
        for i, (path, params) in enumerate(PATHS):
            label = f"GET {path}?{'&'.join(f'{k}={v}' for k, v in params.items())}"
            if i == 0:
                report(label + " (first of the process)", timed(client, path, sup, 1, {**span, **params}))
            report(label, timed(client, path, sup, n, {**span, **params}))
        total = client.get("/v1/reports/consultants", params={**span, "period": "month"}, headers=sup).json()
        print("total chats", total["total"]["chats"], "concern chats", total["total"]["concern_chats"])
    from datetime import date

    from yuyue.serving.reports import DayRange, consultant_report, source_report
    from yuyue.serving.store import Filters

    store = app.state.yuyue.service.store
    days = DayRange(date.fromisoformat(span["from"]), date.fromisoformat(span["to"]))
    for path, params in PATHS:
        label = f"in process {path.rsplit('/', 1)[1]}({', '.join(f'{k}={v}' for k, v in params.items())})"
        if "period" in params:
            report(
                label,
                *timed_calls(lambda p=params: consultant_report(store, days, p["period"], Filters()), n),
            )
        else:
            report(label, *timed_calls(lambda p=params: source_report(store, days, p["by"], Filters()), n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chats", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=10)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--url", default=None, help="database URL (default: a fresh SQLite file)")
    ap.add_argument("--var", default=None, help="the var folder (SQLite store; default: a fresh one)")
    ap.add_argument("--reuse", action="store_true", help="time the store already seeded (no seeding)")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # the child: VAR_DIR FROM TO
    args = ap.parse_args()
    if args.measure:
        var, first, last = args.measure.split(",")
        measure(Path(var), args.url, {"from": first, "to": last}, args.requests)
        return

    import sqlalchemy as sa

    from yuyue.serving.report_summary import rebuild
    from yuyue.serving.store import conversations

    var = Path(args.var) if args.var else Path(tempfile.mkdtemp(prefix="bench-reports-"))
    var.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 9, 1, tzinfo=UTC)
    last = (start + timedelta(seconds=args.chats * 20, hours=8)).date()
    first = start.date()
    cmd = [sys.executable, __file__, "--requests", str(args.requests), "--measure", f"{var},{first},{last}"]
    cmd += ["--url", args.url] if args.url else []
    if args.reuse:
        from yuyue.serving.db import make_engine, upgrade_schema

        engine = make_engine(args.url or f"sqlite:///{var / 'yuyue.db'}")
        print("\n".join(upgrade_schema(engine)))
        with engine.connect() as cx:
            held = cx.execute(sa.select(sa.func.count()).select_from(conversations)).scalar_one()
        engine.dispose()
        if held != args.chats:
            sys.exit(f"--reuse: the store holds {held} chats, not --chats {args.chats}")
        subprocess.run(cmd, check=True)
        return
    app, _ = _app(var, args.url)
    engine = app.state.yuyue.service.store.engine
    t0 = time.perf_counter()
    seed(engine, args.chats, args.messages, start)
    print(
        f"seeded {args.chats} chats x {args.messages} messages ({first} to {last}) in "
        f"{time.perf_counter() - t0:.1f} s ({engine.dialect.name})"
    )
    t0 = time.perf_counter()
    with engine.begin() as cx:
        ids = list(cx.execute(sa.select(conversations.c.id)).scalars())
        rebuild(cx, ids, batch=1000)
    spent = time.perf_counter() - t0
    print(
        f"summaries built from the events (what migration 0008 does) in {spent:.1f} s ({len(ids) / spent:.0f} chats/s)"
    )
    if engine.dialect.name == "postgresql":  # the rebuild's updates left dead rows: what autovacuum does
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as cx:
            cx.exec_driver_sql("VACUUM ANALYZE chat_summaries")
    engine.dispose()
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
