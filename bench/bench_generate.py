"""Simulator speed: conversations generated per second, written to a JSONL file.

Run: .venv/bin/python bench/bench_generate.py [--n 100000] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from yuyue.data.simulator import generate_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sim.jsonl"
        t0 = time.perf_counter()
        n = generate_file(out, n=args.n, seed=args.seed, workers=args.workers)
        dt = time.perf_counter() - t0
        size = out.stat().st_size
    print(
        f"generated {n} conversations in {dt:.1f}s ({n / dt:,.0f}/s) with {args.workers} workers; {size / 1e6:.0f} MB"
    )


if __name__ == "__main__":
    main()
