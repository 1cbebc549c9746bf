"""Real-language outcome benchmark: default ``yuyue train`` next to a char TF-IDF + LR baseline.

On ``service_outcome_dev.jsonl`` (2,192 real customer-service chats, ``outcome.booked`` = the
annotators' "problem solved"; department 客服, no contact, no arrival) every fold trains a full
bundle with :func:`yuyue.training.train.train` at its defaults (no environment flags, nothing
cached between folds), then scores the held-out chats as the service would score the ended chat
(the closed row, through the saved bundle's scorer). The baseline, on the same folds: char 1-3-gram
TF-IDF + logistic regression (C=4) over the whole transcript.

    .venv/bin/python bench/bench_real.py                 # stratified 5-fold, seed 0
    .venv/bin/python bench/bench_real.py --folds 1       # one fixed 80/20 split (the first fold)
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from yuyue.data.io import read_conversations
from yuyue.features.rows import prefix_rows
from yuyue.training.metrics import ece, safe_auc
from yuyue.training.train import train

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "service_outcome_dev.jsonl"


def baseline_scores(docs_tr: list[str], y_tr: np.ndarray, docs_te: list[str]) -> np.ndarray:
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3))
    model = LogisticRegression(C=4, max_iter=2000).fit(vec.fit_transform(docs_tr), y_tr)
    return model.predict_proba(vec.transform(docs_te))[:, 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--folds", type=int, default=5, help="5: stratified 5-fold CV; 1: the first fold only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    raw = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    convs = list(read_conversations(args.data))
    if len(raw) != len(convs):
        raise SystemExit(f"{args.data}: {len(raw) - len(convs)} invalid records; validate the file first")
    y = np.array([int(bool(c.outcome and c.outcome.booked)) for c in convs])
    docs = ["\n".join(m.text for m in c.messages) for c in convs]
    folds = list(StratifiedKFold(5, shuffle=True, random_state=args.seed).split(docs, y))[: max(1, args.folds)]
    ours, base = np.full(len(y), np.nan), np.full(len(y), np.nan)
    kept, train_s = [], []
    for k, (tr, te) in enumerate(folds):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "train.jsonl"
            path.write_text("".join(json.dumps(raw[i], ensure_ascii=False) + "\n" for i in tr), encoding="utf-8")
            t0 = time.perf_counter()
            result = train(path, out_dir=Path(tmp) / "bundle", workers=args.workers, echo=lambda _s: None)
            train_s.append(time.perf_counter() - t0)
        model = result.model
        if "booked" not in model.scorers:
            raise SystemExit(f"fold {k}: no booked scorer trained: {result.skipped}")
        hosp = {k2: v for k2, v in model.hospital.items() if k2 in ("hospital_name", "hospital_city", "hospital_province")}
        rows = prefix_rows([convs[i] for i in te], model.space, include_empty=False, hospital=hosp)
        closed = rows.closed == 1
        ours[te[rows.group[closed]]] = model.scorers["booked"].predict_proba(rows.take(closed))
        base[te] = baseline_scores([docs[i] for i in tr], y[tr], [docs[i] for i in te])
        kept.append(result.comparison.get("booked", {}).get("kept"))
        print(
            f"fold {k}: train {train_s[-1]:.0f}s, kept {kept[-1]}, valid AUC "
            f"{result.comparison.get('booked', {}).get('valid_auc')}, skipped {result.skipped}",
            flush=True,
        )
    done = ~np.isnan(ours)
    yy = y[done]
    print(f"\n{args.data.name}: {done.sum()} chats scored out of fold ({len(folds)} of 5 folds, seed {args.seed})")
    print(f"{'model':<34}{'AUC':>8}{'ECE':>8}")
    for name, p in (("yuyue train (defaults), booked", ours[done]), ("char 1-3 TF-IDF + LR (C=4)", base[done])):
        print(f"{name:<34}{safe_auc(yy, p):>8.4f}{ece(yy, p):>8.4f}")
    print(f"p range (yuyue): [{ours[done].min():.4f}, {ours[done].max():.4f}]; kept {kept}")
    print(f"training time per fold (full bundle): mean {np.mean(train_s):.0f}s")


if __name__ == "__main__":
    main()
