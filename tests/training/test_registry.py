"""Registry round trip: log, register, promote, load the champion, same predictions; CLI errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from yuyue.config import Settings
from yuyue.data.io import read_conversations
from yuyue.features.state import replay
from yuyue.training import registry

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory, test_settings) -> Settings:
    var = tmp_path_factory.mktemp("registry")
    return test_settings.model_copy(
        update={"var_dir": var, "mlflow_tracking_uri": f"sqlite:///{var / 'mlflow.db'}"}
    )


def test_register_promote_load_same_predictions(trained, store, sim_path):
    run_id, v1 = registry.log_and_register(trained.model, trained.bundle_dir, trained.metrics, settings=store)
    _, v2 = registry.log_and_register(trained.model, trained.bundle_dir, trained.metrics, settings=store)
    assert run_id and v1 == "1" and v2 == "2"
    with pytest.raises(registry.RegistryError, match="cannot load"):
        registry.load(registry.CHAMPION, store)
    registry.promote(v2, store)
    listed = registry.list_versions(store)
    assert [v["version"] for v in listed] == ["2", "1"]
    assert listed[0]["aliases"] == ["champion"] and listed[0]["booked.auc"] == pytest.approx(
        trained.metrics["booked.auc"]
    )
    loaded, version = registry.load(registry.CHAMPION, store)
    assert version == "2"
    h = {
        k: v
        for k, v in loaded.hospital.items()
        if k in ("hospital_name", "hospital_city", "hospital_province")
    }
    for conv, _ in zip(read_conversations(sim_path), range(5), strict=False):
        a = trained.model.score(replay(conv, **h))
        b = loaded.score(replay(conv, **h))
        assert {k: s.probability for k, s in a.items()} == {k: s.probability for k, s in b.items()}


def test_promote_unknown_version_names_the_known_ones(store):
    with pytest.raises(registry.RegistryError, match=r"no version '99' \(registered: 2, 1\)"):
        registry.promote("99", store)


def test_cli_models_and_evaluate(store, sim_path, tmp_path, monkeypatch):
    from yuyue.cli.main import app
    from yuyue.config import get_settings

    for k, v in {
        "YUYUE_VAR_DIR": str(store.var_dir),
        "YUYUE_MLFLOW_TRACKING_URI": store.mlflow_tracking_uri,
    }.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        res = runner.invoke(app, ["models", "list", "--json"])
        assert res.exit_code == 0, res.output
        assert [v["version"] for v in json.loads(res.output)] == ["2", "1"]
        res = runner.invoke(app, ["models", "promote", "7"])
        assert res.exit_code == 1 and "no version '7'" in res.output
        small = tmp_path / "small.jsonl"
        small.write_text(
            "".join(line for line, _ in zip(open(sim_path, encoding="utf-8"), range(200), strict=False)),
            encoding="utf-8",
        )
        report = tmp_path / "report.html"
        res = runner.invoke(
            app, ["evaluate", "--data", str(small), "--model", "1", "--json", "--report", str(report)]
        )
        assert res.exit_code == 0, res.output
        out = json.loads(res.output.strip().splitlines()[-1])
        assert out["model_version"] == "1" and out["n_conversations"] == 200 and "booked.auc" in out
        assert "champion (v2)" in report.read_text(encoding="utf-8")
        res = runner.invoke(app, ["evaluate", "--data", str(tmp_path / "missing.jsonl")])
        assert res.exit_code == 2 and "no such file" in res.output
    finally:
        get_settings.cache_clear()
