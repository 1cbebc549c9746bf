"""Microseconds per message of personal-data detection on real customer-service messages.

    .venv/bin/python bench/bench_pii.py [--n 3000]

Times ``find_pii`` on normalised text (the message path) and ``find_pii_raw`` (raw text, offsets mapped;
masked views and ``yuyue pii mask``), best of 3 passes, and the 10,000-character adversarial text of issue 15.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from yuyue.features.normalize import normalize
from yuyue.features.pii import find_pii, find_pii_raw

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "service_dev.jsonl"


def _best(fn, items, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--data", type=Path, default=REAL)
    args = ap.parse_args()
    raw: list[str] = []
    with args.data.open(encoding="utf-8") as f:
        for line in f:
            raw += [m["text"] for m in json.loads(line)["messages"]]
            if len(raw) >= args.n:
                break
    raw = raw[: args.n]
    norm = [normalize(t) for t in raw]
    find_pii(norm[0])
    n = len(raw)
    print(f"{n} messages, mean {sum(map(len, raw)) / n:.0f} chars")
    print(f"find_pii (normalised)   {_best(find_pii, norm) / n * 1e6:8.1f} us/message")
    print(f"normalize               {_best(normalize, raw) / n * 1e6:8.1f} us/message")
    print(f"find_pii_raw (raw text) {_best(find_pii_raw, raw) / n * 1e6:8.1f} us/message")
    adversarial = "qq号是12345 " * 1000
    t0 = time.perf_counter()
    find_pii_raw(adversarial)
    print(f"issue 15 text (10,000 chars): {(time.perf_counter() - t0) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
