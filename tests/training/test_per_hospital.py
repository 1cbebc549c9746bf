"""Per-hospital models (issues 17, 20): who gets one, the rule that keeps it, the registry's aliases, and
the Ray tasks choosing what the sequential path chooses.

The data: hospitals ``hz-a`` and ``sh-b`` (the simulated world with different seeds: different chats,
consultants and outcomes; the shifted world books too rarely for a few hundred chats to hold both
outcomes in every split) and ``nb-c`` with too few chats. Scorers are the logistic model alone, as in the
other training tests that fit several times, to keep the file CI-sized.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from yuyue.config import Settings
from yuyue.data.simulator.generate import iter_records
from yuyue.training import per_hospital as ph
from yuyue.training import registry, scorers
from yuyue.training.train import train

LOGREG_ONLY = {"logreg": scorers.CANDIDATES["logreg"]}
SPEC = (("hz-a", 250, 1, "default"), ("sh-b", 250, 2, "default"), ("nb-c", 20, 3, "default"))
MIN_CHATS = 100
MIN_COMPARED = 5


def write_hospitals(path: Path, spec=SPEC) -> Path:
    """Simulated chats of each (hospital code, n, seed, world), merged in time order."""
    records = []
    for code, n, seed, variant in spec:
        for rec in iter_records(n, seed, variant=variant):
            records.append({**rec, "hospital": code})
    records.sort(key=lambda r: (r["started_at"], r["conversation_id"]))
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The data, settings with their own registry, the global model, and the sequential per-hospital fits."""
    root = tmp_path_factory.mktemp("per_hospital")
    settings = Settings(
        var_dir=root / "var",
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        hospital_name="杭州美悦医院",
        hospital_address="杭州市西湖区文三路100号",
    )
    data = write_hospitals(root / "chats.jsonl")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scorers, "CANDIDATES", LOGREG_ONLY)
        glob = train(data, settings=settings, out_dir=root / "global", workers=1, echo=lambda _: None)
        counts, files, held_out = ph.split_hospitals(data, root / "split", MIN_CHATS)
        jobs = [(h, files[h], counts[h]) for h in sorted(files)]
        results = ph.fit_all(jobs, glob.bundle_dir, held_out, settings, root / "own")
    return {
        "root": root,
        "settings": settings,
        "data": data,
        "global": glob,
        "counts": counts,
        "files": files,
        "held_out": held_out,
        "jobs": jobs,
        "results": results,
    }


def test_the_rule_keeps_an_own_model_only_when_it_is_better_on_enough_chats():
    g = {"booked": 0.80, "arrived": 0.75}
    assert ph.decide(g, {"booked": 0.806, "arrived": 0.75}, 200)[0]
    kept, why = ph.decide(g, {"booked": 0.804, "arrived": 0.80}, 200)
    assert not kept and "+0.0040" in why  # better, but by less than the margin
    assert not ph.decide(g, {"booked": 0.79, "arrived": 0.75}, 200)[0]
    kept, why = ph.decide(g, {"booked": 0.85, "arrived": 0.73}, 200)
    assert not kept and "arrived AUC -0.0200" in why  # booked better, arrival worse than the tolerance
    kept, why = ph.decide(g, {"booked": 0.95, "arrived": 0.95}, 20)
    assert not kept and "too few" in why
    assert not ph.decide({"booked": None}, {"booked": 0.9}, 200)[0]


def test_a_gain_within_the_noise_of_the_held_out_chats_keeps_the_global_model():
    g, o = {"booked": 0.80, "arrived": 0.75}, {"booked": 0.83, "arrived": 0.75}
    shown = {"booked": [0.004, 0.06], "arrived": [-0.02, 0.02]}
    kept, why = ph.decide(g, o, 200, ci95=shown, minority=30)
    assert kept and "[+0.0040, +0.0600]" in why
    kept, why = ph.decide(g, o, 200, ci95={**shown, "booked": [-0.01, 0.07]}, minority=30)
    assert not kept and "includes 0" in why  # the point gain is large, the interval is not above 0
    kept, why = ph.decide(g, o, 200, ci95={**shown, "booked": None}, minority=30)
    assert not kept and "could not be computed" in why
    kept, why = ph.decide(
        g, {**o, "arrived": 0.745}, 200, ci95={**shown, "arrived": [-0.02, -0.001]}, minority=30
    )
    assert not kept and "clearly lower" in why  # within the tolerance, but clearly worse
    kept, why = ph.decide(g, o, 200, ci95=shown, minority=ph.MIN_MINORITY - 1)
    assert not kept and "rarer booked outcome" in why


def test_only_hospitals_with_enough_labelled_chats_get_a_file_of_their_chats(world):
    counts, files = world["counts"], world["files"]
    assert set(counts) == {"hz-a", "sh-b", "nb-c"} and counts["nb-c"] < MIN_CHATS
    assert sorted(files) == ["hz-a", "sh-b"]
    for h, path in files.items():
        lines = path.read_bytes().splitlines()
        assert {orjson.loads(line)["hospital"] for line in lines} == {h}
    # the comparison chats: in the hospital's test split and the global one, seen by neither model
    glob = world["global"].model.info["test_range"]
    for r in world["results"]:
        assert 0 < r.n_compared <= counts[r.hospital]
        assert set(r.global_auc) == set(r.own_auc) == {"booked", "arrived"}
    both = ph.compared_scan(files["sh-b"], world["held_out"])
    tested = [m for m in both.metas if both.split[m.index] == "test"]
    assert tested and all(m.conversation_id in world["held_out"] for m in tested)
    from datetime import datetime

    first_test = datetime.fromisoformat(glob[0]).timestamp()
    assert all(m.started_ts >= first_test for m in tested)


def test_kept_models_are_registered_under_hospital_aliases_and_dropped_when_no_longer_better(world):
    settings, results = world["settings"], world["results"]
    # the real margin: a hospital's model is kept exactly when the rule says so
    for r in results:
        kept, _ = ph.decide(
            r.global_auc, r.own_auc, r.n_compared, ph.MIN_GAIN, MIN_COMPARED, ci95=r.ci95, minority=r.minority
        )
        b = r.own_auc["booked"] - r.global_auc["booked"]
        oa, ga = r.own_auc["arrived"], r.global_auc["arrived"]
        ci, ca = r.ci95["booked"], r.ci95["arrived"]
        assert r.minority is not None and r.minority >= 0
        assert kept == (
            r.minority >= ph.MIN_MINORITY
            and b >= ph.MIN_GAIN
            and ci is not None
            and ci[0] > 0
            and (oa is None or ga is None or oa >= ga - ph.ARRIVED_TOLERANCE)
            and (ca is None or ca[1] >= 0)
        )

    # both kept (as if they had won; the rule is tested above): registered, aliased, tagged; the champion
    # stays global
    _, champion = registry.log_and_register(
        world["global"].model, world["global"].bundle_dir, {}, settings=settings
    )
    registry.promote(champion, settings)
    lines: list[str] = []
    for r in results:
        r.kept, r.why = True, "kept for this test"
    ph.register_results(results, settings, champion, min_chats=MIN_CHATS, echo=lines.append)
    versions = registry.hospital_versions(settings)
    assert set(versions) == {"hz-a", "sh-b"} and champion not in versions.values()
    assert registry.alias_version("hospital-sh-b", settings) == versions["sh-b"]
    listed = {v["version"]: v for v in registry.list_versions(settings)}
    assert (
        listed[versions["sh-b"]]["hospital"] == "sh-b"
        and "hospital-sh-b" in listed[versions["sh-b"]]["aliases"]
    )
    assert listed[champion]["hospital"] is None and listed[champion]["aliases"] == ["champion"]
    with pytest.raises(registry.RegistryError, match="only serve that hospital"):
        registry.promote(versions["hz-a"], settings)

    # `yuyue models list` says which version serves which hospital
    assert _models_list(settings, world["root"])[versions["sh-b"]].endswith("hospital sh-b")

    # promoting another global version moves the champion and leaves the hospitals' aliases
    _, newer = registry.log_and_register(
        world["global"].model, world["global"].bundle_dir, {}, settings=settings
    )
    registry.promote(newer, settings)
    assert registry.hospital_versions(settings) == versions

    # not kept by a later run: the compared hospitals lose their aliases (the champion serves them)
    for r in results:
        r.kept, r.why = False, "not kept for this test"
    lines.clear()
    ph.register_results(results, settings, newer, min_chats=MIN_CHATS, echo=lines.append)
    assert registry.hospital_versions(settings) == {}
    assert any("hospital-hz-a" in line and "removed" in line for line in lines)


def test_a_hospital_below_min_chats_loses_the_alias_of_an_earlier_run(tmp_path):
    """A hospital with an alias from an earlier run and now fewer than ``min_chats`` labelled chats (here
    nb-c) is not compared, so no comparison would ever drop its model: the run removes its alias, says so
    and logs it. A hospital absent from the data keeps its alias. No fit runs (``min_chats`` above every
    hospital), and the aliases are set on bare registered versions, to keep it cheap."""
    from mlflow import MlflowClient

    settings = Settings(var_dir=tmp_path / "var", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = write_hospitals(tmp_path / "chats.jsonl", (("hz-a", 40, 1, "default"), ("nb-c", 20, 3, "default")))
    client = MlflowClient(registry.configure(settings))
    client.create_registered_model(settings.model_name)
    before = {}
    for hospital in ("nb-c", "gone"):
        tags = {registry.HOSPITAL_TAG: hospital}
        before[hospital] = str(
            client.create_model_version(settings.model_name, str(tmp_path), tags=tags).version
        )
        registry.set_hospital_alias(hospital, before[hospital], settings)
    assert registry.hospital_versions(settings) == before

    lines: list[str] = []
    results = ph.train_per_hospital(
        data, settings, tmp_path / "no-global", None, min_chats=1000, echo=lines.append
    )
    assert results == [] and registry.hospital_versions(settings) == {"gone": before["gone"]}
    n = ph.split_hospitals(data, tmp_path / "split", 1000)[0]["nb-c"]
    assert [line for line in lines if "removed" in line] == [
        f"nb-c: alias hospital-nb-c (version {before['nb-c']}) removed: {n} labelled chats, fewer than 1000",
    ]
    run = client.search_runs(
        [client.get_experiment_by_name("yuyue").experiment_id],
        "tags.`yuyue.kind` = 'per-hospital comparison'",
    )[0]
    assert {k: v for k, v in run.data.metrics.items() if k.endswith(".retired")} == {
        "per_hospital.nb-c.retired": 1.0,
    }


def _models_list(settings: Settings, root: Path) -> dict[str, str]:
    from typer.testing import CliRunner

    from yuyue.cli.main import app
    from yuyue.config import get_settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YUYUE_VAR_DIR", str(settings.var_dir))
        mp.setenv("YUYUE_MLFLOW_TRACKING_URI", str(settings.mlflow_tracking_uri))
        get_settings.cache_clear()
        try:
            res = CliRunner().invoke(app, ["models", "list"])
        finally:
            get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    return {line.split()[0]: line for line in res.output.splitlines()[1:]}


def test_the_printed_table_names_every_hospital(world):
    lines = ph.table(world["results"], world["counts"], MIN_CHATS)
    assert lines[0].split()[:2] == ["hospital", "chats"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"hz-a", "sh-b", "nb-c"}
    assert f"fewer than {MIN_CHATS}" in rows["nb-c"]


@pytest.mark.slow
def test_ray_tasks_choose_what_the_sequential_path_chooses(world, monkeypatch):
    pytest.importorskip("ray")
    from yuyue.training.distributed import ray_session

    monkeypatch.setattr(scorers, "CANDIDATES", LOGREG_ONLY)  # the driver's candidates travel with each task
    with ray_session(num_cpus=2):
        on_ray = ph.fit_all(
            world["jobs"],
            world["global"].bundle_dir,
            world["held_out"],
            world["settings"],
            world["root"] / "own-ray",
            ray=True,
        )
    sequential = world["results"]
    assert [r.hospital for r in on_ray] == [r.hospital for r in sequential]
    for a, b in zip(on_ray, sequential, strict=True):
        assert (a.n_compared, a.global_auc) == (b.n_compared, b.global_auc)
        # same code, same chats, the same BLAS/OpenMP threads on both paths (fit_hospital limits them;
        # before, a Ray task's arrived AUC was once 0.0124 from the driver's loop)
        assert a.own_auc == pytest.approx(b.own_auc, abs=1e-9)
        assert a.minority == b.minority and a.ci95.keys() == b.ci95.keys()
        for t, ci in a.ci95.items():
            assert ci == b.ci95[t] if ci is None else ci == pytest.approx(b.ci95[t], abs=1e-9)
        assert ph.decide(
            a.global_auc, a.own_auc, a.n_compared, min_compared=MIN_COMPARED, ci95=a.ci95
        ) == ph.decide(b.global_auc, b.own_auc, b.n_compared, min_compared=MIN_COMPARED, ci95=b.ci95)


def test_cli_takes_per_hospital_from_the_store(tmp_path, monkeypatch):
    """``--per-hospital`` goes with ``--from-store`` too (the export is its data): an empty store is said."""
    from typer.testing import CliRunner

    from yuyue.cli.main import app
    from yuyue.config import get_settings

    monkeypatch.setenv("YUYUE_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    try:
        url = f"sqlite:///{tmp_path / 'store.db'}"
        res = CliRunner().invoke(app, ["train", "--from-store", "--url", url, "--per-hospital"])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 1 and "the event store has no chats" in res.output, res.output


def test_departments_get_their_own_models_by_the_same_pipeline(world, tmp_path):
    """``--per-department``: the chats grouped by department across hospitals, the biggest department's
    own model fitted and compared as a hospital's is, then registered under a ``department-*`` alias
    (tagged, shown by ``yuyue models list``, kept apart from the hospitals' aliases) and dropped when a
    later run does not keep it; the comparison is logged as a per-department run."""
    from mlflow import MlflowClient

    from yuyue.data.io import read_conversations

    settings = world["settings"].model_copy(
        update={"var_dir": tmp_path / "var", "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    )
    counts, files, held_out = ph.split_hospitals(
        world["data"], tmp_path / "split", MIN_CHATS, kind="department"
    )
    labelled = [
        c for c in read_conversations(world["data"]) if c.outcome is not None and c.outcome.booked is not None
    ]
    assert sum(counts.values()) == len(labelled) and len(counts) >= 3
    assert set(files) == {d for d, n in counts.items() if n >= MIN_CHATS}
    biggest = max(files, key=lambda d: counts[d])
    assert {c.department for c in read_conversations(files[biggest])} == {biggest}
    assert held_out == world["held_out"]  # the global test split does not depend on the grouping

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scorers, "CANDIDATES", LOGREG_ONLY)
        (result,) = ph.fit_all(
            [(biggest, files[biggest], counts[biggest])],
            world["global"].bundle_dir,
            held_out,
            settings,
            tmp_path / "own",
            kind="department",
        )
    # compared on its held-out chats (16 here: too few for an AUC when they hold one outcome only)
    assert (
        result.kind == "department" and result.n_compared > 0 and set(result.own_auc) == {"booked", "arrived"}
    )
    _, champion = registry.log_and_register(
        world["global"].model, world["global"].bundle_dir, {}, settings=settings
    )
    registry.promote(champion, settings)
    result.kept, result.why = True, "kept for this test"
    lines: list[str] = []
    ph.register_results([result], settings, champion, echo=lines.append, counts=counts, kind="department")
    versions = registry.segment_versions("department", settings)
    assert versions == {biggest: result.version} and registry.hospital_versions(settings) == {}
    alias = registry.segment_alias("department", biggest)
    assert lines == [f"{biggest}: registered version {result.version} as {alias}"]
    assert registry.version_tags(result.version, settings)[registry.DEPARTMENT_TAG] == biggest
    assert _models_list(settings, tmp_path)[result.version].endswith(f"department {biggest}")
    table = ph.table([result], counts, MIN_CHATS, "department")
    assert table[0].split()[0] == "department" and any(line.startswith(biggest) for line in table)

    result.kept = False
    ph.register_results([result], settings, champion, echo=lines.append, counts=counts, kind="department")
    assert registry.segment_versions("department", settings) == {}
    client = MlflowClient(registry.configure(settings))
    runs = client.search_runs(
        [client.get_experiment_by_name("yuyue").experiment_id],
        "tags.`yuyue.kind` = 'per-department comparison'",
    )
    assert len(runs) == 2 and all(
        f"per_department.{registry.hospital_slug(biggest)}.kept" in r.data.metrics for r in runs
    )
