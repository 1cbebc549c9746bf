"""MLflow tracking and registry: log a trained bundle, register it, list, promote, load.

The default store is local (SQLite under the var directory, artifacts beside it);
any tracking URI MLflow accepts can be given instead. Promotion moves the
``champion`` alias; serving loads ``models:/NAME@champion``.

Per-hospital models (training/per_hospital.py) are versions of the same registered model, tagged
``yuyue.hospital`` with the hospital's code and pointed at by the alias ``hospital-<slug>``
(:func:`hospital_alias`). One registered name keeps version numbers unique across global and
per-hospital models, so the ``model_version`` stored with a scored chat names one model whichever
served it, and :func:`load` / ``yuyue evaluate --model N`` reach every model the same way. Moving
``champion`` leaves the ``hospital-*`` aliases where they are; a per-hospital version cannot become
champion (:func:`promote` refuses it).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from yuyue.config import Settings, get_settings  # noqa: E402
from yuyue.models.bundle import YuyueModel  # noqa: E402
from yuyue.models.mlflow_model import ENTRY, code_tree, load_from_registry, pinned_requirements  # noqa: E402

CHAMPION = "champion"
HOSPITAL_ALIAS_PREFIX = "hospital-"
HOSPITAL_TAG = "yuyue.hospital"  # on a per-hospital version: the hospital code it serves
DEPARTMENT_TAG = "yuyue.department"  # on a per-department version: the department it serves
# a segment's own model (training/per_hospital.py): its kind's alias prefix and version tag
SEGMENTS = {"hospital": (HOSPITAL_ALIAS_PREFIX, HOSPITAL_TAG), "department": ("department-", DEPARTMENT_TAG)}


class RegistryError(RuntimeError):
    """A registry operation could not be done (named in the message)."""


def configure(settings: Settings | None = None, tracking_uri: str | None = None) -> str:
    """Point MLflow at the configured store (creating the var directory for the local default)."""
    settings = settings or get_settings()
    uri = tracking_uri or settings.resolved_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _quiet_mlflow_warnings()
    return uri


def _quiet_mlflow_warnings() -> None:
    """Hide the deprecation notices MLflow's own code triggers in its dependencies (nothing we can fix):
    SQLAlchemy's ``noload`` in its tracking store, pandas 3's ``columns == range`` in its input example
    check. Filtered by category and by the MLflow module they come from, nothing wider."""
    from sqlalchemy.exc import SADeprecationWarning

    warnings.filterwarnings("ignore", category=SADeprecationWarning, module=r"mlflow\.store\.")
    pandas4 = getattr(pd.errors, "Pandas4Warning", None)
    if pandas4 is not None:
        warnings.filterwarnings("ignore", category=pandas4, module=r"mlflow\.models\.utils")


def _experiment(name: str, settings: Settings) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = (settings.var_dir / "mlartifacts").resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(name, artifact_location=artifacts.as_uri())


def plot_curves(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    """ROC, calibration, AUC by visitor turn and lift plots for each scored target."""
    paths = []
    for target in ("booked", "arrived"):
        curves = metrics.get("_curves." + target)
        if not curves:
            continue
        y, p = curves["y"], curves["p"]
        fig, axes = plt.subplots(1, 4, figsize=(18, 4))
        fpr, tpr, _ = roc_curve(y, p)
        axes[0].plot(fpr, tpr, label=f"AUC {metrics.get(target + '.auc')}")
        axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
        axes[0].set(
            title=f"{target}: ROC (closed chats)", xlabel="false positive rate", ylabel="true positive rate"
        )
        axes[0].legend(loc="lower right")
        frac, mean = calibration_curve(y, p, n_bins=10, strategy="quantile")
        axes[1].plot(mean, frac, "o-", label=f"ECE {metrics.get(target + '.ece')}")
        axes[1].plot([0, 1], [0, 1], "k:", lw=0.8)
        axes[1].set(title=f"{target}: calibration", xlabel="predicted", ylabel="observed")
        axes[1].legend(loc="upper left")
        turns = metrics.get(target + ".auc_by_visitor_turn", {})
        ks = [k for k, v in turns.items() if v is not None]
        axes[2].plot([int(k) for k in ks], [turns[k] for k in ks], "o-")
        axes[2].set(title=f"{target}: AUC by visitor turn", xlabel="visitor messages so far", ylabel="AUC")
        order = np.argsort(-p)
        cum = np.cumsum(y[order]) / max(1, y.sum())
        axes[3].plot(np.arange(1, len(y) + 1) / len(y), cum, label="model")
        axes[3].plot([0, 1], [0, 1], "k:", lw=0.8, label="random")
        axes[3].set(title=f"{target}: cumulative gain", xlabel="share of chats", ylabel=f"share of {target}")
        axes[3].legend(loc="lower right")
        fig.tight_layout()
        path = out_dir / f"{target}_curves.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    flat = {}
    for k, v in metrics.items():
        if k.startswith("_"):
            continue
        if isinstance(v, dict):
            for kk, vv in v.items():
                if isinstance(vv, int | float):
                    flat[f"{k}.{kk}"] = float(vv)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            flat[k] = float(v)
    return {k.replace("@", "_at_"): v for k, v in flat.items()}


def log_and_register(
    model: YuyueModel,
    bundle_dir: Path,
    metrics: dict[str, Any],
    *,
    params: dict[str, Any] | None = None,
    experiment: str = "yuyue",
    settings: Settings | None = None,
    tracking_uri: str | None = None,
    register: bool = True,
    tags: dict[str, Any] | None = None,
) -> tuple[str, str | None]:
    """Log params, metrics, plots and the bundle to one MLflow run; register a version. Returns (run id, version).

    ``tags`` (e.g. the data it saw: ``data.source``, ``data.n_chats``, ``data.sha256`` …) go on the run
    and on the registered version."""
    settings = settings or get_settings()
    uri = configure(settings, tracking_uri)
    exp_id = _experiment(experiment, settings)
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in (params or {}).items()})
        if tags:
            mlflow.set_tags({k: str(v)[:5000] for k, v in tags.items()})
        mlflow.log_metrics(_flat_metrics(metrics))
        with tempfile.TemporaryDirectory() as tmp:
            for path in plot_curves(metrics, Path(tmp)):
                mlflow.log_artifact(str(path), artifact_path="plots")
            report = Path(tmp) / "metrics.json"
            report.write_text(json.dumps(_public(metrics), ensure_ascii=False, indent=2), encoding="utf-8")
            mlflow.log_artifact(str(report))
            example = pd.DataFrame({"conversation": [json.dumps(_example_record(), ensure_ascii=False)]})
            signature = infer_signature(example, pd.DataFrame({"booked": [0.1], "arrived": [0.05]}))
            # the model as code (no pickled wrapper) with Yuyue's package beside it and the lock's exact
            # pins: `mlflow models serve -m models:/NAME@champion` works where yuyue is not installed
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(ENTRY),
                artifacts={"bundle": str(bundle_dir)},
                code_paths=[str(code_tree(Path(tmp) / "code"))],
                pip_requirements=pinned_requirements(),
                signature=signature,
                input_example=example,
                registered_model_name=settings.model_name if register else None,
            )
        version = str(info.registered_model_version) if register and info.registered_model_version else None
    if version and tags:
        set_version_tags(version, tags, settings, uri)
    return run.info.run_id, version


def set_version_tags(
    version: str, tags: dict[str, Any], settings: Settings | None = None, tracking_uri: str | None = None
) -> None:
    """Set tags on a registered version (the data it saw, a promotion's who / when / why)."""
    settings = settings or get_settings()
    client = MlflowClient(configure(settings, tracking_uri))
    for k, v in tags.items():
        client.set_model_version_tag(settings.model_name, str(version), k, str(v)[:5000])


def version_tags(
    version: str, settings: Settings | None = None, tracking_uri: str | None = None
) -> dict[str, str]:
    """The tags of a registered version ({} when it has none)."""
    settings = settings or get_settings()
    client = MlflowClient(configure(settings, tracking_uri))
    try:
        return dict(client.get_model_version(settings.model_name, str(version)).tags or {})
    except MlflowException:
        raise RegistryError(f"model {settings.model_name!r} has no version {version!r}") from None


def _public(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def _example_record() -> dict[str, Any]:
    return {
        "conversation_id": "example",
        "started_at": "2025-03-05T14:02:11+08:00",
        "department": "整形美容",
        "visit": {"engine": "baidu", "keyword": "隆鼻多少钱", "region": "浙江省杭州市", "device": "mobile"},
        "messages": [
            {"at": "2025-03-05T14:02:11+08:00", "role": "visitor", "text": "你好，隆鼻多少钱"},
            {"at": "2025-03-05T14:02:30+08:00", "role": "consultant", "text": "您好，请问怎么称呼？"},
        ],
    }


def list_versions(settings: Settings | None = None, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Registered versions, newest first, with aliases and headline metrics."""
    settings = settings or get_settings()
    uri = configure(settings, tracking_uri)
    client = MlflowClient(uri)
    try:
        versions = client.search_model_versions(f"name='{settings.model_name}'")
    except MlflowException:
        return []
    if not versions:
        return []
    # search results do not carry aliases in every store; the registered model does
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(settings.model_name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    out = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        run = client.get_run(v.run_id) if v.run_id else None
        m = run.data.metrics if run else {}
        out.append(
            {
                "version": str(v.version),
                "aliases": sorted(aliases.get(str(v.version), [])),
                "created": v.creation_timestamp,
                "run_id": v.run_id,
                "booked.auc": m.get("booked.auc"),
                "booked.ece": m.get("booked.ece"),
                "arrived.auc": m.get("arrived.auc"),
                "reply.r10_at_1": m.get("reply.r10_at_1"),
                "stage.macro_f1": m.get("stage.macro_f1"),
                "hospital": (v.tags or {}).get(HOSPITAL_TAG),
                "department": (v.tags or {}).get(DEPARTMENT_TAG),
                "tags": dict(v.tags or {}),
            }
        )
    return out


def promote(
    version: str, settings: Settings | None = None, tracking_uri: str | None = None, alias: str = CHAMPION
) -> None:
    """Point ``alias`` (default ``champion``) at ``version``."""
    settings = settings or get_settings()
    uri = configure(settings, tracking_uri)
    client = MlflowClient(uri)
    try:
        found = client.get_model_version(settings.model_name, str(version))
    except MlflowException:
        known = [v["version"] for v in list_versions(settings, tracking_uri)]
        raise RegistryError(
            f"model {settings.model_name!r} has no version {version!r} (registered: {', '.join(known) or 'none'})"
        ) from None
    for kind, (_, tag) in SEGMENTS.items():
        code = (found.tags or {}).get(tag)
        if code is not None and alias != segment_alias(kind, code):
            raise RegistryError(
                f"version {version} is {kind} {code!r}'s own model (trained on its chats only): it can only "
                f"serve that {kind} (alias {segment_alias(kind, code)!r}), not be {alias!r}"
            )
    client.set_registered_model_alias(settings.model_name, alias, str(version))


def load(
    ref: str = CHAMPION, settings: Settings | None = None, tracking_uri: str | None = None
) -> tuple[YuyueModel, str]:
    """The bundle registered as ``ref`` (an alias or a version number) and its version."""
    settings = settings or get_settings()
    uri = configure(settings, tracking_uri)
    try:
        return load_from_registry(uri, settings.model_name, ref)
    except MlflowException as exc:
        raise RegistryError(f"cannot load model {settings.model_name!r} {ref!r}: {exc.message}") from None


def alias_version(
    alias: str = CHAMPION, settings: Settings | None = None, tracking_uri: str | None = None
) -> str | None:
    """The version ``alias`` points at, or None when it is not set (a cheap check for the server's poller)."""
    settings = settings or get_settings()
    uri = configure(settings, tracking_uri)
    try:
        return str(MlflowClient(uri).get_model_version_by_alias(settings.model_name, alias).version)
    except MlflowException:
        return None


def hospital_slug(hospital: str) -> str:
    """An alias-safe form of a hospital code: lower-case ASCII letters, digits, ``_`` and ``-``; a code
    that needs changing to get there (Chinese, spaces, capitals) gets 8 hex digits of its SHA-1 appended,
    so two codes never share a slug."""
    import hashlib
    import re

    slug = re.sub(r"[^a-z0-9_-]+", "-", hospital.lower()).strip("-")[:64]
    if slug != hospital:
        slug = f"{slug}-{hashlib.sha1(hospital.encode()).hexdigest()[:8]}".lstrip("-")
    return slug


def segment_alias(kind: str, code: str) -> str:
    """The alias that points at a segment's own model: ``hospital-<slug>`` or ``department-<slug>``."""
    return SEGMENTS[kind][0] + hospital_slug(code)


def hospital_alias(hospital: str) -> str:
    """The alias that points at ``hospital``'s own model: ``hospital-<slug>``."""
    return segment_alias("hospital", hospital)


def set_segment_alias(
    kind: str, code: str, version: str, settings: Settings | None = None, tracking_uri: str | None = None
) -> str:
    """Make ``version`` (tagged with its kind's tag = ``code``) the model serving that hospital or
    department; returns the alias."""
    settings = settings or get_settings()
    tag = SEGMENTS[kind][1]
    tagged = version_tags(version, settings, tracking_uri).get(tag)
    if tagged != code:
        raise RegistryError(f"version {version} is not {kind} {code!r}'s model (its {tag} tag: {tagged!r})")
    alias = segment_alias(kind, code)
    MlflowClient(configure(settings, tracking_uri)).set_registered_model_alias(
        settings.model_name, alias, str(version)
    )
    return alias


def set_hospital_alias(
    hospital: str, version: str, settings: Settings | None = None, tracking_uri: str | None = None
) -> str:
    """Make ``version`` (tagged ``yuyue.hospital`` = ``hospital``) the model serving ``hospital``; the alias."""
    return set_segment_alias("hospital", hospital, version, settings, tracking_uri)


def remove_segment_alias(
    kind: str, code: str, settings: Settings | None = None, tracking_uri: str | None = None
) -> str | None:
    """Stop serving a hospital or department with its own model (the champion serves it); the version
    the alias pointed at, None when there was none."""
    settings = settings or get_settings()
    alias = segment_alias(kind, code)
    before = alias_version(alias, settings, tracking_uri)
    if before is not None:
        MlflowClient(configure(settings, tracking_uri)).delete_registered_model_alias(
            settings.model_name, alias
        )
    return before


def remove_hospital_alias(
    hospital: str, settings: Settings | None = None, tracking_uri: str | None = None
) -> str | None:
    """Stop serving ``hospital`` with its own model (it falls back to the champion); the version the
    alias pointed at, None when there was none."""
    return remove_segment_alias("hospital", hospital, settings, tracking_uri)


def segment_versions(
    kind: str, settings: Settings | None = None, tracking_uri: str | None = None
) -> dict[str, str]:
    """Code -> version of every alias of ``kind`` (``hospital-*`` or ``department-*``; {} without a
    registered model).

    The code comes from the version's tag (a slug is not reversible); an alias whose version's tag does
    not give back that alias is ignored (a hand-set alias on the wrong version)."""
    settings = settings or get_settings()
    prefix, tag = SEGMENTS[kind]
    client = MlflowClient(configure(settings, tracking_uri))
    try:
        aliases = client.get_registered_model(settings.model_name).aliases
    except MlflowException:
        return {}
    out: dict[str, str] = {}
    for alias, version in sorted(aliases.items()):
        if not alias.startswith(prefix):
            continue
        tags = client.get_model_version(settings.model_name, str(version)).tags or {}
        code = tags.get(tag)
        if code is not None and segment_alias(kind, code) == alias:
            out[code] = str(version)
    return out


def hospital_versions(settings: Settings | None = None, tracking_uri: str | None = None) -> dict[str, str]:
    """Hospital code -> version of every ``hospital-*`` alias ({} without a registered model)."""
    return segment_versions("hospital", settings, tracking_uri)
