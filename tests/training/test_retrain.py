"""Training from the event store and ``yuyue retrain`` (issue 18), on a store filled through the service.

Simulated chats are replayed through the HTTP API (their first messages, to keep the test short) into
one SQLite store; a copy of it gets the same outcomes with those of all but the held-out chats (the
latest half: 300 chats hold out max(200, 20 %) capped at 50 %) shuffled among them (a store that teaches
nothing, whose latest chats still hold the truth), another copy all outcomes shuffled. Then:

1. ``yuyue train --from-store --since`` on the all-shuffled store: the first version, champion as the
   first (it learned nothing);
   it records the data it saw (source, since, chats, time range, hash);
2. ``yuyue retrain`` on the real store: a better candidate, promoted through the gate;
3. ``yuyue retrain`` on the shuffled store again: a worse candidate, refused (exit 0), champion kept;
4. ``yuyue retrain --holdout-days 1``: too few held-out chats to decide: ``undecided``, exit 4, kept.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.training.test_promote_gate import fast_scorers  # noqa: F401  (a fixture)
from yuyue.data.io import read_conversations
from yuyue.training import registry
from yuyue.training.retrain import (
    DECIDE_MIN_CLASS,
    DECIDE_MIN_LABELLED,
    HOLDOUT_MIN_CHATS,
    UNDECIDED_EXIT,
    split_holdout,
)

runner = CliRunner()
N_CHATS = 300
FIRST_MESSAGES = 6


def _select(src: Path, dst: Path) -> list[dict]:
    """Chats in time order, every other one booked (more positives per chat replayed)."""
    booked, other = [], []
    for line in src.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        (booked if (rec.get("outcome") or {}).get("booked") else other).append(rec)
    half = N_CHATS // 2
    chosen = booked[:half] + other[: N_CHATS - min(half, len(booked))]
    chosen.sort(key=lambda r: (r["started_at"], r["conversation_id"]))
    for r in chosen:
        r["messages"] = r["messages"][:FIRST_MESSAGES]
    dst.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen), encoding="utf-8")
    return chosen


def _app(settings, model, db: Path):
    from fastapi.testclient import TestClient

    from yuyue.serving.app import create_app

    # a replay posts faster than a desk: no per-key rate limit in the way
    update = {"database_url": f"sqlite:///{db}", "rate_per_minute": 1_000_000}
    app = create_app(settings.model_copy(update=update), model, "t1")
    key = app.state.yuyue.keys.create(f"boss-{db.stem}-{time.monotonic_ns()}", "supervisor")[1]
    client = TestClient(app)
    client.headers["X-API-Key"] = key
    return client


def _post(api, path: str, body: dict) -> None:
    r = api.post(path, json=body)
    assert r.status_code in (200, 201), r.text


def _outcome(rec: dict) -> dict:
    o = rec.get("outcome") or {}
    body = {"close": True}
    for k in ("contact", "booked", "booked_at"):
        if o.get(k) is not None:
            body[k] = o[k]
    if o.get("booked") and o.get("arrived") is not None:
        body["arrived"] = o["arrived"]
        if o.get("arrived_at"):
            body["arrived_at"] = o["arrived_at"]
    return body


@pytest.fixture(scope="module")
def stores(tmp_path_factory, test_settings, fast_scorers):  # noqa: F811
    """(settings, real store URL, shuffled store URL, the replayed records, all-shuffled store URL)."""
    from yuyue.data.simulator import generate_file
    from yuyue.training.train import train

    d = tmp_path_factory.mktemp("retrain")
    settings = test_settings.model_copy(
        update={
            "var_dir": d / "var",
            "mlflow_tracking_uri": f"sqlite:///{d / 'mlflow.db'}",
            "model_poll_seconds": 0,
        }
    )
    generate_file(d / "sim.jsonl", n=1100, seed=41, workers=2)
    records = _select(d / "sim.jsonl", d / "chosen.jsonl")
    # a model to serve while the chats are replayed (any will do: the store keeps the messages)
    served = train(d / "chosen.jsonl", settings=settings, out_dir=d / "served", echo=lambda _: None).model
    real, shuffled, scrambled = d / "real.db", d / "shuffled.db", d / "scrambled.db"
    with _app(settings, served, real) as api:
        for rec in records:
            _post(
                api,
                "/v1/conversations",
                {
                    k: rec[k]
                    for k in (
                        "conversation_id",
                        "started_at",
                        "hospital",
                        "department",
                        "project",
                        "consultant_id",
                        "visit",
                    )
                    if rec.get(k) is not None
                },
            )
            for m in rec["messages"]:
                _post(
                    api,
                    f"/v1/conversations/{rec['conversation_id']}/messages",
                    {"role": m["role"], "text": m["text"], "at": m["at"]},
                )
    for copy in (shuffled, scrambled):
        with sqlite3.connect(real) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
    fitting = len(records) - len(records) // 2  # the held-out chats of a retrain keep their truth
    outcomes = [r.get("outcome") for r in records[:fitting]]
    random.Random(0).shuffle(outcomes)
    noisy = [{**r, "outcome": o} for r, o in zip(records[:fitting], outcomes, strict=True)] + records[
        fitting:
    ]
    every = [r.get("outcome") for r in records]
    random.Random(0).shuffle(every)
    scrambled_recs = [{**r, "outcome": o} for r, o in zip(records, every, strict=True)]
    for db, recs in ((real, records), (shuffled, noisy), (scrambled, scrambled_recs)):
        with _app(settings, served, db) as api:
            for rec in recs:
                _post(api, f"/v1/conversations/{rec['conversation_id']}/outcome", _outcome(rec))
    return settings, f"sqlite:///{real}", f"sqlite:///{shuffled}", records, f"sqlite:///{scrambled}"


@pytest.fixture
def cli_env(stores, monkeypatch):
    from yuyue.config import get_settings

    settings = stores[0]
    monkeypatch.setenv("YUYUE_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("YUYUE_MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("YUYUE_HOSPITAL_NAME", settings.hospital_name)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def test_train_from_store_on_ray_reads_the_store_by_ranges_of_start_times(stores, cli_env):
    """``train --from-store --ray``: Ray tasks read the store itself, one per range of start times (no
    export file; local Ray, one CPU)."""
    from yuyue.cli.main import app

    pytest.importorskip("ray")
    settings, _, _, _, scrambled = stores
    res = runner.invoke(
        app, ["train", "--from-store", "--url", scrambled, "--ray", "--workers", "1", "--no-register"]
    )
    assert res.exit_code == 0, res.output
    assert "exported" not in res.output  # no export file
    assert "the event store's chats: 1 shards by start time; Ray at a local instance" in res.output
    assert re.search(r"^Ray: 1 node\(s\) ran \d+ shard tasks$", res.output, re.MULTILINE), res.output
    assert registry.list_versions(settings) == []  # --no-register: nothing registered


def test_the_store_read_by_ranges_is_its_export_in_order(stores, tmp_path):
    """Ranges of start times cover every exported chat once, in the export's order; ``since`` starts the
    first range; a Ray scan of the ranges is the scan of the exported file."""
    from datetime import datetime

    import orjson

    from yuyue.training.dataset import scan
    from yuyue.training.distributed import RayBackend, ray_session, read_shard, store_shards
    from yuyue.training.retrain import export_store
    from yuyue.training.scorers import UnusableDataError

    settings, real = stores[0], stores[1]
    path, _ = export_store(settings, url=real, out_dir=tmp_path)
    exported = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    shards = store_shards(real, chats_per_shard=64)
    assert len(shards) >= 4 and shards[0].since is None and shards[-1].until is None
    assert all(a.until == b.since for a, b in zip(shards, shards[1:], strict=False))
    ranged = [c for s in shards for c in read_shard(s)]
    assert [c.conversation_id for c in ranged] == [r["conversation_id"] for r in exported]
    assert [[(m.role, m.text) for m in c.messages] for c in ranged] == [
        [(m["role"], m["text"]) for m in r["messages"]] for r in exported
    ]

    mid = shards[2].since
    later = store_shards(real, since=mid, chats_per_shard=64)
    assert later[0].since == mid
    expect = [r["conversation_id"] for r in exported if datetime.fromisoformat(r["started_at"]) >= mid]
    assert [c.conversation_id for s in later for c in read_shard(s)] == expect

    pytest.importorskip("ray")
    with ray_session(num_cpus=1):
        on_ray = RayBackend(shards).scan(Path("event-store"))
    from_file = scan(path)
    assert [(m.conversation_id, m.booked, m.arrived, m.started_ts) for m in on_ray.metas] == [
        (m.conversation_id, m.booked, m.arrived, m.started_ts) for m in from_file.metas
    ]
    with pytest.raises(UnusableDataError, match="the event store has no chats"):
        store_shards(f"sqlite:///{tmp_path / 'empty.db'}")


def test_the_store_read_by_ranges_on_postgresql_is_its_export(stores, pg_url, tmp_path):
    """The same ranges on PostgreSQL (the configured option a cluster's nodes share): the SQLite store's
    tables copied into a fresh PostgreSQL database read back, range by range, as the SQLite store's
    export, and a Ray scan of them is that file's scan."""
    from datetime import datetime

    import orjson
    import sqlalchemy as sa

    from tests.serving.conftest import _drop_all_tables
    from yuyue.serving.db import make_engine, metadata, prepare_schema
    from yuyue.training.dataset import scan
    from yuyue.training.distributed import RayBackend, ray_session, read_shard, store_shards
    from yuyue.training.retrain import export_store

    settings, real = stores[0], stores[1]
    _drop_all_tables(pg_url)  # the session's database: start from no tables, whatever ran before
    src, dst = make_engine(real), make_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        prepare_schema(dst)
        with src.connect() as a, dst.begin() as b:
            for table in metadata.sorted_tables:
                rows = [dict(r) for r in a.execute(sa.select(table)).mappings()]
                if rows:
                    b.execute(table.insert(), rows)
        path, _ = export_store(settings, url=real, out_dir=tmp_path)
        exported = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        shards = store_shards(pg_url, chats_per_shard=64)
        assert len(shards) >= 4 and all(a.until == b.since for a, b in zip(shards, shards[1:], strict=False))
        ranged = [c for s in shards for c in read_shard(s)]
        assert [c.conversation_id for c in ranged] == [r["conversation_id"] for r in exported]
        assert [c.started_at for c in ranged] == [datetime.fromisoformat(r["started_at"]) for r in exported]
        assert [[(m.role, m.text) for m in c.messages] for c in ranged] == [
            [(m["role"], m["text"]) for m in r["messages"]] for r in exported
        ]
        pytest.importorskip("ray")
        with ray_session(num_cpus=1):
            on_ray = RayBackend(shards).scan(Path("event-store"))
        assert [(m.conversation_id, m.booked, m.arrived) for m in on_ray.metas] == [
            (m.conversation_id, m.booked, m.arrived) for m in scan(path).metas
        ]
    finally:
        src.dispose()
        dst.dispose()
        _drop_all_tables(pg_url)


def test_train_from_store_then_retrain_promotes_better_refuses_worse(stores, cli_env, tmp_path):
    from yuyue.cli.main import app

    settings, real, shuffled, records, scrambled = stores
    # 1. from the store, since the first chat's day: every chat, with the outcomes recorded through the API
    since = records[0]["started_at"][:10]
    res = runner.invoke(app, ["train", "--from-store", "--url", scrambled, "--since", since])
    assert res.exit_code == 0, res.output
    assert (
        f"exported {N_CHATS} chats from the store" in res.output and "version 1 is now champion" in res.output
    )
    tags = registry.version_tags("1", settings)
    assert tags["data.source"] == "store" and tags["data.since"].startswith(since)
    assert tags["data.n_chats"] == str(N_CHATS) and int(tags["data.n_labelled"]) == N_CHATS
    assert tags["data.first_started_at"] < tags["data.last_started_at"] and len(tags["data.sha256"]) == 64
    exported = Path(tags["data.path"])
    assert exported.name == f"store-{tags['data.sha256'][:12]}.jsonl"
    convs = list(read_conversations(exported))
    assert {c.conversation_id for c in convs} == {r["conversation_id"] for r in records}
    assert all(0 < len(c.messages) <= FIRST_MESSAGES for c in convs)
    assert sum(bool(c.outcome and c.outcome.booked) for c in convs) == sum(
        bool((r.get("outcome") or {}).get("booked")) for r in records
    )
    # a day after the last chat: nothing to train on, said so
    res = runner.invoke(app, ["train", "--from-store", "--url", scrambled, "--since", "2099-01-01"])
    assert res.exit_code == 1 and "no chats started since 2099-01-01" in res.output

    # 2. the real store: a better candidate passes the gate on the latest chats, held out by time
    verdict, report = tmp_path / "v2.json", tmp_path / "v2.html"
    res = runner.invoke(app, ["retrain", "--url", real, "--json-out", str(verdict), "--report", str(report)])
    assert res.exit_code == 0, res.output
    out = json.loads(verdict.read_text(encoding="utf-8"))
    assert out["decision"] == "promoted" and out["candidate"] == "2" and out["champion"] == "2", out[
        "message"
    ]
    assert out["champion_before"] == "1" and out["held_out"].startswith(f"{N_CHATS // 2} chats")
    held = out["held_out_set"]
    assert held["chats"] == N_CHATS // 2 and held["fit_chats"] == N_CHATS - N_CHATS // 2 and held["capped"]
    assert held["too_small"] is None and held["with_booking_outcome"] == N_CHATS // 2
    assert held["first_started_at"] == records[N_CHATS // 2]["started_at"]
    assert out["comparison"]["metrics"]["booked.auc"]["n"] == N_CHATS // 2
    assert out["data"]["data.held_out_chats"] == str(N_CHATS // 2)
    fitted = {c.conversation_id for c in read_conversations(Path(out["data"]["data.path"]))}
    assert fitted == {r["conversation_id"] for r in records[: N_CHATS // 2]}
    assert out["comparison"]["metrics"]["booked.auc"]["delta"] > 0.01
    # v1 fitted on the whole store (outcomes scrambled): the held-out chats it may have seen are counted
    from datetime import datetime

    fit_until = datetime.fromisoformat(registry.version_tags("1", settings)["data.fit_until"])
    seen = sum(datetime.fromisoformat(r["started_at"]) <= fit_until for r in records[N_CHATS // 2 :])
    assert out["champion_may_have_seen"] == seen > 0 and out["data"]["data.source"] == "store"
    assert registry.alias_version(settings=settings) == "2"
    assert registry.version_tags("2", settings)["promotion"] == "gate"
    assert "passed the gate" in res.output and "Δ" in report.read_text(encoding="utf-8")

    # 3. the shuffled store again: the worse candidate is refused, exit 0, the champion stays
    verdict = tmp_path / "v3.json"
    res = runner.invoke(app, ["retrain", "--url", shuffled, "--json-out", str(verdict)])
    assert res.exit_code == 0, res.output
    out = json.loads(verdict.read_text(encoding="utf-8"))
    assert out["decision"] == "refused" and not out["promoted"] and out["champion"] == "2", out
    assert "booked AUC" in out["gate"]["reasons"][0] and "refused" in res.output
    assert out["comparison"]["metrics"]["booked.auc"]["delta"] < -0.01
    assert registry.alias_version(settings=settings) == "2"
    assert registry.version_tags("3", settings)["gate.passed"] == "false"
    assert out["timings"]["total_s"] > 0

    # 4. the last day alone: too few held-out chats for the gate; nothing promoted, exit 4, said plainly
    verdict = tmp_path / "v4.json"
    res = runner.invoke(app, ["retrain", "--url", real, "--holdout-days", "1", "--json-out", str(verdict)])
    assert res.exit_code == UNDECIDED_EXIT, res.output
    out = json.loads(verdict.read_text(encoding="utf-8"))
    assert out["decision"] == "undecided" and not out["promoted"] and out["champion"] == "2", out
    assert out["held_out_set"]["chats"] < DECIDE_MIN_LABELLED
    assert "too small for the gate to decide" in out["message"] and out["undecided_reason"]
    assert registry.alias_version(settings=settings) == "2"
    assert registry.version_tags("4", settings)["gate.passed"] == "undecided"


def test_since_must_be_a_date():
    from yuyue.cli.main import app

    res = runner.invoke(app, ["retrain", "--since", "last tuesday"])
    assert res.exit_code == 2 and "not a date or an ISO 8601 time" in res.output
    res = runner.invoke(app, ["train", "--since", "2025-01-01", "--data", "x.jsonl"])
    assert res.exit_code == 2 and "--since goes with --from-store" in res.output


def _export(path: Path, n: int, *, booked_every: int = 2, hours_apart: float = 6.0) -> list[str]:
    """``n`` chats ``hours_apart`` apart, written in a shuffled order; returns their ids in time order."""
    from datetime import datetime, timedelta

    start = datetime.fromisoformat("2025-01-01T09:00:00+08:00")
    recs = [
        {
            "conversation_id": f"c{i:05d}",
            "started_at": (start + timedelta(hours=hours_apart * i)).isoformat(),
            "messages": [],
            **({"outcome": {"booked": i % booked_every == 0}} if i % 7 else {}),
        }
        for i in range(n)
    ]
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    path.write_text("".join(json.dumps(r) + "\n" for r in shuffled) + "not json\n", encoding="utf-8")
    return [r["conversation_id"] for r in recs]


def _ids(path: Path) -> list[str]:
    return [
        json.loads(x)["conversation_id"] for x in path.read_text(encoding="utf-8").splitlines() if x[0] == "{"
    ]


@pytest.mark.parametrize(
    ("n", "held"),
    [(300, 150), (400, HOLDOUT_MIN_CHATS), (1000, HOLDOUT_MIN_CHATS), (2000, 400), (40, 20)],
)
def test_held_out_set_is_200_or_20_percent_capped_at_half(tmp_path, n, held):
    ids = _export(tmp_path / "store-x.jsonl", n)
    cut = split_holdout(tmp_path / "store-x.jsonl")
    assert (cut.n_held_out, cut.n_fit) == (held, n - held + 1)  # the unparseable line goes to training
    assert sorted(_ids(cut.held_out)) == ids[n - held :]  # the latest chats by start time
    assert sorted(_ids(cut.fit)) == ids[: n - held]
    assert cut.capped == (held == n // 2 and held < HOLDOUT_MIN_CHATS)
    assert cut.labelled == sum(1 for i in range(n - held, n) if i % 7)
    assert cut.booked == sum(1 for i in range(n - held, n) if i % 7 and i % 2 == 0)
    assert cut.first_started_at < cut.last_started_at


def test_holdout_days_and_too_small_to_decide(tmp_path):
    path = tmp_path / "store-y.jsonl"
    ids = _export(path, 1000, hours_apart=6.0)  # four chats a day
    cut = split_holdout(path, holdout_days=10)
    assert cut.n_held_out == 40 and sorted(_ids(cut.held_out)) == ids[-40:]
    assert "last 10 days" in cut.rule and not cut.capped
    assert cut.too_small is not None and "too small for the gate to decide" in cut.too_small
    assert f"need {DECIDE_MIN_LABELLED}" in cut.too_small.replace("needs", "need")
    cut = split_holdout(path, holdout_days=60)
    assert cut.n_held_out == 240 and cut.too_small is None
    cut = split_holdout(path, holdout_days=3650)  # more than half the export: capped
    assert cut.n_held_out == 500 and cut.capped and "capped at 50%" in cut.rule
    # booked chats too few: still undecided, however many chats
    _export(path, 1000, booked_every=10_000)
    cut = split_holdout(path, holdout_days=60)
    assert cut.booked < DECIDE_MIN_CLASS and cut.too_small is not None and "0 booked" in cut.too_small
