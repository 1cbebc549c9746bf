"""Scan + prefix rows (the part ``--ray`` distributes) with and without Ray: wall time, peak memory, rows.

Run: .venv/bin/python bench/bench_ray.py [--n 20000] [--shards 8] [--workers 2] [--dir /tmp/yuyue-bench-ray]
     [--full] [--modes default,ray] [--max-chats N]

1,000,000 chats with local Ray alone (rows of the ``train_max_chats`` sample, as ``yuyue train`` builds):
     .venv/bin/python bench/bench_ray.py --n 1000000 --shards 32 --modes ray --full [--train-only]

1. generates ``--n`` simulated chats (seed 1) unless there, and splits them into ``--shards`` files;
2. in a child process each (peak resident memory of its whole process tree, Ray's workers and object
   store included), builds the training rows of every split as ``yuyue train`` does: the default path
   on the one file (joblib, ``--workers`` processes), then the Ray path on the folder (a local Ray with
   ``--workers`` CPUs);
3. prints both side by side and whether the rows are identical (they must be: same chats, same order).

``--full`` also runs the whole ``yuyue train`` both ways (the fit is the same code on the driver, so
on a 2-core box it adds the same minutes to both).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import YUYUE, run_measured  # noqa: E402

from yuyue.config import Settings  # noqa: E402
from yuyue.data.simulator import generate_file  # noqa: E402


def rows_only(data: Path, mode: str, workers: int, out: Path, max_chats: int | None) -> None:
    """The child: scan, split, space and rows as train() builds them; a digest of the rows to ``out``."""
    from yuyue.features.rows import FeatureSpace
    from yuyue.training.dataset import build_rows, frequent_consultants, scan, split_by_time
    from yuyue.training.train import MAX_OPEN_ROWS

    t0 = time.perf_counter()
    if mode == "ray":
        from yuyue.training.distributed import RayBackend, list_shards, ray_session

        backend = RayBackend(list_shards(data))
        with ray_session(num_cpus=workers):
            t_ready = time.perf_counter()
            scan_ = split_by_time(backend.scan(data))
            space = FeatureSpace.with_consultants(frequent_consultants(scan_))
            rows = backend.build_rows(
                scan_, space, workers=workers, max_open=MAX_OPEN_ROWS, max_chats=max_chats
            )
        extra = {"ray_start_s": round(t_ready - t0, 1), "nodes": len(set(backend.nodes))}
    else:
        scan_ = split_by_time(scan(data))
        space = FeatureSpace.with_consultants(frequent_consultants(scan_))
        rows = build_rows(scan_, space, workers=workers, max_open=MAX_OPEN_ROWS, max_chats=max_chats)
        extra = {}
    digest = hashlib.sha256()
    n_rows = 0
    for split in sorted(rows):
        r = rows[split]
        chat = np.asarray(r.conv_index, dtype=np.int64)[r.rows.group]
        order = np.argsort(chat, kind="stable")  # joblib's shards interleave the chats: compare in file order
        digest.update(chat[order].tobytes())
        digest.update(np.ascontiguousarray(r.rows.struct[order]).tobytes())
        text = r.rows.text[order]
        digest.update(text.indices.tobytes() + text.data.tobytes())
        n_rows += len(r.rows)
    out.write_text(
        json.dumps(
            {
                "seconds": round(time.perf_counter() - t0, 1),
                "rows": n_rows,
                "chats": len(scan_.metas),
                "row_chats": sum(len(r.conv_index) for r in rows.values()),
                "digest": digest.hexdigest()[:16],
                **extra,
            }
        )
    )


def split_file(path: Path, parts: Path, n: int, shards: int) -> None:
    """``path``'s lines into ``shards`` files of consecutive chats, streamed (a 1M-chat file is ~4 GiB)."""
    parts.mkdir()
    per = -(-n // shards)
    with path.open("rb") as src:
        for k in range(shards):
            with (parts / f"part-{k:04d}.jsonl").open("wb") as dst:
                for _, line in zip(range(per), src, strict=False):
                    dst.write(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/yuyue-bench-ray"))
    ap.add_argument("--full", action="store_true", help="also the whole `yuyue train` both ways")
    ap.add_argument("--modes", default="default,ray", help="which paths: default, ray or both")
    ap.add_argument("--train-only", action="store_true", help="with --full: skip the rows-only pass")
    ap.add_argument(
        "--max-chats",
        type=int,
        default=Settings().train_max_chats,
        help="labelled chats turned into rows (default: the train_max_chats setting)",
    )
    ap.add_argument("--child", nargs=3, metavar=("DATA", "MODE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        rows_only(Path(args.child[0]), args.child[1], args.workers, Path(args.child[2]), args.max_chats)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / f"train-{args.n}.jsonl"
    if not path.exists():
        generate_file(path, n=args.n, seed=1, workers=args.workers)
    parts = args.dir / f"parts-{args.n}-{args.shards}"
    if not parts.exists():
        split_file(path, parts, args.n, args.shards)
    modes = [(m, data) for m, data in (("default", path), ("ray", parts)) if m in args.modes.split(",")]
    results = {}
    for mode, data in [] if args.train_only and args.full else modes:
        out = args.dir / f"rows-{mode}.json"
        cmd = [sys.executable, __file__, "--workers", str(args.workers), "--max-chats", str(args.max_chats)]
        cmd += ["--child", str(data), mode, str(out)]
        wall, peak, rc = run_measured(cmd, dict(os.environ))
        if rc:
            sys.exit(f"{mode}: exit code {rc}")
        results[mode] = {**json.loads(out.read_text()), "wall_s": round(wall, 1), "peak_gib": peak / 2**30}
    print(
        f"\nscan + prefix rows of {args.n} chats (rows of at most {args.max_chats}), {args.workers} "
        f"workers/CPUs, load {os.getloadavg()[0]:.1f}:"
    )
    for mode, r in results.items():
        shown = f"{args.shards} shard files" if mode == "ray" else "one file"
        extra = f" (Ray start {r['ray_start_s']} s, {r['nodes']} node)" if mode == "ray" else ""
        print(
            f"  {mode:8s} {shown}: {r['wall_s']} s wall{extra}, peak RSS {r['peak_gib']:.2f} GiB, "
            f"{r['rows']} rows of {r['row_chats']} chats, digest {r['digest']}"
        )
    same = len(results) < 2 or results["default"]["digest"] == results["ray"]["digest"]
    if len(results) == 2:
        print(f"  rows identical: {same}")
    if args.full:
        for mode, data in modes:
            env = {**os.environ, "YUYUE_VAR_DIR": str(args.dir / f"var-{mode}-{int(time.time())}")}
            env["YUYUE_TRAIN_MAX_CHATS"] = str(args.max_chats)
            cmd = [YUYUE, "train", "--data", str(data), "--workers", str(args.workers), "--no-register"]
            wall, peak, rc = run_measured(cmd + (["--ray"] if mode == "ray" else []), env)
            print(
                f"  yuyue train ({mode}): {wall / 60:.1f} min wall, peak RSS {peak / 2**30:.2f} GiB, rc {rc}, "
                f"load {os.getloadavg()[0]:.1f}"
            )
    if not same:
        sys.exit("the Ray path built different rows")


if __name__ == "__main__":
    main()
