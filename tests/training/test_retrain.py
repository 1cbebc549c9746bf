"""Training from the event store and ``yuyue retrain`` (issue 18), on a store filled through the service.

Simulated chats are replayed through the HTTP API (their first messages, to keep the test short) into
one SQLite store; a copy of it gets the same outcomes with those of all but the latest 10 % of chats
shuffled among them (a store that teaches nothing, whose latest chats still hold the truth). Then:

1. ``yuyue train --from-store --since`` on the shuffled store: the first version, champion as the first;
   it records the data it saw (source, since, chats, time range, hash);
2. ``yuyue retrain`` on the real store: a better candidate, promoted through the gate;
3. ``yuyue retrain`` on the shuffled store again: a worse candidate, refused (exit 0), champion kept.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.training.test_promote_gate import fast_scorers  # noqa: F401  (a fixture)
from yuyue.data.io import read_conversations
from yuyue.training import registry

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
    """(settings, real store URL, shuffled store URL, the replayed records)."""
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
    real, shuffled = d / "real.db", d / "shuffled.db"
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
    with sqlite3.connect(real) as src, sqlite3.connect(shuffled) as dst:
        src.backup(dst)
    fitting = len(records) - len(records) // 10
    outcomes = [r.get("outcome") for r in records[:fitting]]
    random.Random(0).shuffle(outcomes)
    noisy = [{**r, "outcome": o} for r, o in zip(records[:fitting], outcomes, strict=True)] + records[
        fitting:
    ]
    for db, recs in ((real, records), (shuffled, noisy)):
        with _app(settings, served, db) as api:
            for rec in recs:
                _post(api, f"/v1/conversations/{rec['conversation_id']}/outcome", _outcome(rec))
    return settings, f"sqlite:///{real}", f"sqlite:///{shuffled}", records


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


def test_train_from_store_then_retrain_promotes_better_refuses_worse(stores, cli_env, tmp_path):
    from yuyue.cli.main import app

    settings, real, shuffled, records = stores
    # 1. from the store, since the first chat's day: every chat, with the outcomes recorded through the API
    since = records[0]["started_at"][:10]
    res = runner.invoke(app, ["train", "--from-store", "--url", shuffled, "--since", since])
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
    res = runner.invoke(app, ["train", "--from-store", "--url", shuffled, "--since", "2099-01-01"])
    assert res.exit_code == 1 and "no chats started since 2099-01-01" in res.output

    # 2. the real store: a better candidate passes the gate on the latest chats, held out by time
    verdict, report = tmp_path / "v2.json", tmp_path / "v2.html"
    res = runner.invoke(app, ["retrain", "--url", real, "--json-out", str(verdict), "--report", str(report)])
    assert res.exit_code == 0, res.output
    out = json.loads(verdict.read_text(encoding="utf-8"))
    assert out["decision"] == "promoted" and out["candidate"] == "2" and out["champion"] == "2", out[
        "message"
    ]
    assert out["champion_before"] == "1" and f"latest {N_CHATS // 10} chats" in out["held_out"]
    assert out["comparison"]["metrics"]["booked.auc"]["delta"] > 0.01
    assert out["champion_may_have_seen"] == 0 and out["data"]["data.source"] == "store"
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


def test_since_must_be_a_date():
    from yuyue.cli.main import app

    res = runner.invoke(app, ["retrain", "--since", "last tuesday"])
    assert res.exit_code == 2 and "not a date or an ISO 8601 time" in res.output
    res = runner.invoke(app, ["train", "--since", "2025-01-01", "--data", "x.jsonl"])
    assert res.exit_code == 2 and "--since goes with --from-store" in res.output
