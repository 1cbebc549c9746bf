"""Held-out AUC of the linear outcome scorer against its lbfgs iteration cap.

Run: .venv/bin/python bench/bench_linear_iters.py [--n 40000] [--iters 40 200 400 1000] [--target booked]

Takes the first ``--n`` chats of the 100k training file of ``bench/bench_train.py``
(simulated with seed 1 when missing), splits them by time as ``yuyue train`` does,
builds the same prefix rows (at most ``MAX_OPEN_ROWS`` rows after messages per
chat), fits ``OutcomeScorer(kind="logreg")`` on the training split once per cap
and prints the iterations used, the fit time and the AUC on the closed chats of
the validation and test splits (raw scores: calibration does not change an AUC).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from yuyue.data.simulator import generate_file
from yuyue.features.rows import FeatureSpace
from yuyue.models.scorer import OutcomeScorer
from yuyue.training.dataset import build_rows, frequent_consultants, scan, split_by_time
from yuyue.training.metrics import safe_auc
from yuyue.training.train import MAX_OPEN_ROWS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40_000, help="chats (the first N of the training file)")
    ap.add_argument(
        "--iters", type=int, nargs="+", default=[40, 200, 400, 1000], help="lbfgs caps to compare"
    )
    ap.add_argument("--target", choices=("booked", "arrived"), default="booked")
    ap.add_argument(
        "--C", type=float, default=0.5, help="inverse regularisation (the trainer's candidate: 0.5)"
    )
    ap.add_argument("--dir", type=Path, default=Path("/tmp/yuyue-bench"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    source = args.dir / "train-100000.jsonl"
    if not source.exists():
        args.dir.mkdir(parents=True, exist_ok=True)
        generate_file(source, n=100_000, seed=1, workers=args.workers)
    subset = args.dir / f"linear-iters-{args.n}.jsonl"
    if not subset.exists():
        with open(source, "rb") as src, open(subset, "wb") as dst:
            dst.writelines(itertools.islice(src, args.n))
    scan_ = split_by_time(scan(subset))
    space = FeatureSpace.with_consultants(frequent_consultants(scan_))
    t = time.perf_counter()
    rows = build_rows(scan_, space, workers=args.workers, max_open=MAX_OPEN_ROWS)
    print(
        f"{args.n} chats: {sum(len(r.rows) for r in rows.values())} prefix rows in {time.perf_counter() - t:.0f}s"
    )
    train = rows["train"]
    mask, y = train.target(args.target)
    fit_rows, fit_w = train.rows.take(mask), train.weight[mask]
    held_out = {}
    for split in ("valid", "test"):
        m, yy = rows[split].target(args.target)
        r = rows[split].rows.take(m)
        closed = r.closed == 1
        held_out[split] = (r, yy, closed)
    for cap in args.iters:
        t = time.perf_counter()
        scorer = OutcomeScorer(kind="logreg", C=args.C, linear_max_iter=cap).fit(fit_rows, y, fit_w)
        fit_s = time.perf_counter() - t
        aucs = {
            split: safe_auc(yy[closed], scorer.decision_function(r)[closed])
            for split, (r, yy, closed) in held_out.items()
        }
        print(
            f"{args.target} cap {cap:5d}: {int(scorer.model_.n_iter_[0]):4d} iterations, {fit_s:5.1f}s, "
            f"closed-chat AUC valid {aucs['valid']:.4f} test {aucs['test']:.4f}"
        )


if __name__ == "__main__":
    main()
