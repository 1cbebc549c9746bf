"""Promotion through a gate (issue 18): ``yuyue models promote`` compares the candidate with the champion on
the same held-out chats and refuses a worse one unless ``--force`` (recorded on the version);
``yuyue evaluate --compare`` prints paired deltas with bootstrap CIs over chats and a verdict; the HTML
report shows both models side by side.

The worse model is trained on the same chats with the outcomes of its fitting chats shuffled among them
(the latest 10 %, its test split, keep their real outcomes): it learns nothing but is evaluated on truth.
Only the logistic-regression scorer is fitted (``fast_scorers``) to keep the tests short.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score
from typer.testing import CliRunner

from yuyue.config import Settings
from yuyue.training import registry

runner = CliRunner()


def shuffle_fitting_outcomes(src: Path, dst: Path, seed: int = 0, keep_latest: float = 0.1) -> Path:
    """``src`` with the outcomes of all but its latest ``keep_latest`` chats (by start) shuffled among them."""
    records = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines()]
    order = sorted(
        range(len(records)), key=lambda i: (records[i]["started_at"], records[i]["conversation_id"])
    )
    fitting = order[: int(round(len(order) * (1 - keep_latest)))]
    outcomes = [records[i].get("outcome") for i in fitting]
    random.Random(seed).shuffle(outcomes)
    for i, o in zip(fitting, outcomes, strict=True):
        records[i]["outcome"] = o
        records[i].pop("truth", None)  # the simulator's truth would still say what really happened
    dst.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def fast_scorers():
    from yuyue.training import scorers

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scorers, "CANDIDATES", {"logreg": scorers.CANDIDATES["logreg"]})
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from yuyue.data.simulator import generate_file

    d = tmp_path_factory.mktemp("gate")
    good = d / "good.jsonl"
    generate_file(good, n=500, seed=31, workers=2)
    generate_file(d / "fresh.jsonl", n=300, seed=32, workers=2)
    return {"good": good, "bad": shuffle_fitting_outcomes(good, d / "bad.jsonl"), "fresh": d / "fresh.jsonl"}


@pytest.fixture(scope="module")
def gate_settings(tmp_path_factory, test_settings) -> Settings:
    var = tmp_path_factory.mktemp("gate-var")
    return test_settings.model_copy(
        update={"var_dir": var, "mlflow_tracking_uri": f"sqlite:///{var / 'mlflow.db'}"}
    )


@pytest.fixture(scope="module")
def bundles(files, gate_settings, fast_scorers, tmp_path_factory):
    """The good and the deliberately worse TrainResult (bundles saved under their own folders)."""
    from yuyue.training.train import train

    out = {}
    for name in ("good", "bad"):
        d = tmp_path_factory.mktemp(f"bundle-{name}")
        out[name] = train(files[name], settings=gate_settings, out_dir=d, workers=2, echo=lambda _: None)
    return out


def register(result, settings, path: Path) -> str:
    from yuyue.training.workflow import data_tags

    _, version = registry.log_and_register(
        result.model,
        result.bundle_dir,
        result.metrics,
        settings=settings,
        tags=data_tags(path, result.model.info),
    )
    assert version is not None
    return version


@pytest.fixture
def cli_env(gate_settings, monkeypatch):
    from yuyue.config import get_settings

    monkeypatch.setenv("YUYUE_VAR_DIR", str(gate_settings.var_dir))
    monkeypatch.setenv("YUYUE_MLFLOW_TRACKING_URI", gate_settings.mlflow_tracking_uri)
    monkeypatch.setenv("YUYUE_HOSPITAL_NAME", gate_settings.hospital_name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def held_out_metrics(bundles, files):
    """Both models evaluated on every chat of the fresh file (neither trained on it)."""
    from yuyue.training.evaluate import evaluate

    return {k: evaluate(b.model, files["fresh"]) for k, b in bundles.items()}


def test_compare_gives_paired_deltas_with_bootstrap_cis(bundles, files):
    from yuyue.training.compare import compare

    m = held_out_metrics(bundles, files)
    good, bad = m["good"], m["bad"]
    # the point values are the evaluation's own (same chats, same metric definitions)
    cmp = compare(good, bad, n_boot=300, seed=0)
    for key in ("booked.auc", "booked.ece", "booked.brier", "stage.macro_f1", "reply.r10_at_1"):
        assert key in cmp["metrics"], key
        v = cmp["metrics"][key]
        assert v["candidate"] == pytest.approx(good[key], abs=2e-4), key
        assert v["champion"] == pytest.approx(bad[key], abs=2e-4), key
        assert v["delta"] == pytest.approx(v["candidate"] - v["champion"], abs=2e-4)
        lo, hi = v["ci95"]
        assert lo <= v["delta"] <= hi, (key, v)
    c = good["_curves.booked"]
    assert cmp["metrics"]["booked.auc"]["candidate"] == pytest.approx(roc_auc_score(c["y"], c["p"]), abs=1e-4)
    s = good["_stage"]
    assert cmp["metrics"]["stage.macro_f1"]["candidate"] == pytest.approx(
        f1_score(s["truth"], s["pred"], average="macro"), abs=1e-4
    )
    auc = cmp["metrics"]["booked.auc"]
    assert auc["delta"] > 0.05 and auc["ci95"][0] > 0 and auc["clearly"] == "better"
    assert cmp["n_chats"] == good["n_conversations"] and cmp["verdict"] in ("better", "mixed")
    assert "booked.auc +" in cmp["verdict_line"]
    # the other way round: the signs flip and the interval with them
    back = compare(bad, good, n_boot=300, seed=0)["metrics"]["booked.auc"]
    assert back["delta"] == pytest.approx(-auc["delta"], abs=1e-4) and back["clearly"] == "worse"
    # a model against itself: no difference, zero-width intervals; the same seed gives the same intervals
    same = compare(good, good, n_boot=100, seed=0)
    assert same["verdict"] == "no clear difference"
    assert all(v["delta"] == 0 and v["ci95"] == [0, 0] for v in same["metrics"].values())
    assert compare(good, bad, n_boot=300, seed=0)["metrics"] == cmp["metrics"]
    # slices by department and engine cover every held-out closed chat
    for key in ("department", "engine"):
        assert sum(r["n"] for r in cmp["slices"][key]) == auc["n"]


def test_promote_refuses_a_worse_model_force_is_recorded_a_better_one_passes(
    bundles, files, gate_settings, cli_env, tmp_path
):
    from yuyue.cli.main import app

    v_good = register(bundles["good"], gate_settings, files["good"])
    # no champion yet: promotion needs no comparison
    res = runner.invoke(app, ["models", "promote", v_good])
    assert res.exit_code == 0 and "no champion yet" in res.output, res.output
    assert registry.version_tags(v_good, gate_settings)["promotion"] == "first"

    v_bad = register(bundles["bad"], gate_settings, files["bad"])
    report = tmp_path / "refused.html"
    res = runner.invoke(app, ["models", "promote", v_bad, "--json", "--report", str(report)])
    assert res.exit_code == 3, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["decision"] == "refused" and not out["promoted"]
    assert "booked AUC" in out["gate"]["reasons"][0] and "latest 50 chats" in out["held_out"]
    assert out["comparison"]["metrics"]["booked.auc"]["delta"] < -0.01
    assert registry.alias_version(settings=gate_settings) == v_good  # the champion stays
    tags = registry.version_tags(v_bad, gate_settings)
    assert tags["gate.passed"] == "false" and tags["gate.against"] == v_good and "promotion" not in tags
    page = report.read_text(encoding="utf-8")
    assert "refused" in page and "worse" in page and "by department" in page

    # forced: promoted, and who / when / why is on the version and printed
    res = runner.invoke(
        app, ["models", "promote", v_bad, "--force", "--reason", "drill: test the force path"]
    )
    assert res.exit_code == 0 and "FORCED" in res.output and "drill: test the force path" in res.output
    assert registry.alias_version(settings=gate_settings) == v_bad
    tags = registry.version_tags(v_bad, gate_settings)
    assert tags["promotion"] == "forced" and tags["promotion_reason"] == "drill: test the force path"
    assert (
        tags["promoted_by"] and tags["promoted_at"][:2] == "20" and "booked AUC" in tags["gate.refused_for"]
    )

    # a better candidate (the good bundle again) passes the gate against the forced champion, on --data too
    v_better = register(bundles["good"], gate_settings, files["good"])
    res = runner.invoke(app, ["models", "promote", v_better, "--data", str(files["fresh"]), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["decision"] == "promoted" and "all 300 chats" in out["held_out"]
    assert registry.alias_version(settings=gate_settings) == v_better
    assert registry.version_tags(v_better, gate_settings)["promotion"] == "gate"


def test_evaluate_compare_json_and_report(bundles, files, gate_settings, cli_env, tmp_path):
    from yuyue.cli.main import app

    versions = registry.list_versions(gate_settings)
    if not versions:  # run alone: register the two
        register(bundles["good"], gate_settings, files["good"])
        register(bundles["bad"], gate_settings, files["bad"])
        registry.promote("1", gate_settings)
    bad = next(v["version"] for v in registry.list_versions(gate_settings) if "bad" in v["tags"]["data.path"])
    report = tmp_path / "cmp.html"
    res = runner.invoke(
        app,
        ["evaluate", "--data", str(files["fresh"]), "--model", bad, "--compare", "champion", "--json"]
        + ["--report", str(report)],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    cmp = out["compare"]
    assert cmp["candidate"] == bad and cmp["n_chats"] == 300 and cmp["n_boot"] == 300
    for key in (
        "booked.auc",
        "booked.ece",
        "booked.brier",
        "arrived.auc",
        "stage.macro_f1",
        "reply.r10_at_1",
    ):
        v = cmp["metrics"][key]
        assert set(v) >= {"candidate", "champion", "delta", "ci95"} and v["ci95"][0] <= v["ci95"][1]
    assert cmp["metrics"]["booked.auc"]["delta"] < 0 and cmp["verdict"] in ("worse", "mixed")
    assert cmp["verdict_line"].startswith(f"v{bad} vs champion")
    page = report.read_text(encoding="utf-8")
    # side by side with deltas and the verdict, slices, turns as a table, each metric explained
    assert "Δ" in page and cmp["verdict"] in page and "by engine" in page and "after 3" in page
    assert "{'1':" not in page and "Expected calibration error" in page
    assert page.count("<img") >= 3
    # --compare with the same version is refused by name
    champ = registry.alias_version(settings=gate_settings)
    res = runner.invoke(
        app, ["evaluate", "--data", str(files["fresh"]), "--model", champ, "--compare", "champion"]
    )
    assert res.exit_code == 2 and "nothing to compare" in res.output
    # without --model, --compare judges the newest global version, never a hospital's own model
    newest = max((v for v in registry.list_versions(gate_settings)), key=lambda v: int(v["version"]))
    _, own = registry.log_and_register(
        bundles["bad"].model,
        bundles["bad"].bundle_dir,
        {},
        settings=gate_settings,
        tags={registry.HOSPITAL_TAG: "hz-a"},
    )
    assert int(own) > int(newest["version"])
    res = runner.invoke(
        app, ["evaluate", "--data", str(files["fresh"]), "--compare", "champion", "--json", "--n-boot", "0"]
    )
    if newest["version"] == champ:
        assert res.exit_code == 2 and f"both version {champ}" in res.output, res.output
    else:
        assert res.exit_code == 0, res.output
        assert json.loads(res.output.strip().splitlines()[-1])["compare"]["candidate"] == newest["version"]


def test_bootstrap_is_fast_and_resamples_chats_not_rows():
    """A chat's rows move together: a metric whose rows within a chat agree has the CI of the chats."""
    import time

    from yuyue.training.compare import compare

    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    conv = np.array([f"c{i}" for i in range(n)], dtype=object)
    a = {"_curves.booked": {"conv": conv, "y": y, "p": np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)}}
    b = {"_curves.booked": {"conv": conv, "y": y, "p": rng.random(n)}}
    # reply pairs: 10 per chat, all hits in the even chats of a, none in b
    pairs = np.repeat(conv, 10)
    hit_a = np.repeat(np.arange(n) % 2 == 0, 10)
    a["_reply"] = {"conv": pairs, "hit": hit_a}
    b["_reply"] = {"conv": pairs, "hit": np.zeros(10 * n, dtype=bool)}
    t = time.perf_counter()
    cmp = compare(a, b, n_boot=300, seed=1)
    assert time.perf_counter() - t < 20
    r = cmp["metrics"]["reply.r10_at_1"]
    assert r["delta"] == pytest.approx(0.5) and r["n_chats"] == n
    lo, hi = r["ci95"]
    # chats, not pairs: the spread of a mean of 2,000 chat-level coin flips (sd 0.011), not of 20,000 pairs
    assert 0.03 < hi - lo < 0.06
