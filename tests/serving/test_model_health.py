"""GET /v1/model/health and ``yuyue monitor`` on simulated chats replayed through the API (issue 18).

The replay posts each chat (visit, messages, then its booking and arrival outcome) as a desk would; the
report must then give the champion's AUC of ``yuyue evaluate`` on the same chats (the score a chat had at
its end), see no drift in chats from the training world and raise the flag on a shifted world (another
engine and department mix), and compare a challenger scoring in the shadow on the same chats.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from yuyue.data.io import read_conversations
from yuyue.data.simulator import generate_file
from yuyue.features.profile import build_profile, compare, psi, sampling_psi
from yuyue.serving import monitoring
from yuyue.serving.app import create_app
from yuyue.serving.shadow import shadow_of
from yuyue.serving.store import conversations, events
from yuyue.training.evaluate import evaluate
from yuyue.training.metrics import safe_auc

N_SAME = 200
N_SHIFTED = 150


def make_client(settings, model, version="t1"):
    app = create_app(settings.model_copy(update={"rate_per_minute": 1_000_000}), model, version)
    keys = app.state.yuyue.keys
    client = TestClient(app)
    client.keys = {
        "sup": {"X-API-Key": keys.create("boss", "supervisor")[1]},
        "ana": {"X-API-Key": keys.create("ana", "analyst")[1]},
        "adm": {"X-API-Key": keys.create("root", "admin")[1]},
        "c01": {"X-API-Key": keys.create("wang", "consultant", consultant_id="c01")[1]},
    }
    client.state = app.state.yuyue
    return client


def replay(client, path: Path, feedback: bool = False) -> dict[str, list[str]]:
    """Post every chat of ``path`` with its outcome (closed); returns the suggestion ids shown by source."""
    h = client.keys["sup"]
    shown: dict[str, list[str]] = {}
    for conv in read_conversations(path):
        body = {
            "conversation_id": conv.conversation_id,
            "started_at": conv.started_at.isoformat(),
            "hospital": conv.hospital,
            "department": conv.department,
            "project": conv.project,
            "consultant_id": conv.consultant_id,
        }
        if conv.visit is not None:
            body["visit"] = conv.visit.model_dump(mode="json", exclude_none=True)
        r = client.post("/v1/conversations", json={k: v for k, v in body.items() if v is not None}, headers=h)
        assert r.status_code == 201, r.text
        for m in conv.messages:
            msg = {"role": m.role.value if hasattr(m.role, "value") else m.role, "text": m.text}
            r = client.post(
                f"/v1/conversations/{conv.conversation_id}/messages",
                json={**msg, "at": m.at.isoformat(), "k": 1 if feedback else 0},
                headers=h,
            )
            assert r.status_code == 200, r.text
            assert "shadow" not in r.json()  # never shown
            for s in r.json().get("suggestions") or []:
                shown.setdefault(s["source"], []).append(s["id"])
        out = conv.outcome
        if out is not None and out.booked is not None:
            values = {"booked": out.booked, "close": True}
            if out.booked and out.arrived is not None:
                values["arrived"] = out.arrived
            r = client.post(f"/v1/conversations/{conv.conversation_id}/outcome", json=values, headers=h)
            assert r.status_code == 200, r.text
    return shown


def challenger_of(model):
    """Another version for the shadow: the champion with the arrival scorer judging bookings too."""
    other = copy.copy(model)
    other.scorers = {"booked": model.scorers["arrived"], "arrived": model.scorers["arrived"]}
    other.info = {**model.info, "metrics": {"booked.auc": 0.5}}
    return other


@pytest.fixture(scope="module")
def same_world(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("health") / "same.jsonl"
    generate_file(path, n=N_SAME, seed=202, workers=1)
    return path


@pytest.fixture(scope="module")
def shifted_world(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("health") / "shifted.jsonl"
    generate_file(path, n=N_SHIFTED, seed=303, workers=1, variant="shifted")
    return path


@pytest.fixture(scope="module")
def replayed(model, test_settings, same_world, tmp_path_factory):
    """An app (SQLite) with the same-world chats replayed, a challenger in the shadow, some feedback."""
    settings = test_settings.model_copy(
        update={"var_dir": tmp_path_factory.mktemp("health-var"), "model_poll_seconds": 0}
    )
    client = make_client(settings, model)
    with client:
        shadow_of(client.state.service).set(challenger_of(model), "t2")
        shown = replay(client, same_world, feedback=True)
        ids = [i for source in sorted(shown) for i in shown[source]]
        for sid, action in zip(
            ids[:6], ["used", "used", "edited", "dismissed", "dismissed", "dismissed"], strict=False
        ):
            body = {"action": action, **({"final_text": "您好，可以的"} if action == "edited" else {})}
            assert (
                client.post(
                    f"/v1/suggestions/{sid}/feedback", json=body, headers=client.keys["sup"]
                ).status_code
                == 200
            )
        client.shown = shown
        client.given = ids[:6]
        yield client


def health(client, **params):
    r = client.get("/v1/model/health", params=params, headers=client.keys["ana"])
    assert r.status_code == 200, r.text
    return r.json()


def test_champion_auc_matches_evaluate_on_the_same_chats(replayed, model, same_world):
    report = health(replayed)
    offline = evaluate(model, same_world)
    (champ,) = [v for v in report["versions"] if v["role"] == "champion"]
    assert champ["version"] == "t1" and report["champion"] == "t1"
    for target in ("booked", "arrived"):
        live = champ["live"][target]
        assert live["n"] == offline[f"{target}.n"]
        assert abs(live["auc"] - offline[f"{target}.auc"]) < 0.01, (live["auc"], offline[f"{target}.auc"])
        assert abs(live["rate"] - offline[f"{target}.rate"]) < 1e-3
        assert sum(b["n"] for b in live["reliability"]) == live["n"]
        # judged as evaluate judges a chat (the ended chat's score): calibration agrees too
        assert abs(live["ece"] - offline[f"{target}.ece"]) < 0.01, (live["ece"], offline[f"{target}.ece"])
        assert abs(live["brier"] - offline[f"{target}.brier"]) < 2e-3
        assert champ["live_last_message"][target]["n"] == live["n"]
    assert champ["basis"] == "closed" and champ["rescore_pending"] == 0
    # the offline test metrics of the version sit beside the live ones
    assert champ["offline"]["booked"]["auc"] == model.info["metrics"]["booked.auc"]
    assert champ["live_minus_offline"]["booked"]["auc"] == pytest.approx(
        champ["live"]["booked"]["auc"] - model.info["metrics"]["booked.auc"], abs=2e-4
    )
    # slices by week add up; every chat's outcome is known, recorded after it started
    assert sum(g["booked"]["n"] for g in champ["groups"]) == champ["live"]["booked"]["n"]
    assert all(g["group"].count("-W") == 1 for g in champ["groups"])
    o = report["outcomes"]
    assert o["chats"] == N_SAME and o["booked_known"] == champ["live"]["booked"]["n"]
    assert o["booked_coverage"] == round(o["booked_known"] / N_SAME, 4)
    assert o["booked_delay_hours"]["n"] == o["booked_known"] and o["booked_delay_hours"]["median"] > 0
    by_dept = health(replayed, by="department")["versions"][0]
    depts = {c.department for c in read_conversations(same_world)}
    assert {g["group"] for g in by_dept["groups"]} == depts
    # by hospital (a group's analyst compares its hospitals): every replayed chat's hospital, counts adding up
    by_hospital = health(replayed, by="hospital")["versions"][0]
    hospitals = {c.hospital or "(none)" for c in read_conversations(same_world)}
    assert {g["group"] for g in by_hospital["groups"]} == hospitals
    assert sum(g["booked"]["n"] for g in by_hospital["groups"]) == by_hospital["live"]["booked"]["n"]


def test_without_time_to_rescore_the_report_falls_back_to_last_messages(replayed, model):
    state = replayed.state
    other = copy.copy(model)  # another model object: nothing of it is cached
    fresh = [monitoring.Served("t1", "champion", other)]
    quick = monitoring.health_report(state.engine, state.settings, fresh, drift=False, rescore_budget_s=0)
    (champ,) = quick["versions"]
    assert champ["basis"] == "last_message" and champ["rescore_pending"] == champ["live"]["booked"]["n"] > 0
    assert champ["live"]["booked"]["auc"] == champ["live_last_message"]["booked"]["auc"]
    full = monitoring.health_report(state.engine, state.settings, fresh, drift=False, rescore_budget_s=None)
    (champ,) = full["versions"]
    assert champ["basis"] == "closed" and champ["rescore_pending"] == 0
    # the ended chat's score: what the model says of the whole transcript with the closed flag
    with state.engine.connect() as cx:
        row = dict(
            cx.execute(sa.select(conversations).where(conversations.c.booked.is_not(None)).limit(1))
            .mappings()
            .one()
        )
    msgs = monitoring._transcripts(state.engine, [row["id"]])[row["id"]]
    assert len(msgs) == row["n_messages"]
    ended = monitoring.ended_chat_scores(model, row, msgs)
    assert 0 < ended["booked"] < 1 and ended["booked"] != pytest.approx(row["p_booked"], abs=1e-6)


def _gauge(text: str, name: str) -> float:
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


def test_background_refresh_sets_the_gauges_without_a_report_request(replayed, model):
    """A second server on the same store, refreshing every half second: the gauges move from their
    zeros while nobody asks for /v1/model/health."""

    settings = replayed.state.settings.model_copy(update={"health_refresh_seconds": 0.5})
    app = create_app(settings, model, "t1")
    with TestClient(app) as client:
        first = client.get("/metrics").text
        assert _gauge(first, "yuyue_model_health_timestamp_seconds") == 0
        deadline = time.monotonic() + 60
        while _gauge(client.get("/metrics").text, "yuyue_model_health_timestamp_seconds") == 0:
            assert time.monotonic() < deadline, "no refresh within 60 s"
            time.sleep(0.2)
        text = client.get("/metrics").text
        assert _gauge(text, "yuyue_model_drift_psi_max") > 0  # the same world: some PSI, no flag
        assert _gauge(text, "yuyue_model_drift_flag") == 0
        assert 'endpoint="/v1/model/health"' not in text  # nobody asked for the report
        assert time.time() - _gauge(text, "yuyue_model_health_timestamp_seconds") < 60


def test_a_failing_refresh_is_logged_not_raised(model, test_settings, tmp_path, caplog):
    from yuyue.serving.routes.health import HealthRefresher

    settings = test_settings.model_copy(update={"var_dir": tmp_path, "model_poll_seconds": 0})
    client = make_client(settings, model)
    refresher = HealthRefresher(client.state, 300)
    assert refresher.run_once() and refresher.runs == 1
    with client.state.engine.begin() as cx:
        cx.execute(sa.text("DROP TABLE suggestions"))
    with caplog.at_level("WARNING", logger="yuyue.serving"):
        assert refresher.run_once() is False
    assert refresher.failures == 1 and "model health refresh failed" in caplog.text
    assert HealthRefresher(client.state, 0).start()._scheduler is None  # 0: off


def test_same_world_raises_no_drift_flag(replayed):
    report = health(replayed)
    drift = report["drift"]
    assert drift["status"] in ("ok", "warn"), drift["detail"]
    assert report["flags"]["drift"] is False
    features = {f["feature"]: f for f in drift["features"]}
    assert {
        "visit.engine",
        "visit.keyword_category",
        "visit.landing_page",
        "visit.region",
        "visit.device",
    } <= set(features)
    assert {"department", "messages", "visitor_turns", "visitor_message_chars", "concern.price"} <= set(
        features
    )
    assert max(f["excess"] for f in drift["features"]) < 0.2
    assert all(
        f["excess"] == pytest.approx(max(0, f["psi"] - f["noise"]), abs=2e-4) for f in drift["features"]
    )
    metrics = replayed.get("/metrics").text
    assert "yuyue_model_drift_flag 0.0" in metrics


def test_shifted_world_raises_the_drift_flag(model, test_settings, shifted_world, tmp_path, cli_env):
    settings = test_settings.model_copy(
        update={"var_dir": tmp_path, "model_poll_seconds": 0, "health_refresh_seconds": 2}
    )
    with make_client(settings, model) as client:
        replay(client, shifted_world)
        # the background refresh raises the flag on /metrics with nobody opening the report
        deadline = time.monotonic() + 120
        while "yuyue_model_drift_flag 1.0" not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "the refresh did not raise the drift flag within 120 s"
            time.sleep(0.5)
        report = health(client)
        drift = report["drift"]
        assert drift["status"] == "flag" and report["flags"]["drift"] is True
        features = {f["feature"]: f for f in drift["features"]}
        assert features["visit.engine"]["level"] == "flag", features["visit.engine"]
        assert features["department"]["psi"] > 0.1
        assert any("visit.engine" in r for r in report["flags"]["reasons"])
        assert "yuyue_model_drift_flag 1.0" in client.get("/metrics").text
        # yuyue monitor --fail-on-flag exits 3 for cron
        from yuyue.cli.main import app

        bundle = model.save(tmp_path / "bundle")
        args = [
            "monitor",
            "--url",
            str(client.state.engine.url),
            "--model-dir",
            str(bundle),
            "--fail-on-flag",
        ]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 3 and "drift: flag" in r.stdout, r.output
        # the shares behind the engine's PSI are the profile's: training side from the bundle
        engine = features["visit.engine"]
        assert abs(sum(b["reference"] for b in engine["bins"]) - 1) < 1e-3
        assert abs(sum(b["live"] for b in engine["bins"]) - 1) < 1e-3


def test_shadow_scores_are_stored_and_compared(replayed, model):
    state = replayed.state
    with state.engine.connect() as cx:
        rows = cx.execute(
            sa.select(events.c.conversation_id, events.c.seq, events.c.payload).where(
                events.c.kind == "message"
            )
        ).all()
        chats = {
            r.id: r
            for r in cx.execute(
                sa.select(
                    conversations.c.id,
                    conversations.c.n_messages,
                    conversations.c.booked,
                    conversations.c.p_booked,
                )
            )
        }
    payloads = [orjson.loads(p) for _, _, p in rows]
    assert payloads and all(p["shadow"]["version"] == "t2" for p in payloads)
    assert all(set(p["shadow"]["scores"]) == {"booked", "arrived"} for p in payloads)
    # the challenger judges bookings with the arrival scorer: its booking score is the champion's arrival score
    assert all(
        p["shadow"]["scores"]["booked"] == pytest.approx(p["scores"]["arrived"], abs=1e-5) for p in payloads
    )
    last = {cid: orjson.loads(p) for cid, seq, p in rows if seq == chats[cid].n_messages - 1}
    y = np.array([chats[c].booked for c in last if chats[c].booked is not None], dtype=float)
    ps = np.array([last[c]["shadow"]["scores"]["booked"] for c in last if chats[c].booked is not None])
    pc = np.array([chats[c].p_booked for c in last if chats[c].booked is not None])
    report = health(replayed)
    assert report["challenger"] == "t2"
    (cmp_,) = report["shadow"]
    assert (cmp_["champion"], cmp_["challenger"], cmp_["chats"]) == ("t1", "t2", len(y))
    booked = cmp_["booked"]
    assert booked["challenger"]["auc"] == pytest.approx(safe_auc(y, ps), abs=1e-4)
    assert booked["champion"]["auc"] == pytest.approx(safe_auc(y, pc), abs=1e-4)
    assert booked["challenger"]["auc"] != booked["champion"]["auc"]
    assert booked["challenger_minus_champion"]["auc"] == pytest.approx(
        booked["challenger"]["auc"] - booked["champion"]["auc"], abs=2e-4
    )
    (chal,) = [v for v in report["versions"] if v["role"] == "challenger"]
    assert chal["version"] == "t2" and chal["offline"]["booked"]["auc"] == 0.5
    assert report["shadow_timing"]["n"] > 0 and report["shadow_timing"]["p50_ms"] is not None
    # what others read of the chat carries no shadow score
    cid = next(iter(last))
    view = replayed.get(f"/v1/conversations/{cid}", headers=replayed.keys["sup"]).json()
    assert view["messages"] and all("shadow" not in m for m in view["messages"])


def test_suggestion_acceptance_by_version_stage_source(replayed):
    s = health(replayed)["suggestions"]
    shown = sum(len(v) for v in replayed.shown.values())
    assert s["overall"]["shown"] == shown and shown > 6
    assert (s["overall"]["used"], s["overall"]["edited"], s["overall"]["dismissed"]) == (2, 1, 3)
    assert s["overall"]["acceptance_rate"] == 0.5
    assert [v["version"] for v in s["by_version"]] == ["t1"]
    assert {x["source"]: x["shown"] for x in s["by_source"]} == {k: len(v) for k, v in replayed.shown.items()}
    assert sum(x["shown"] for x in s["by_stage"]) == shown


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"by": "month"}, "by"),
        ({"since": "2025-03-01T00:00:00"}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"version": "a b"}, "version"),
        ({"version": "x" * 40}, "version"),
        ({"since": "2025-03-05T00:00:00+08:00", "until": "2025-03-01T00:00:00+08:00"}, "until"),
        ({"until": "1990-01-01T00:00:00+08:00"}, "until"),
        ({"drift": "maybe"}, "drift"),
    ],
)
def test_bad_query_params_are_422_naming_them(replayed, params, named):
    r = replayed.get("/v1/model/health", params=params, headers=replayed.keys["ana"])
    assert r.status_code == 422, r.text
    assert named in r.json()["detail"]


def test_who_may_read_the_health_report(replayed):
    assert (
        replayed.get("/v1/model/health", headers=replayed.keys["adm"], params={"drift": "false"}).status_code
        == 200
    )
    assert replayed.get("/v1/model/health", headers=replayed.keys["c01"]).status_code == 403
    assert replayed.get("/v1/model/health", headers=replayed.keys["sup"]).status_code == 403
    assert replayed.get("/v1/model/health").status_code == 401


def test_window_and_version_filters(replayed, same_world):
    everything = health(replayed, drift="false")
    one = health(replayed, version="t1", drift="false")
    assert [v["version"] for v in one["versions"]] == ["t1"]
    assert one["versions"][0]["live"] == everything["versions"][0]["live"]
    starts = sorted(c.started_at for c in read_conversations(same_world))
    since = starts[len(starts) // 2]
    later = health(replayed, since=since.isoformat(), drift="false")
    assert later["outcomes"]["chats"] == sum(t >= since for t in starts) < len(starts)
    empty = health(replayed, until="2018-01-01T00:00:00+08:00")
    assert empty["outcomes"]["chats"] == 0 and empty["versions"][0]["live"]["booked"]["auc"] is None
    assert empty["drift"]["status"] == "insufficient"


def test_bundle_without_profile_reports_drift_unavailable(replayed, model):
    old = copy.copy(model)
    old.info = {k: v for k, v in model.info.items() if k != "profile"}
    report = monitoring.health_report(
        replayed.state.engine, replayed.state.settings, [monitoring.Served("t1", "champion", old)]
    )
    assert report["drift"]["status"] == "unavailable" and "profile" in report["drift"]["detail"]
    assert report["flags"]["drift"] is False


def test_training_profile_is_in_the_bundle(model):
    profile = model.info["profile"]
    n = profile["n_chats"]
    assert n > 0 and 0 < profile["n_text_chats"] <= n
    for counts in profile["categorical"].values():
        assert sum(counts.values()) == n
    assert sum(profile["numeric"]["messages"]["counts"]) == n
    assert "profile" not in model.describe()  # GET /v1/model stays small


def test_psi_of_a_profile_against_itself_is_zero_and_grows_with_shift(same_world, shifted_world):
    same = build_profile(read_conversations(same_world))
    shifted = build_profile(read_conversations(shifted_world))
    assert all(f["psi"] == pytest.approx(0, abs=1e-9) for f in compare(same, same))
    engine = {f["feature"]: f["psi"] for f in compare(same, shifted)}["visit.engine"]
    assert engine > 0.2
    assert psi([10, 10], [10, 10]) == 0 and psi([90, 10], [10, 90]) > psi([60, 40], [40, 60]) > 0
    # two samples of one population differ by about (k - 1)(1/n + 1/N) by chance
    rng = np.random.default_rng(0)
    shares = np.full(20, 1 / 20)
    draws = [psi(rng.multinomial(2000, shares), rng.multinomial(100, shares)) for _ in range(200)]
    expected = sampling_psi([100] * 20, [5] * 20)
    assert expected == pytest.approx(19 * (1 / 100 + 1 / 2000))
    assert 0.7 * expected < np.mean(draws) < 1.3 * expected


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """``yuyue`` commands in this test read their settings from a fresh var directory."""
    from yuyue.config import get_settings

    monkeypatch.setenv("YUYUE_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_yuyue_monitor_prints_the_report(replayed, model, tmp_path, cli_env):
    from yuyue.cli.main import app

    bundle = model.save(tmp_path / "bundle")
    url = str(replayed.state.engine.url)
    runner = CliRunner()
    r = runner.invoke(app, ["monitor", "--url", url, "--model-dir", str(bundle), "--json", "--by", "engine"])
    assert r.exit_code == 0, r.output
    report = orjson.loads(r.stdout)
    api = health(replayed, by="engine")
    served = {v["version"]: v for v in report["versions"]}
    assert served["t1"]["role"] == "served" and served["dir:bundle"]["role"] == "champion"
    assert served["t1"]["live"]["booked"]["auc"] == api["versions"][0]["live"]["booked"]["auc"]
    assert {g["group"] for g in served["t1"]["groups"]} == {g["group"] for g in api["versions"][0]["groups"]}
    assert report["drift"]["status"] == api["drift"]["status"]
    text = runner.invoke(app, ["monitor", "--url", url, "--model-dir", str(bundle), "--no-drift"])
    assert text.exit_code == 0 and "version t1 (served)" in text.stdout and "booked: n " in text.stdout
    bad = runner.invoke(app, ["monitor", "--url", url, "--since", "2025-03-01"])
    assert bad.exit_code == 2 and "timezone offset" in bad.output
    bad = runner.invoke(app, ["monitor", "--url", url, "--by", "month"])
    assert bad.exit_code == 2 and "--by" in bad.output


@pytest.mark.integration
def test_health_on_postgresql(model, test_settings, same_world, pg_url, tmp_path):
    """The same replay (a third of its chats) on PostgreSQL: the AUC of ``evaluate``, shadow scores."""
    from tests.serving.conftest import _drop_all_tables

    small = tmp_path / "small.jsonl"
    # every third chat: the first ones alone are a season of their own (more 整形美容)
    small.write_text(
        "".join(same_world.read_text(encoding="utf-8").splitlines(keepends=True)[::3]), encoding="utf-8"
    )
    settings = test_settings.model_copy(
        update={
            "var_dir": tmp_path / "var",
            "model_poll_seconds": 0,
            "database_url": pg_url,
            "monitor_min_chats": 50,
        }
    )
    try:
        with make_client(settings, model) as client:
            shadow_of(client.state.service).set(challenger_of(model), "t2")
            replay(client, small)
            report = health(client)
            offline = evaluate(model, small)
            champ = report["versions"][0]
            assert champ["version"] == "t1" and champ["live"]["booked"]["n"] == offline["booked.n"]
            assert abs(champ["live"]["booked"]["auc"] - offline["booked.auc"]) < 0.01
            (cmp_,) = report["shadow"]
            assert cmp_["chats"] == offline["booked.n"] and cmp_["booked"]["challenger"]["auc"] is not None
            assert report["drift"]["status"] in ("ok", "warn"), report["drift"]["detail"]
    finally:
        _drop_all_tables(pg_url)


def test_the_report_reads_at_most_monitor_max_chats(replayed):
    from yuyue.serving.store import suggestions

    state = replayed.state
    settings = state.settings.model_copy(update={"monitor_max_chats": 100})
    report = monitoring.health_report(state.engine, settings, [], drift=False)
    assert report["outcomes"]["chats"] == 100 and report["versions"][0]["chats"] == 100
    with state.engine.connect() as cx:
        newest = [
            r[0]
            for r in cx.execute(
                sa.select(conversations.c.id).order_by(conversations.c.started_at.desc()).limit(100)
            )
        ]
        shown = cx.execute(
            sa.select(sa.func.count())
            .select_from(suggestions)
            .where(suggestions.c.conversation_id.in_(newest))
        ).scalar_one()
    assert report["suggestions"]["overall"]["shown"] == shown
