"""Evaluate a model bundle on a dataset: scores, calibration, stages, replies, personal data.

``evaluate`` returns one flat dict whose keys are those of ``yuyue evaluate --json``
(``booked.auc``, ``booked.auc_by_visitor_turn``, ``reply.r10_at_1`` …); a key is
absent when the data cannot support it (no outcomes, no annotations, no truth).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from yuyue.data.contract import Conversation
from yuyue.data.io import read_conversations
from yuyue.features.normalize import normalize
from yuyue.features.state import ConversationState
from yuyue.models.bundle import YuyueModel
from yuyue.models.replies.metrics import Scorer, r10_at_1_and_mrr, reply_pairs
from yuyue.training.dataset import DatasetScan, LabelledRows, build_rows, scan
from yuyue.training.metrics import brier, ece, lift_at, safe_auc

VISITOR_TURNS = (1, 2, 3, 5, 10)
MAX_REPLY_PAIRS = 2000
MAX_STAGE_MESSAGES = 20000


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def score_metrics(model: YuyueModel, rows: LabelledRows, scan_: DatasetScan, target: str) -> dict[str, Any]:
    """AUC, ECE, Brier and lift on closed chats; AUC by visitor turn and on all open prefixes."""
    scorer = model.scorers[target]
    mask, y = rows.target(target)
    if len(np.unique(y)) < 2:
        return {}
    sub = rows.rows.take(mask)
    w = rows.weight[mask]
    p = scorer.predict_proba(sub)
    closed = sub.closed == 1 if sub.closed is not None else np.zeros(len(sub), dtype=bool)
    yc, pc = y[closed], p[closed]
    out: dict[str, Any] = {
        f"{target}.n": int(closed.sum()),
        f"{target}.rate": _r(yc.mean()),
        f"{target}.auc": _r(safe_auc(yc, pc)),
        f"{target}.ece": _r(ece(yc, pc)),
        f"{target}.brier": _r(brier(yc, pc)),
        f"{target}.lift_at_10pct": _r(lift_at(yc, pc, 0.1), 3),
        f"{target}.auc_open": _r(safe_auc(y[~closed], p[~closed], w[~closed])),
        f"{target}.ece_open": _r(ece(y[~closed], p[~closed], w=w[~closed])),
    }
    by_turn: dict[str, float | None] = {}
    open_ = ~closed
    first_at_turn = (
        open_
        & np.r_[True, (sub.visitor_turns[1:] != sub.visitor_turns[:-1]) | (sub.group[1:] != sub.group[:-1])]
    )
    for k in VISITOR_TURNS:
        m = first_at_turn & (sub.visitor_turns == k)
        by_turn[str(k)] = _r(safe_auc(y[m], p[m]))
    out[f"{target}.auc_by_visitor_turn"] = by_turn
    truth_key = "p_book" if target == "booked" else "p_arrive"
    metas = {m.index: m for m in scan_.metas}
    oracle = np.array(
        [getattr(metas[rows.conv_index[g]], truth_key) for g in sub.group[closed]], dtype=object
    )
    if len(oracle) and all(o is not None for o in oracle):
        out[f"{target}.auc_oracle"] = _r(safe_auc(yc, oracle.astype(float)))
        if out[f"{target}.auc"] and out[f"{target}.auc_oracle"]:
            out[f"{target}.auc_vs_oracle"] = _r(out[f"{target}.auc"] / out[f"{target}.auc_oracle"])
    out["_curves." + target] = {
        "y": yc,
        "p": pc,
        # the chat of each closed row: what a comparison pairs and resamples (training/compare.py)
        "conv": np.array(
            [metas[rows.conv_index[g]].conversation_id for g in sub.group[closed]], dtype=object
        ),
        "y_open": y[open_],
        "p_open": p[open_],
        "turns": sub.visitor_turns[open_],
    }
    return out


def stage_metrics(model: YuyueModel, convs: Iterable[Conversation]) -> dict[str, Any]:
    if model.stage_model is None:
        return {}
    texts, contexts, truth, chat = [], [], [], []
    for conv in convs:
        last_visitor = None
        for m in conv.messages:
            if m.role == "visitor":
                last_visitor = m.text
            elif m.role == "consultant" and m.stage is not None:
                texts.append(m.text)
                contexts.append(last_visitor)
                truth.append(m.stage.value)
                chat.append(conv.conversation_id)
        if len(texts) >= MAX_STAGE_MESSAGES:
            break
    if not texts:
        return {}
    pred = model.stage_model.predict(texts, contexts)
    return {
        "stage.macro_f1": _r(f1_score(truth, pred, average="macro")),
        "stage.n": len(texts),
        "_stage": {"conv": np.array(chat, dtype=object), "truth": np.array(truth), "pred": np.asarray(pred)},
    }


def pii_metrics(convs: Iterable[Conversation]) -> dict[str, Any]:
    """Recall and precision of personal-data detection on visitor messages against ``truth.entities``."""
    tp = fp = fn = 0
    seen = False
    for conv in convs:
        if conv.truth is None or conv.truth.entities is None:
            continue
        seen = True
        planted = {(e.message, e.type, e.value) for e in conv.truth.entities}
        found = set()
        state = ConversationState.for_conversation(conv)  # detection sees what the live service sees
        for i, m in enumerate(conv.messages):
            analysis = state.update(m.role, m.text, m.at)
            if m.role == "visitor":
                found |= {(i, s.type, s.value) for s in analysis.pii}
        tp += len(planted & found)
        fp += len(found - planted)
        fn += len(planted - found)
    if not seen:
        return {}
    return {
        "pii.recall": _r(tp / (tp + fn)) if tp + fn else None,
        "pii.precision": _r(tp / (tp + fp)) if tp + fp else None,
        "pii.n_planted": tp + fn,
    }


def reply_metrics(model: YuyueModel, convs: list[Conversation], seed: int = 0) -> dict[str, Any]:
    if model.suggester is None:
        return {}
    pairs = reply_pairs(convs)
    if len(pairs) < 10:
        return {}
    rng = random.Random(seed)
    if len(pairs) > MAX_REPLY_PAIRS:
        pairs = rng.sample(pairs, MAX_REPLY_PAIRS)
    suggester = model.suggester
    retriever = suggester.retriever
    first: list[bool] = []  # per pair, in order: whether the served ranking put the true reply first

    def recorded(score: Scorer) -> Scorer:
        def scorer(q: str, cands: Sequence[str]) -> np.ndarray:
            s = np.asarray(score(q, cands), dtype=float)
            first.append(bool(np.all(s[1:] < s[0])))  # ties count against the true reply, as in R10@1
            return s

        return scorer

    lexical = r10_at_1_and_mrr(
        pairs, recorded(lambda q, cands: retriever.score_texts(q, list(cands))), seed=seed
    )
    extra: dict[str, Any] = {}
    if getattr(suggester, "uses_hybrid", False):  # the served ranking is the hybrid's
        first.clear()
        ranked = r10_at_1_and_mrr(pairs, recorded(suggester.score_texts), seed=seed)
        neural = r10_at_1_and_mrr(pairs, suggester.neural.score_texts, seed=seed)
        extra = {
            "reply.r10_at_1_lexical": _r(lexical["r10@1"]),
            "reply.mrr_lexical": _r(lexical["mrr"]),
            "reply.r10_at_1_neural": _r(neural["r10@1"]),
            "reply.mrr_neural": _r(neural["mrr"]),
        }
    else:
        ranked = lexical
    extra["_reply"] = {
        "conv": np.array([p.conversation_id for p in pairs], dtype=object),
        "hit": np.array(first),
    }
    hits = answered = 0
    from yuyue.models.replies.pool import bigram_jaccard

    sample = pairs[: min(len(pairs), 500)]
    for p in sample:
        sugg = model.suggester.suggest([("visitor", p.context)], {}, k=3)
        answered += bool(sugg)
        hits += any(bigram_jaccard(normalize(s.text), normalize(p.reply)) >= 0.5 for s in sugg)
    return {
        "reply.r10_at_1": _r(ranked["r10@1"]),
        "reply.mrr": _r(ranked["mrr"]),
        "reply.hit_at_3": _r(hits / len(sample)),
        "reply.coverage": _r(answered / len(sample)),
        "reply.n": len(pairs),
        **extra,
    }


def evaluate(
    model: YuyueModel,
    path: str | Path,
    *,
    scan_: DatasetScan | None = None,
    split: str | None = None,
    workers: int = 2,
    max_conversations: int = 20000,
    build: Callable[..., dict[str, LabelledRows]] = build_rows,
    read: Callable[[Path], Iterable[Conversation]] = read_conversations,
) -> dict[str, Any]:
    """All metrics the data supports, on the whole file or on one split of a scanned file: at most
    ``max_conversations`` chats (the first of the file, or a seeded sample of the split).

    ``build`` and ``read`` replace the prefix rows and the reads (``yuyue train --ray``).

    Keys starting with ``_`` hold arrays for plots and are not part of the JSON report.
    """
    path = Path(path)
    if scan_ is None:
        scan_ = scan(path)
        scan_.split = {m.index: "test" for m in scan_.metas[:max_conversations]}
        split = "test"
    wanted = {i for i, s in scan_.split.items() if s == split}
    if len(wanted) > max_conversations:  # a seeded sample: memory bounded for any size of file
        wanted = set(random.Random(0).sample(sorted(wanted), max_conversations))
    out: dict[str, Any] = {"n_conversations": len(wanted), "skipped_invalid": scan_.report.skipped}
    if model.scorers:
        space_scan = DatasetScan(scan_.path, scan_.metas, scan_.report, {i: "test" for i in wanted})
        rows = build(space_scan, model.space, ("test",), workers=workers, hospital=_hospital(model)).get(
            "test"
        )
        if rows is not None:
            for target in model.scorers:
                out.update(score_metrics(model, rows, scan_, target))
    convs = [c for i, c in enumerate(read(path)) if i in wanted]
    # each chat's slices, for comparisons by department and engine (training/compare.py)
    out["_chats"] = {
        c.conversation_id: {
            "department": c.department or "–",
            "engine": (c.visit.engine if c.visit is not None and c.visit.engine else None) or "–",
            "started_at": c.started_at.isoformat(),
        }
        for c in convs
    }
    out.update(stage_metrics(model, convs))
    out.update(reply_metrics(model, [c.without_truth() for c in convs]))
    out.update(pii_metrics(convs))
    return out


def _hospital(model: YuyueModel) -> dict[str, str]:
    return {
        k: v
        for k, v in model.hospital.items()
        if k in ("hospital_name", "hospital_city", "hospital_province")
    }


def public(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics without the plot arrays (what is printed and logged)."""
    return {k: v for k, v in metrics.items() if not k.startswith("_")}
