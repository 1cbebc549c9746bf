"""Per-hospital models (issue 17) on two hospitals whose chats really differ, with every scorer family.

Hospital A (``hz-a``) gets ``--n-per-hospital`` chats of the simulator's default world (seed 1), hospital B
(``sh-b``) as many of its shifted world (seed 2: other phrasing, department mix, consultants, traffic and
lower booking and arrival rates; data/simulator/phrases/shifted). Each chat carries its hospital code in
the contract's ``hospital`` field (what training/per_hospital.py groups by); both worlds draw their start
times over the same simulated year, so sorting the merged file by ``started_at`` interleaves them and the
time split takes the latest chats of both into the test split.

Then, in a temporary var dir and MLflow store, what ``yuyue train --data FILE --per-hospital --min-chats
M`` does: the global model (:func:`training.workflow.train_and_register`), then
:func:`training.per_hospital.train_per_hospital` with the default ``scorers.CANDIDATES`` (every family)
and the keep rule untouched. Printed per hospital: labelled chats, held-out chats compared, the global and
the own model's booked/arrived AUC, the oracle AUC (the simulator's true probabilities) on the same chats,
the own model's scorers and the decision; then wall times, peak RSS and the arguments.

Run: .venv/bin/python bench/bench_per_hospital.py [--n-per-hospital 2500] [--min-chats M] [--workers 2]
     [--ray [--cpus-per-task 1]] [--threads] [--dir DIR]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from yuyue.data.simulator.generate import iter_records

HOSPITALS = (("hz-a", 1, "default"), ("sh-b", 2, "shifted"))  # (hospital code, seed, simulator world)


def write_hospitals(
    path: Path, n: int, spec: tuple[tuple[str, int, str], ...] = HOSPITALS
) -> dict[str, dict]:
    """``n`` chats of each (hospital code, seed, world), merged in start-time order; base rates per hospital."""
    records: list[dict[str, Any]] = []
    rates: dict[str, dict] = {}
    for code, seed, variant in spec:
        recs = [{**rec, "hospital": code} for rec in iter_records(n, seed, variant=variant)]
        booked = [r["outcome"]["booked"] for r in recs]
        arrived = [r["outcome"]["arrived"] for r in recs if r["outcome"]["booked"]]
        rates[code] = {
            "world": variant,
            "seed": seed,
            "booked": float(np.mean(booked)),
            "arrived_if_booked": float(np.mean([a for a in arrived if a is not None]))
            if arrived
            else math.nan,
        }
        records.extend(recs)
    records.sort(key=lambda r: (r["started_at"], r["conversation_id"]))
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return rates


def hanley_se(auc: float | None, n_pos: int, n_neg: int) -> float | None:
    """Hanley & McNeil's standard error of an AUC from ``n_pos`` positives and ``n_neg`` negatives."""
    if auc is None or not n_pos or not n_neg:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    return math.sqrt(max(var, 0.0))


def compared_truth(path: Path, data: Path) -> dict[str, dict[str, Any]]:
    """Per target, on the hospital's chats neither model saw: positives, negatives and the oracle AUC."""
    from yuyue.training import per_hospital as ph
    from yuyue.training.dataset import scan, split_by_time
    from yuyue.training.metrics import safe_auc

    full = split_by_time(scan(data))
    held_out = {m.conversation_id for m in full.metas if full.split[m.index] == "test"}
    both = ph.compared_scan(path, held_out)
    test = [m for m in both.metas if both.split[m.index] == "test"]
    out: dict[str, dict[str, Any]] = {}
    for target, truth in (("booked", "p_book"), ("arrived", "p_arrive")):
        known = [m for m in test if getattr(m, target) is not None and getattr(m, truth) is not None]
        y = np.array([bool(getattr(m, target)) for m in known])
        p = np.array([float(getattr(m, truth)) for m in known])
        out[target] = {
            "pos": int(y.sum()),
            "neg": int((~y).sum()),
            "oracle": safe_auc(y, p) if len(known) else None,
        }
    return out


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def report(results: list, rates: dict[str, dict], data: Path) -> None:
    """One block per compared hospital: counts, AUCs (with Hanley SEs and the oracle), scorers, decision."""
    print("\n== per hospital (held-out = the hospital's test split ∩ the global test split)")
    for r in results:
        rate = rates.get(r.hospital, {})
        truth = compared_truth(r.bundle_dir.parent / "data" / f"{r.bundle_dir.name}.jsonl", data)
        print(
            f"{r.hospital} ({rate.get('world')} world, seed {rate.get('seed')}): {r.n_labelled} labelled chats, "
            f"booked {_f(rate.get('booked'), 3)}, arrived|booked {_f(rate.get('arrived_if_booked'), 3)}; "
            f"{r.n_compared} held-out chats compared; own fit {r.fit_seconds}s"
        )
        for t in ("booked", "arrived"):
            g, o, tr = r.global_auc.get(t), r.own_auc.get(t), truth[t]
            se = hanley_se(g, tr["pos"], tr["neg"])
            delta = None if g is None or o is None else o - g
            print(
                f"  {t:8s} global {_f(g)}  own {_f(o)}  own-global {_f(delta)}  oracle {_f(tr['oracle'])}  "
                f"(positives {tr['pos']}, negatives {tr['neg']}; Hanley SE of one AUC ~{_f(se, 3)})"
            )
        kept = {k: v.get("kept") for k, v in (r.info.get("comparison") or {}).items()}
        print(f"  own model's scorers: {kept}")
        print(f"  decision: {'KEEP own model' if r.kept else 'global model'} ({r.why})")


def run(args: argparse.Namespace, root: Path) -> None:
    from yuyue.config import Settings
    from yuyue.training.distributed import ray_session
    from yuyue.training.per_hospital import train_per_hospital
    from yuyue.training.workflow import train_and_register

    data = root / "chats.jsonl"
    t0 = time.perf_counter()
    rates = write_hospitals(data, args.n_per_hospital)
    t_gen = time.perf_counter() - t0
    print(f"generated {2 * args.n_per_hospital} chats in {t_gen:.1f}s -> {data}: {rates}", flush=True)
    settings = Settings(
        var_dir=root / "var",
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        hospital_name="杭州美悦医院",
        hospital_address="杭州市西湖区文三路100号",
    )
    min_chats = args.min_chats or min(2000, int(0.8 * args.n_per_hospital))
    with ray_session(None, num_cpus=args.workers) if args.ray else nullcontext():
        t1 = time.perf_counter()
        glob, version = train_and_register(data, settings, workers=args.workers, echo=print)
        t_glob = time.perf_counter() - t1
        print(f"global model: {t_glob:.1f}s, version {version}", flush=True)
        t2 = time.perf_counter()
        results = train_per_hospital(
            data,
            settings,
            glob.bundle_dir,
            version,
            min_chats=min_chats,
            ray=args.ray,
            cpus_per_task=args.cpus_per_task,
            echo=print,
        )
        t_own = time.perf_counter() - t2
    report(results, rates, data)
    print(f"\nglobal model's scorers: { {k: v.get('kept') for k, v in glob.comparison.items()} }")
    print(
        f"global model's test metrics: booked AUC {glob.metrics.get('booked.auc')}, arrived AUC "
        f"{glob.metrics.get('arrived.auc')}"
    )
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"wall: generate {t_gen:.1f}s, global train {t_glob:.1f}s, per-hospital {t_own:.1f}s, "
        f"total {time.perf_counter() - t0:.1f}s"
    )
    print(f"peak RSS: this process {self_rss:.0f} MiB, largest reaped child {child_rss:.0f} MiB")
    print(f"min_chats {min_chats}; arguments: {' '.join(sys.argv[1:]) or '(defaults)'} -> {vars(args)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-per-hospital", type=int, default=2500, help="chats of each hospital")
    ap.add_argument("--min-chats", type=int, default=None, help="default: min(2000, 0.8 × --n-per-hospital)")
    ap.add_argument("--workers", type=int, default=2, help="feature processes (and Ray CPUs with --ray)")
    ap.add_argument("--ray", action="store_true", help="per-hospital fits as Ray tasks (local Ray)")
    ap.add_argument("--cpus-per-task", type=int, default=1, help="with --ray: CPUs of each hospital's task")
    ap.add_argument("--threads", action="store_true", help="let OpenMP/BLAS use every core (default: one)")
    ap.add_argument("--dir", type=Path, default=None, help="keep the data, var dir and MLflow store here")
    args = ap.parse_args()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows up in a log file as it happens
    if not args.threads:
        from threadpoolctl import threadpool_limits

        # one OpenMP/BLAS thread, as `yuyue serve`: on a busy 2-core host boosting's 2 OpenMP threads spin
        # against each other (a 50-iteration HGB fit, 20,000 x 150, at load 12: 29.6 s with 1, 223 s with 2)
        threadpool_limits(limits=1)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")  # the processes started from here (Ray's workers)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        run(args, args.dir)
        return
    root = Path(tempfile.mkdtemp(prefix="yuyue-bench-ph-"))
    try:
        run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
