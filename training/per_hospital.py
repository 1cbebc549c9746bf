"""``yuyue train --per-hospital``: a hospital's own model where it has the data and beats the global one.

``--per-department`` runs the same pipeline with the chats grouped by department across hospitals
(``kind="department"``: alias ``department-<slug>``, tag ``yuyue.department``). At serve time a chat's
hospital's own model comes first (the tenant's own data), then its department's, then the champion
(``serving.service.ModelHolder.model_for``); back-scoring follows the same order.

The global model is trained as ever, on every chat. Then each hospital with at least ``min_chats``
labelled chats gets a model trained on its chats alone, by the same pipeline (:func:`training.train.train`
on a file of that hospital's chats, so the same time split rule, scorer choice and calibration). The two
are compared on the hospital's chats that neither saw: those in the test split (the latest chats) of
both the hospital's split and the global split; ``train`` folds validation and calibration chats into
its final fit, so the test split is the only one left unseen. The hospital's model is kept when its
booked AUC beats the global model's by at least :data:`MIN_GAIN`, the 95 % paired bootstrap interval
of that gain over the compared chats (training/compare.py) lies wholly above zero, and its arrived AUC
is neither lower by more than :data:`ARRIVED_TOLERANCE` nor clearly lower (interval wholly below zero);
otherwise the hospital is served by the global champion. With a few hundred held-out chats and a few
dozen bookings one AUC moves by ±0.05 from chance alone (bench/bench_per_hospital.py), so a point
estimate alone would keep a model that is merely lucky on these chats; fewer than
:data:`MIN_MINORITY` chats of the rarer booked outcome decide nothing.

Registry (training/registry.py): a kept model is a version of the same registered model, tagged
``yuyue.hospital`` and pointed at by the alias ``hospital-<slug>``; the server (serving/state.py)
loads the champion plus every ``hospital-*`` alias and scores a chat with its hospital's model when
there is one. One registered name (rather than one per hospital) keeps version numbers unique, so
the ``model_version`` stored with a chat names the model that scored it and ``registry.load`` reaches
every model alike. A hospital compared in this run and not kept loses its alias (its new own model
did not beat a global model trained on the same data); so does a hospital in the data with an alias
and now fewer than ``min_chats`` labelled chats (not compared: its model can no longer be checked),
which is printed and logged. A hospital absent from the data keeps its alias.

With ``--ray`` the per-hospital fits run as Ray tasks, one per hospital (``cpus_per_task`` each), on
the Ray instance training/distributed.py starts; without it, one after the other. Each task reads its
hospital's file and the global bundle from disk (a local instance, or a cluster sharing the var
directory), and the driver registers what the tasks kept. Chats without a hospital code only train the
global model.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from yuyue.config import Settings
from yuyue.data.contract import Conversation
from yuyue.data.io import SkipReport
from yuyue.training.dataset import DatasetScan, meta_of, scan, split_by_time

log = logging.getLogger(__name__)

MIN_CHATS = 2000  # labelled chats a hospital needs before its own model is tried
MIN_GAIN = 0.005  # booked AUC its own model must gain over the global one on its held-out chats
ARRIVED_TOLERANCE = 0.01  # arrived AUC it may lose meanwhile
MIN_COMPARED = 50  # held-out labelled chats below which no comparison decides anything
MIN_MINORITY = 10  # held-out chats of the rarer booked outcome (booked or not) the comparison needs
TARGETS = ("booked", "arrived")


@dataclass
class HospitalResult:
    """One hospital: its chats, both models' AUCs on its held-out chats, and whether its own was kept."""

    hospital: str
    n_labelled: int
    n_compared: int = 0
    global_auc: dict[str, float | None] = field(default_factory=dict)
    own_auc: dict[str, float | None] = field(default_factory=dict)
    # own − global AUC: 95 % paired bootstrap interval over the compared chats (None: not computable)
    ci95: dict[str, list[float] | None] = field(default_factory=dict)
    minority: int | None = None  # compared chats of the rarer booked outcome
    kept: bool = False
    why: str = ""
    bundle_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # the own model's metrics on its test split
    info: dict[str, Any] = field(default_factory=dict)  # the own model's info (what it trained)
    fit_seconds: float = 0.0
    version: str | None = None
    kind: str = "hospital"  # or "department": then ``hospital`` holds the department's name


def _read(data: Path) -> Iterator[Conversation]:
    """Every valid chat of a file or a folder of shards, in order (as ``train`` / ``train --ray`` read it)."""
    from yuyue.training.distributed import list_shards, read_shard

    for shard in list_shards(data):
        yield from read_shard(shard)


def split_hospitals(
    data: str | Path,
    out_dir: Path,
    min_chats: int = MIN_CHATS,
    read: Callable[[Path], Iterable[Conversation]] | None = None,
    kind: str = "hospital",
) -> tuple[dict[str, int], dict[str, Path], set[str]]:
    """Labelled chats per hospital, a file of each big-enough hospital's chats, and the global test ids.

    Two passes: the first counts (and takes the global time split, the same as ``train``'s), the second
    writes the files (chats in the file's order, so each file's own time split is ``train``'s rule).
    ``read``: how ``data`` is read (``RayBackend.read`` for the store's ranges); default a file or folder.
    ``kind="department"`` groups by the chats' department instead.
    """
    from yuyue.training.registry import SEGMENTS, hospital_slug

    if kind not in SEGMENTS:  # each kind is also a Conversation field
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(SEGMENTS)}")
    data = Path(data)
    read = read or _read
    counts: dict[str, int] = {}
    metas = []
    for i, conv in enumerate(read(data)):
        metas.append(meta_of(i, conv))
        code = getattr(conv, kind)
        if code and conv.outcome is not None and conv.outcome.booked is not None:
            counts[code] = counts.get(code, 0) + 1
    full = split_by_time(DatasetScan(data, metas, SkipReport()))
    held_out = {m.conversation_id for m in full.metas if full.split[m.index] == "test"}

    big = sorted(h for h, n in counts.items() if n >= min_chats)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {h: out_dir / f"{hospital_slug(h)}.jsonl" for h in big}
    handles = {h: files[h].open("wb") for h in big}
    try:
        for conv in read(data):
            fh = handles.get(getattr(conv, kind) or "")
            if fh is not None:
                fh.write(orjson.dumps(conv.to_record()) + b"\n")
    finally:
        for fh in handles.values():
            fh.close()
    return counts, files, held_out


def compared_scan(path: Path, held_out: set[str]) -> DatasetScan:
    """``path``'s scan with only the chats held out from both models (hospital test ∩ global test) as test."""
    own = split_by_time(scan(path))
    own.split = {
        m.index: "test" if own.split[m.index] == "test" and m.conversation_id in held_out else "fitted"
        for m in own.metas
    }
    return own


def decide(
    global_auc: dict[str, float | None],
    own_auc: dict[str, float | None],
    n_compared: int,
    min_gain: float = MIN_GAIN,
    min_compared: int = MIN_COMPARED,
    *,
    ci95: dict[str, list[float] | None] | None = None,
    minority: int | None = None,
) -> tuple[bool, str]:
    """Keep the hospital's own model? (and why, in words).

    ``ci95`` (own − global, per target) and ``minority`` come from :func:`fit_hospital`; without them
    only the point estimates are read (the margins alone)."""
    g, o = global_auc.get("booked"), own_auc.get("booked")
    if n_compared < min_compared or g is None or o is None:
        return False, f"{n_compared} held-out chats with outcomes: too few to compare (need {min_compared})"
    if minority is not None and minority < MIN_MINORITY:
        return False, (
            f"{minority} held-out chats of the rarer booked outcome: too few to compare (need {MIN_MINORITY})"
        )
    if o < g + min_gain:
        return False, f"booked AUC {o - g:+.4f} vs the global model (needs {min_gain:+.4f})"
    gain = f"booked AUC {o - g:+.4f}"
    if ci95 is not None:
        ci = ci95.get("booked")
        if ci is None:
            return False, f"{gain}, but its bootstrap interval could not be computed on these chats"
        gain += f" [{ci[0]:+.4f}, {ci[1]:+.4f}]"
        if ci[0] <= 0:
            return False, f"{gain}: not shown better (the 95 % interval includes 0)"
    ga, oa = global_auc.get("arrived"), own_auc.get("arrived")
    if ga is not None and oa is not None and oa < ga - ARRIVED_TOLERANCE:
        return False, f"{gain} but arrived AUC {oa - ga:+.4f} (may lose {ARRIVED_TOLERANCE})"
    ca = (ci95 or {}).get("arrived")
    if ga is not None and oa is not None and ca is not None and ca[1] < 0:
        return False, f"{gain} but arrived AUC {oa - ga:+.4f} [{ca[0]:+.4f}, {ca[1]:+.4f}]: clearly lower"
    return True, f"{gain} vs the global model"


def fit_hospital(
    hospital: str,
    path: Path,
    n_labelled: int,
    global_bundle: Path,
    held_out: set[str],
    settings: Settings,
    out_dir: Path,
    workers: int = 1,
    candidates: dict[str, dict] | None = None,
    kind: str = "hospital",
) -> HospitalResult:
    """Train ``hospital``'s own model on ``path`` and compare it with the global bundle (one Ray task).

    ``candidates``: the scorer families to try (the driver's ``scorers.CANDIDATES``, so that a Ray
    worker process tries what the global model tried). BLAS and OpenMP use ``workers`` threads on both
    paths, so a Ray task and the sequential loop fit the same numbers (a solver's sums depend on the
    thread count)."""
    from threadpoolctl import threadpool_limits

    from yuyue.models.bundle import YuyueModel
    from yuyue.training import scorers
    from yuyue.training.compare import compare
    from yuyue.training.evaluate import evaluate, public
    from yuyue.training.train import train

    with threadpool_limits(limits=workers):  # a Ray task and the driver's loop: the same threads
        t = time.perf_counter()
        before = scorers.CANDIDATES
        scorers.CANDIDATES = candidates or before
        try:
            own = train(path, settings=settings, out_dir=out_dir, workers=workers, echo=lambda _: None)
        finally:
            scorers.CANDIDATES = before
        fit_seconds = time.perf_counter() - t
        both = compared_scan(path, held_out)
        out = HospitalResult(
            hospital, n_labelled, bundle_dir=out_dir, metrics=own.metrics, info=own.model.info, kind=kind
        )
        out.n_compared = sum(1 for m in both.metas if both.split[m.index] == "test" and m.booked is not None)
        full = {}
        for name, model in (("global", YuyueModel.load(global_bundle)), ("own", own.model)):
            full[name] = evaluate(model, path, scan_=both, split="test", workers=workers)
            m = public(full[name])
            getattr(out, f"{name}_auc").update({t: m.get(f"{t}.auc") for t in TARGETS})
        paired = compare(full["own"], full["global"], labels=("own", "global"))["metrics"]
        out.ci95 = {t: paired.get(f"{t}.auc", {}).get("ci95") for t in TARGETS}
        booked = [m.booked for m in both.metas if both.split[m.index] == "test" and m.booked is not None]
        out.minority = min(sum(booked), len(booked) - sum(booked))
    out.fit_seconds = round(fit_seconds, 1)
    return out


def fit_all(
    jobs: list[tuple[str, Path, int]],
    global_bundle: Path,
    held_out: set[str],
    settings: Settings,
    out_root: Path,
    *,
    ray: bool = False,
    cpus_per_task: int = 1,
    kind: str = "hospital",
) -> list[HospitalResult]:
    """:func:`fit_hospital` of each (hospital, file, labelled chats): Ray tasks with ``ray`` (Ray already
    started, see ``distributed.ray_session``), else one after the other; results in ``jobs``' order."""
    from yuyue.training import scorers
    from yuyue.training.registry import hospital_slug

    args = [
        (
            h,
            p,
            n,
            global_bundle,
            held_out,
            settings,
            out_root / hospital_slug(h),
            cpus_per_task,
            scorers.CANDIDATES,
            kind,
        )
        for h, p, n in jobs
    ]
    if not ray:
        return [fit_hospital(*a) for a in args]
    import ray as ray_

    from yuyue.training.distributed import gather

    cpus = ray_.cluster_resources().get("CPU", 0)
    if cpus < cpus_per_task:  # the tasks would wait for ever
        raise ValueError(f"--cpus-per-task {cpus_per_task}: the Ray cluster has {cpus:g} CPUs")

    held = ray_.put(held_out)  # one copy in the object store, not one per task
    task = ray_.remote(fit_hospital).options(num_cpus=cpus_per_task)
    return gather([functools.partial(task.remote, *a[:4], held, *a[5:]) for a in args])


def train_per_hospital(
    data: str | Path,
    settings: Settings,
    global_bundle: Path,
    global_version: str | None,
    *,
    min_chats: int = MIN_CHATS,
    min_gain: float = MIN_GAIN,
    min_compared: int = MIN_COMPARED,
    ray: bool = False,
    cpus_per_task: int = 1,
    experiment: str = "yuyue",
    tracking_uri: str | None = None,
    register: bool = True,
    echo: Callable[[str], None] = print,
    read: Callable[[Path], Iterable[Conversation]] | None = None,
    kind: str = "hospital",
) -> list[HospitalResult]:
    """Compare every big-enough hospital's own model with the global one; register and alias the kept ones.
    ``kind="department"``: the same per department (``train --per-department``; alias ``department-*``).

    Every compared hospital is logged (one MLflow run per call, ``per_hospital.*`` metrics and a JSON
    table) and printed as a table; too-small hospitals are listed with their counts, and those with an
    alias from an earlier run lose it (:func:`retire_small`).
    """
    out_root = settings.var_dir / "models" / f"per_{kind}"
    t = time.perf_counter()
    counts, files, held_out = split_hospitals(data, out_root / "data", min_chats, read, kind)
    small = sorted(h for h in counts if h not in files)
    plural = {"hospital": "hospitals", "department": "departments"}[kind]
    echo(
        f"per {kind}: {len(counts)} {plural} with outcomes; {len(files)} with ≥ {min_chats} labelled chats"
        + (f", too few: {', '.join(f'{h} ({counts[h]})' for h in small)}" if small else "")
    )
    jobs = [(h, files[h], counts[h]) for h in sorted(files)]
    results = fit_all(
        jobs, global_bundle, held_out, settings, out_root, ray=ray, cpus_per_task=cpus_per_task, kind=kind
    )
    seconds = round(time.perf_counter() - t, 1)
    for r in results:
        r.kept, r.why = decide(
            r.global_auc, r.own_auc, r.n_compared, min_gain, min_compared, ci95=r.ci95, minority=r.minority
        )
    for line in table(results, counts, min_chats, kind):
        echo(line)
    echo(f"per-{kind} fits: {seconds}s ({'Ray tasks' if ray else 'one after the other'})")
    if register:
        register_results(
            results,
            settings,
            global_version,
            experiment,
            tracking_uri,
            min_chats,
            min_gain,
            seconds,
            echo,
            counts=counts,
            kind=kind,
        )
    return results


def table(
    results: list[HospitalResult], counts: dict[str, int], min_chats: int, kind: str = "hospital"
) -> list[str]:
    """The printed comparison: hospital (or department), labelled chats, held-out chats, both AUCs per
    target, kept."""

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    lines = [
        f"{kind:<20}{'chats':>7}{'held-out':>9}{'global booked':>14}{'own booked':>11}"
        f"{'global arrived':>15}{'own arrived':>12}  kept"
    ]
    done = {r.hospital for r in results}
    for r in results:
        lines.append(
            f"{r.hospital:<20}{r.n_labelled:>7}{r.n_compared:>9}{f(r.global_auc.get('booked')):>14}"
            f"{f(r.own_auc.get('booked')):>11}{f(r.global_auc.get('arrived')):>15}"
            f"{f(r.own_auc.get('arrived')):>12}  {'yes' if r.kept else 'no'}: {r.why}"
        )
    for h in sorted(set(counts) - done):
        lines.append(
            f"{h:<20}{counts[h]:>7}{'':>9}{'':>14}{'':>11}{'':>15}{'':>12}  no: fewer than {min_chats}"
        )
    return lines


def register_results(
    results: list[HospitalResult],
    settings: Settings,
    global_version: str | None,
    experiment: str = "yuyue",
    tracking_uri: str | None = None,
    min_chats: int = MIN_CHATS,
    min_gain: float = MIN_GAIN,
    seconds: float = 0.0,
    echo: Callable[[str], None] = print,
    counts: dict[str, int] | None = None,
    kind: str = "hospital",
) -> None:
    """Register and alias the kept models, remove the aliases of the compared hospitals not kept and of
    the hospitals not compared (fewer than ``min_chats`` labelled chats in ``counts``, this run's data),
    and log the comparison (one MLflow run: ``per_hospital.<slug>.*`` metrics and ``per_hospital.json``)."""
    from yuyue.training import registry

    for r in results:
        if r.kept:
            _register_kept(r, settings, global_version, experiment, tracking_uri, min_gain)
            alias = registry.segment_alias(kind, r.hospital)
            echo(f"{r.hospital}: registered version {r.version} as {alias}")
        else:
            before = registry.remove_segment_alias(kind, r.hospital, settings, tracking_uri)
            if before is not None:
                echo(
                    f"{r.hospital}: alias {registry.segment_alias(kind, r.hospital)} (version {before}) removed"
                )
    retired = retire_small(
        {r.hospital for r in results}, counts or {}, min_chats, settings, tracking_uri, echo, kind
    )
    _log_comparison(
        results,
        retired,
        settings,
        global_version,
        experiment,
        tracking_uri,
        min_chats,
        min_gain,
        seconds,
        kind,
    )


def _register_kept(
    r: HospitalResult,
    settings: Settings,
    global_version: str | None,
    experiment: str,
    tracking_uri: str | None,
    min_gain: float,
) -> None:
    """Register ``r``'s bundle (tagged with its hospital) and point the hospital's alias at it."""
    from yuyue.training import registry

    assert r.bundle_dir is not None
    compare = {
        f"compare.{who}_{t}_auc": v
        for who, aucs in (("global", r.global_auc), ("own", r.own_auc))
        for t, v in aucs.items()
        if v is not None
    }
    _, r.version = registry.log_and_register(
        None,  # type: ignore[arg-type]  # the bundle on disk is what gets logged
        r.bundle_dir,
        {**r.metrics, **compare, "compare.n_chats": r.n_compared},
        params={r.kind: r.hospital, "global_version": global_version, "min_gain": min_gain},
        experiment=experiment,
        settings=settings,
        tracking_uri=tracking_uri,
        tags={
            registry.SEGMENTS[r.kind][1]: r.hospital,
            "yuyue.global_version": global_version or "not registered",
            "data.n_labelled": r.n_labelled,
        },
    )
    assert r.version is not None
    registry.set_segment_alias(r.kind, r.hospital, r.version, settings, tracking_uri)


def retire_small(
    compared: set[str],
    counts: dict[str, int],
    min_chats: int,
    settings: Settings,
    tracking_uri: str | None = None,
    echo: Callable[[str], None] = print,
    kind: str = "hospital",
) -> dict[str, str]:
    """Remove the ``hospital-*`` (``department-*``) alias of every hospital in the data but not in ``compared``: it had its
    own model, but this run's data holds fewer than ``min_chats`` of its labelled chats (``counts``), so
    its model can no longer be checked against the global one and the champion serves it. A hospital
    absent from the data keeps its alias (an export of some hospitals, or ``--since``, says nothing about
    the others). Returns hospital -> the version its alias pointed at (logged and echoed)."""
    from yuyue.training import registry

    retired: dict[str, str] = {}
    for hospital in sorted(
        (set(registry.segment_versions(kind, settings, tracking_uri)) & set(counts)) - compared
    ):
        before = registry.remove_segment_alias(kind, hospital, settings, tracking_uri)
        if before is None:
            continue
        retired[hospital] = before
        line = (
            f"{hospital}: alias {registry.segment_alias(kind, hospital)} (version {before}) removed: "
            f"{counts.get(hospital, 0)} labelled chats, fewer than {min_chats}"
        )
        log.info(line)
        echo(line)
    return retired


def _log_comparison(
    results: list[HospitalResult],
    retired: dict[str, str],
    settings: Settings,
    global_version: str | None,
    experiment: str,
    tracking_uri: str | None,
    min_chats: int,
    min_gain: float,
    seconds: float,
    kind: str = "hospital",
) -> None:
    """One MLflow run: ``per_hospital.<slug>.*`` (``per_department.*``) metrics (``.retired`` = 1 for a hospital whose alias
    :func:`retire_small` removed) and ``per_hospital.json`` (the compared hospitals)."""
    import json
    import tempfile

    import mlflow

    from yuyue.training import registry

    registry.configure(settings, tracking_uri)
    exp_id = registry._experiment(experiment, settings)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"per-{kind} comparison"):
        mlflow.set_tag("yuyue.kind", f"per-{kind} comparison")
        mlflow.log_params(
            {
                "global_version": global_version,
                "min_chats": min_chats,
                "min_gain": min_gain,
                f"n_{kind}s": len(results),
            }
        )
        metrics: dict[str, float] = {f"per_{kind}.seconds": seconds}
        for r in results:
            key = f"per_{kind}.{registry.hospital_slug(r.hospital)}"
            metrics[f"{key}.n_chats"] = r.n_compared
            metrics[f"{key}.kept"] = float(r.kept)
            for t, ci in r.ci95.items():
                if ci is not None:
                    metrics.update({f"{key}.{t}_auc_gain_lo": ci[0], f"{key}.{t}_auc_gain_hi": ci[1]})
            for who, aucs in (("global", r.global_auc), ("own", r.own_auc)):
                metrics.update({f"{key}.{who}_{t}_auc": v for t, v in aucs.items() if v is not None})
        metrics.update({f"per_{kind}.{registry.hospital_slug(h)}.retired": 1.0 for h in retired})
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"per_{kind}.json"
            rows = [
                {
                    kind: r.hospital,
                    "n_labelled": r.n_labelled,
                    "n_compared": r.n_compared,
                    "global_auc": r.global_auc,
                    "own_auc": r.own_auc,
                    "auc_gain_ci95": r.ci95,
                    "minority": r.minority,
                    "kept": r.kept,
                    "why": r.why,
                    "version": r.version,
                    "fit_seconds": r.fit_seconds,
                }
                for r in results
            ]
            path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
            mlflow.log_artifact(str(path))


__all__ = [
    "HospitalResult",
    "MIN_CHATS",
    "MIN_GAIN",
    "decide",
    "fit_all",
    "fit_hospital",
    "register_results",
    "retire_small",
    "split_hospitals",
    "train_per_hospital",
]
