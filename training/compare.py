"""Compare two model versions on the same chats: paired deltas with bootstrap CIs, a verdict, the gate.

The unit is the chat. Both models are evaluated on the same file and chats (``evaluate`` keeps, under
``_curves.*``, ``_stage`` and ``_reply``, which chat each scored row, stage label and reply pair came
from); a bootstrap draws chats with replacement (a chat brings all its rows, messages and reply
pairs), computes each headline metric for both models on the draw, and the 2.5 / 97.5 percentiles
of the differences (candidate − champion) are the 95 % interval. Seeded, a few hundred draws.

The verdict says what the intervals show: ``better`` (some headline metric clearly better, none
clearly worse), ``worse`` (the reverse), ``mixed`` (both), ``no clear difference`` (neither); clearly
means the interval lies wholly on one side of zero.

The promotion gate (:func:`gate`) is deliberately simpler and conservative: it refuses a candidate
whose booked AUC is lower than the champion's by more than ``auc_tolerance`` (point estimate on the
held-out chats), or whose booked ECE is much worse (higher by more than ``ece_tolerance`` *and* its
interval wholly above zero, on at least ``MIN_ECE_CHATS`` chats: a binned ECE on a few dozen chats is
mostly noise), or that cannot be compared (no booked scorer, or too few outcomes on the held-out chats). A candidate that is merely
not shown better passes; one that loses more than the tolerance keeps the champion in place even when
the interval, on few chats, still includes zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from yuyue.training.metrics import ece

N_BOOT = 300
SEED = 0
AUC_TOLERANCE = 0.01
ECE_TOLERANCE = 0.02
MIN_POSITIVES = 5  # on the held-out chats, per class, for the gate to read the booked AUC
MIN_ECE_CHATS = 200  # ECE over 10 bins means little on fewer chats: the gate does not read it there

# headline metric -> (family, whether higher is better)
HEADLINE: dict[str, tuple[str, bool]] = {
    "booked.auc": ("score", True),
    "booked.ece": ("score", False),
    "booked.brier": ("score", False),
    "arrived.auc": ("score", True),
    "arrived.ece": ("score", False),
    "arrived.brier": ("score", False),
    "stage.macro_f1": ("stage", True),
    "reply.r10_at_1": ("reply", True),
}

EXPLAIN = {
    "n_conversations": "Chats in the evaluation data.",
    "booked.auc": "Chance that a chat that booked is scored above one that did not (closed chats; 0.5 is random, 1 perfect).",
    "booked.auc_oracle": "The same AUC for the simulator's true booking probability: the best any model could do on these chats.",
    "booked.ece": "Expected calibration error: the mean gap between predicted and observed booking rates over 10 score bins (0 is perfect).",
    "booked.brier": "Mean squared difference between the predicted booking probability and what happened (lower is better).",
    "booked.lift_at_10pct": "Booking rate among the 10 % highest-scored chats, divided by the overall rate.",
    "booked.auc_open": "AUC on every prefix of the chats (the score the consultant sees as the chat unfolds), each chat weighted once.",
    "arrived.auc": "Chance that a chat whose visitor arrived is scored above one whose visitor did not (closed chats).",
    "arrived.auc_oracle": "The arrival AUC of the simulator's true probability: the ceiling on these chats.",
    "arrived.ece": "Calibration error of the arrival probability (mean |observed − predicted| over 10 bins).",
    "arrived.brier": "Mean squared error of the arrival probability.",
    "stage.macro_f1": "F1 of the predicted playbook stage of consultant messages, averaged over stages (each stage counts equally).",
    "reply.r10_at_1": "How often the reply the consultant actually sent ranks first among it and 9 replies from other chats.",
    "reply.mrr": "Mean reciprocal rank of the actual reply among those 10 candidates.",
    "reply.hit_at_3": "Share of visitor messages for which one of the 3 suggestions is close to what the consultant sent.",
    "pii.recall": "Share of planted personal data (phones, WeChat, names …) the detector found.",
    "pii.precision": "Share of what the detector flagged that was planted personal data.",
    "auc_by_visitor_turn": "AUC of the score shown right after the visitor's k-th message: how early the model knows.",
}


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC by ranks (ties averaged, as scikit-learn's); None with one class."""
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return None
    r = rankdata(p)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _macro_f1(truth: np.ndarray, pred: np.ndarray, w: np.ndarray, n_labels: int) -> float | None:
    """Weighted macro F1 over the labels present in truth or prediction (scikit-learn's ``average='macro'``)."""
    if w.sum() == 0:
        return None
    tp = np.bincount(truth[truth == pred], weights=w[truth == pred], minlength=n_labels)
    t = np.bincount(truth, weights=w, minlength=n_labels)
    p = np.bincount(pred, weights=w, minlength=n_labels)
    present = (t > 0) | (p > 0)
    denom = t + p
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_labels), where=denom > 0)
    return float(f1[present].mean())


@dataclass
class _Family:
    """Rows of one metric family, each tied to a chat (position in the chat universe)."""

    chat: np.ndarray  # int positions
    a: dict[str, np.ndarray]  # candidate arrays
    b: dict[str, np.ndarray]  # champion arrays


def _pair_scores(cand: dict[str, Any], champ: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-chat (y, p_candidate, p_champion) on the chats both scored, ordered by chat id."""
    ia = {c: i for i, c in enumerate(cand["conv"])}
    ib = {c: i for i, c in enumerate(champ["conv"])}
    common = sorted(set(ia) & set(ib))
    a = np.array([ia[c] for c in common], dtype=int)
    b = np.array([ib[c] for c in common], dtype=int)
    y = np.asarray(cand["y"])[a].astype(int)
    return np.array(common, dtype=object), y, np.c_[np.asarray(cand["p"])[a], np.asarray(champ["p"])[b]]


def _metric(name: str, fam: _Family, idx: np.ndarray | None, w: np.ndarray, n_labels: int) -> tuple:
    """(candidate, champion) value of ``name`` on the rows ``idx`` (repeated rows) or weights ``w``."""
    target, kind = name.split(".", 1)
    out = []
    for side in (fam.a, fam.b):
        if target in ("booked", "arrived"):
            y, p = fam.a["y"][idx], side["p"][idx]
            if kind == "auc":
                out.append(_auc(y, p))
            elif len(y) == 0:
                out.append(None)
            elif kind == "ece":
                out.append(ece(y, p))
            else:
                out.append(float(np.mean((p - y) ** 2)))
        elif target == "stage":
            out.append(_macro_f1(fam.a["truth"], side["pred"], w, n_labels))
        else:  # reply
            out.append(float(np.average(side["hit"], weights=w)) if w.sum() > 0 else None)
    return tuple(out)


def compare(
    candidate: dict[str, Any],
    champion: dict[str, Any],
    *,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    labels: tuple[str, str] = ("candidate", "champion"),
) -> dict[str, Any]:
    """Paired deltas (candidate − champion) of the headline metrics with 95 % bootstrap CIs over chats.

    ``candidate`` and ``champion`` are :func:`training.evaluate.evaluate` results on the same chats
    (with their ``_`` keys). Returns ``{"metrics": {name: {candidate, champion, delta, ci95, n,
    higher_is_better, clearly}}`` (values under the keys ``candidate`` and ``champion``; ``labels``
    only name them in the verdict line), ``"verdict", "verdict_line", "slices", "n_chats", "n_boot", "seed"}``.
    """
    families: dict[str, _Family] = {}
    chats: dict[str, int] = {}

    def pos(ids: np.ndarray) -> np.ndarray:
        return np.array([chats.setdefault(c, len(chats)) for c in ids], dtype=int)

    for target in ("booked", "arrived"):
        ca, cb = candidate.get("_curves." + target), champion.get("_curves." + target)
        if ca is None or cb is None or "conv" not in ca or "conv" not in cb:
            continue
        ids, y, p = _pair_scores(ca, cb)
        families[target] = _Family(pos(ids), {"y": y, "p": p[:, 0]}, {"p": p[:, 1]})
    n_labels = 0
    sa, sb = candidate.get("_stage"), champion.get("_stage")
    if sa is not None and sb is not None and len(sa["conv"]) == len(sb["conv"]):
        names = {s: i for i, s in enumerate(sorted({*sa["truth"], *sa["pred"], *sb["pred"]}))}
        n_labels = len(names)

        def enc(x: np.ndarray) -> np.ndarray:
            return np.array([names[s] for s in x], dtype=int)

        families["stage"] = _Family(
            pos(sa["conv"]), {"truth": enc(sa["truth"]), "pred": enc(sa["pred"])}, {"pred": enc(sb["pred"])}
        )
    ra, rb = candidate.get("_reply"), champion.get("_reply")
    if ra is not None and rb is not None and list(ra["conv"]) == list(rb["conv"]):
        families["reply"] = _Family(
            pos(ra["conv"]), {"hit": ra["hit"].astype(float)}, {"hit": rb["hit"].astype(float)}
        )

    names_present = [m for m in HEADLINE if m.split(".")[0] in families]
    point: dict[str, tuple] = {}
    for m in names_present:
        fam = families[m.split(".")[0]]
        point[m] = _metric(m, fam, np.arange(len(fam.chat)), np.ones(len(fam.chat)), n_labels)

    rng = np.random.default_rng(seed)
    n_chats = len(chats)
    deltas: dict[str, list[float]] = {m: [] for m in names_present}
    for _ in range(n_boot if n_chats else 0):
        counts = np.bincount(rng.integers(0, n_chats, n_chats), minlength=n_chats)
        for k, fam in families.items():
            w = counts[fam.chat].astype(float)
            idx = None
            if k in ("booked", "arrived"):  # one row per chat: repeat rows as drawn
                idx = np.repeat(np.arange(len(fam.chat)), counts[fam.chat])
            for m in names_present:
                if m.split(".")[0] != k:
                    continue
                a, b = _metric(m, fam, idx, w, n_labels)
                if a is not None and b is not None:
                    deltas[m].append(a - b)

    metrics: dict[str, Any] = {}
    for m in names_present:
        a, b = point[m]
        higher = HEADLINE[m][1]
        d = deltas[m]
        ci = [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))] if len(d) >= 20 else None
        clearly = None
        if ci is not None and (ci[0] > 0 or ci[1] < 0):
            up = ci[0] > 0
            clearly = "better" if up == higher else "worse"
        fam = families[m.split(".")[0]]
        metrics[m] = {
            "candidate": _round(a),
            "champion": _round(b),
            "delta": None if a is None or b is None else _round(a - b),
            "ci95": None if ci is None else [_round(ci[0]), _round(ci[1])],
            "n": int(len(fam.chat)),
            "n_chats": int(len(np.unique(fam.chat))),
            "higher_is_better": higher,
            "clearly": clearly,
        }
    return {
        "labels": list(labels),
        "n_chats": n_chats,
        "n_boot": n_boot,
        "seed": seed,
        "metrics": metrics,
        **verdict(metrics, labels),
        "slices": slices(candidate, champion, families.get("booked"), chats),
    }


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def verdict(metrics: dict[str, Any], labels: tuple[str, str] = ("candidate", "champion")) -> dict[str, str]:
    """``better`` / ``worse`` / ``mixed`` / ``no clear difference``, and a line naming the metrics why."""
    better = [m for m, v in metrics.items() if v["clearly"] == "better"]
    worse = [m for m, v in metrics.items() if v["clearly"] == "worse"]
    word = (
        "mixed" if better and worse else "better" if better else "worse" if worse else "no clear difference"
    )

    def show(m: str) -> str:
        v = metrics[m]
        return f"{m} {v['delta']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]"

    why = [show(m) for m in better + worse]
    if not why and "booked.auc" in metrics and metrics["booked.auc"]["ci95"]:
        why = [show("booked.auc")]
    line = f"{labels[0]} vs {labels[1]}: {word}"
    if why:
        line += " (" + "; ".join(why) + "; 95 % bootstrap CIs over chats)"
    return {"verdict": word, "verdict_line": line}


def slices(
    candidate: dict[str, Any],
    champion: dict[str, Any],
    booked: _Family | None,
    chats: dict[str, int],
    min_chats: int = 20,
) -> dict[str, list[dict[str, Any]]]:
    """Booked AUC, observed rate and mean predicted probability of both models per department and engine."""
    info = {**champion.get("_chats", {}), **candidate.get("_chats", {})}
    if booked is None or not info:
        return {}
    ids = {i: c for c, i in chats.items()}
    out: dict[str, list[dict[str, Any]]] = {}
    for key in ("department", "engine"):
        groups: dict[str, list[int]] = {}
        for row, chat in enumerate(booked.chat):
            groups.setdefault(info.get(ids[int(chat)], {}).get(key, "–"), []).append(row)
        rows = []
        for group, idx_list in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            idx = np.array(idx_list)
            y = booked.a["y"][idx]
            pa, pb = booked.a["p"][idx], booked.b["p"][idx]
            a, b = _auc(y, pa), _auc(y, pb)
            rows.append(
                {
                    "group": group,
                    "n": len(idx),
                    "booked_rate": _round(y.mean()),
                    "mean_p": [_round(pa.mean()), _round(pb.mean())],
                    "auc": [_round(a), _round(b)],
                    "delta_auc": None if a is None or b is None else _round(a - b),
                    "small": len(idx) < min_chats,
                }
            )
        out[key] = rows
    return out


@dataclass
class GateResult:
    passed: bool
    reasons: list[str]
    rule: str

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "rule": self.rule}


def gate(
    comparison: dict[str, Any],
    *,
    auc_tolerance: float = AUC_TOLERANCE,
    ece_tolerance: float = ECE_TOLERANCE,
    candidate: dict[str, Any] | None = None,
) -> GateResult:
    """Whether a candidate may replace the champion (see the module docstring for the rule)."""
    rule = (
        f"refused when booked AUC is lower than the champion's by more than {auc_tolerance}, or booked ECE "
        f"higher by more than {ece_tolerance} with its 95 % CI above zero (read on {MIN_ECE_CHATS}+ chats "
        "only), on the same held-out chats"
    )
    m = comparison["metrics"]
    auc = m.get("booked.auc")
    if auc is None or auc["delta"] is None:
        if candidate is not None and "_curves.booked" not in candidate:
            return GateResult(False, ["the candidate scores no booking on these chats"], rule)
        return GateResult(
            False,
            ["cannot compare booked AUC on these chats (no booked scorer, or one outcome class only)"],
            rule,
        )
    reasons = []
    y = None
    if candidate is not None and "_curves.booked" in candidate:
        y = np.asarray(candidate["_curves.booked"]["y"])
    if y is not None and min(int(y.sum()), int(len(y) - y.sum())) < MIN_POSITIVES:
        reasons.append(
            f"too few outcomes to compare: {int(y.sum())} booked and {int(len(y) - y.sum())} not booked "
            f"among the held-out chats (need {MIN_POSITIVES} of each)"
        )
    if auc["delta"] < -auc_tolerance:
        reasons.append(
            f"booked AUC {auc['delta']:+.4f} (candidate {auc['candidate']}, champion {auc['champion']}; "
            f"95 % CI of the difference {auc['ci95']}; tolerance {auc_tolerance})"
        )
    e = m.get("booked.ece")
    if (
        e is not None
        and e["delta"] is not None
        and e["delta"] > ece_tolerance
        and e["n"] >= MIN_ECE_CHATS
        and e["ci95"] is not None
        and e["ci95"][0] > 0
    ):
        reasons.append(
            f"booked ECE {e['delta']:+.4f} (candidate {e['candidate']}, champion {e['champion']}; "
            f"95 % CI of the difference {e['ci95']}; tolerance {ece_tolerance})"
        )
    return GateResult(not reasons, reasons, rule)
