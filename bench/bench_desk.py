"""Work-list latency with many stored chats (issue 16: p99 <= 50 ms with 100,000 chats).

Seeds a fresh SQLite database (or ``--url``) with ``--chats`` conversations (rows written directly: the
projection the work list reads; no messages), ``--leads`` of them leaving contact without booking (a
lead task each, made by the desk's own sweep) and ``--appointments`` bookings for tomorrow (each with
its reminder task), then times the desk's read endpoints through the ASGI app (TestClient, one thread,
sequential): ``GET /v1/tasks`` (a supervisor's first page, a consultant's list), ``GET /v1/tasks/{id}``,
``GET /v1/appointments?date=``, ``GET /v1/patients?conversation_id=``. Prints p50 / p99 / max in ms.

    .venv/bin/python bench/bench_desk.py --chats 100000 --leads 2000 --appointments 500 --model-dir DIR
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Asia/Shanghai")


def seed(app, n_chats: int, n_leads: int, n_appts: int) -> None:
    import orjson

    from yuyue.serving.store import conversations

    state = app.state.yuyue
    engine = state.service.store.engine
    rng = random.Random(7)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    reasons = orjson.dumps(
        {
            "booked": [{"group": "contact", "text": "留了电话 +0.12", "delta": 0.12}],
            "arrived": [{"group": "timing", "text": "访问时段 −0.04", "delta": -0.04}],
        }
    ).decode()
    leads = set(rng.sample(range(n_chats), n_leads + n_appts))
    rows, lead_ids = [], []
    for i in range(n_chats):
        at = start + timedelta(seconds=i * 20)
        cid = f"b-{i:07d}"
        is_lead = i in leads
        rows.append(
            {
                "id": cid,
                "hospital": "h1",
                "department": rng.choice(["整形美容", "口腔科", "皮肤科"]),
                "project": "隆鼻",
                "consultant_id": f"c{rng.randrange(1, 21):02d}",
                "started_at": at,
                "last_at": at,
                "day": at.date().isoformat(),
                "n_messages": 8,
                "n_visitor": 4,
                "closed": True,
                "contact_seen": is_lead,
                "contact": None,
                "booked": None,
                "arrived": None,
                "p_booked": rng.random() * 0.6,
                "p_arrived": rng.random() * 0.3,
                "reasons": reasons,
                "model_version": "bench",
                "updated_at": at,
            }
        )
        if is_lead:
            lead_ids.append(cid)
        if len(rows) == 5000:
            with engine.begin() as cx:
                cx.execute(conversations.insert(), rows)
            rows = []
    if rows:
        with engine.begin() as cx:
            cx.execute(conversations.insert(), rows)
    desk = state.desk
    tomorrow = (datetime.now(TZ) + timedelta(days=1)).date()
    for j, cid in enumerate(lead_ids[:n_appts]):
        when = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 9, tzinfo=TZ) + timedelta(minutes=j)
        desk.create_appointment(desk._system(_caller()), cid, time=when, doctor=f"医生{j % 7}", checked=True)
    print(desk.sweep(leads=True, link_limit=0))


def _caller():
    from yuyue.serving.auth import Caller, Role

    return Caller("bench", Role.SUPERVISOR)


def timed(client, path, headers, n, params=None) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path, params=params, headers=headers)
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
    return out


def report(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    print(
        f"{name:52s} n={len(ms):4d}  p50 {statistics.median(ms):7.1f}  p99 {p99:7.1f}  max {ms[-1]:7.1f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chats", type=int, default=100_000)
    ap.add_argument("--leads", type=int, default=2000)
    ap.add_argument("--appointments", type=int, default=500)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--url", default=None, help="database URL (default: a fresh SQLite file)")
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from yuyue.config import Settings
    from yuyue.models.bundle import YuyueModel
    from yuyue.serving.app import create_app

    var = Path(tempfile.mkdtemp(prefix="bench-desk-"))
    settings = Settings(var_dir=var, database_url=args.url, model_poll_seconds=0, rate_per_minute=10_000_000)
    app = create_app(settings, YuyueModel.load(args.model_dir), "bench")
    keys = app.state.yuyue.keys
    sup = {"X-API-Key": keys.create("bench-sup", "supervisor")[1]}
    c05 = {"X-API-Key": keys.create("bench-c05", "consultant", consultant_id="c05")[1]}
    t0 = time.perf_counter()
    seed(app, args.chats, args.leads, args.appointments)
    print(
        f"seeded {args.chats} chats, {args.leads} leads, {args.appointments} appointments in "
        f"{time.perf_counter() - t0:.1f} s ({app.state.yuyue.service.store.engine.dialect.name})"
    )
    with TestClient(app) as client:
        first = client.get("/v1/tasks", params={"limit": 1}, headers=sup).json()
        task_id = first["items"][0]["id"]
        tomorrow = (datetime.now(TZ) + timedelta(days=1)).date().isoformat()
        n = args.requests
        timed(client, "/v1/tasks", sup, 5)  # warm-up
        report(
            f"GET /v1/tasks (supervisor, {first['total']} open, first 50)",
            timed(client, "/v1/tasks", sup, n, {"limit": 50}),
        )
        report(
            "GET /v1/tasks?kind=reminder&due=today",
            timed(client, "/v1/tasks", sup, n, {"kind": "reminder", "due": "today"}),
        )
        report("GET /v1/tasks (consultant c05)", timed(client, "/v1/tasks", c05, n))
        report("GET /v1/tasks/{id}", timed(client, f"/v1/tasks/{task_id}", sup, n))
        report(
            f"GET /v1/appointments?date={tomorrow}",
            timed(client, "/v1/appointments", sup, n, {"date": tomorrow}),
        )
        cid = f"b-{uuid.uuid4().int % args.chats:07d}"
        report(
            "GET /v1/patients?conversation_id=",
            timed(client, "/v1/patients", sup, n, {"conversation_id": cid}),
        )


if __name__ == "__main__":
    main()
