"""Train on N simulated chats, then evaluate on fresh ones: wall time, peak memory, quality vs the oracle.

Run: .venv/bin/python bench/bench_train.py [--n 100000] [--eval-n 20000] [--dir /tmp/yuyue-bench]
     [--variant shifted]

``--variant shifted`` trains and evaluates on the simulator's shifted variant (other phrasing banks
and rates, data the models were not tuned on).

1. generates ``--n`` training chats (seed 1) and ``--eval-n`` evaluation chats (seed 2,
   a different simulated desk-month the model never sees), unless already there;
2. runs ``yuyue train`` in a child process with its own var dir and samples the
   resident memory of its whole process tree (the feature workers included);
3. runs ``yuyue evaluate --json`` on the evaluation chats and prints the headline
   numbers: AUC, AUC / oracle AUC, ECE, AUC after 1, 3, 5 visitor messages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from yuyue.data.simulator import generate_file

YUYUE = str(Path(sys.executable).with_name("yuyue"))


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """(wall seconds, peak tree RSS bytes, exit code) of ``cmd``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss_bytes(proc.pid))
            stop.wait(0.25)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    rc = proc.wait()
    stop.set()
    t.join()
    return time.perf_counter() - t0, peak, rc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="training chats")
    ap.add_argument("--eval-n", type=int, default=20_000, help="fresh evaluation chats")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/yuyue-bench"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--variant", default="default", help="simulator variant of both files (default, shifted)")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    tag = "" if args.variant == "default" else f"-{args.variant}"
    train_path = args.dir / f"train{tag}-{args.n}.jsonl"
    eval_path = args.dir / f"eval{tag}-{args.eval_n}.jsonl"
    for path, n, seed in ((train_path, args.n, 1), (eval_path, args.eval_n, 2)):
        if not path.exists():
            generate_file(path, n=n, seed=seed, workers=args.workers, variant=args.variant)
    var = args.dir / f"var-{args.n}-{int(time.time())}"
    env = {**os.environ, "YUYUE_VAR_DIR": str(var)}
    wall, peak, rc = run_measured(
        [YUYUE, "train", "--data", str(train_path), "--workers", str(args.workers)], env
    )
    if rc != 0:
        sys.exit(f"yuyue train failed with exit code {rc}")
    out = subprocess.run(
        [YUYUE, "evaluate", "--data", str(eval_path), "--model", "champion", "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    m = json.loads(out.strip().splitlines()[-1])
    print(
        f"\ntrain: {args.n} chats, workers {args.workers}: {wall / 60:.1f} min wall, peak RSS {peak / 2**30:.2f} GiB"
    )
    print(f"evaluation on {m['n_conversations']} fresh chats (seed 2, simulator variant {args.variant}):")
    for target in ("booked", "arrived"):
        auc, oracle = m.get(f"{target}.auc"), m.get(f"{target}.auc_oracle")
        turns = m.get(f"{target}.auc_by_visitor_turn", {})
        ratio = f"{auc / oracle:.3f}" if auc and oracle else "n/a"
        print(
            f"  {target}: AUC {auc} (oracle {oracle}, ratio {ratio}), ECE {m.get(f'{target}.ece')}, "
            f"Brier {m.get(f'{target}.brier')}, open-prefix AUC {m.get(f'{target}.auc_open')} "
            f"ECE {m.get(f'{target}.ece_open')}, AUC after 1/3/5 visitor msgs "
            f"{turns.get('1')}/{turns.get('3')}/{turns.get('5')}"
        )
    for key in (
        "stage.macro_f1",
        "reply.r10_at_1",
        "reply.mrr",
        "reply.hit_at_3",
        "pii.recall",
        "pii.precision",
    ):
        print(f"  {key}: {m.get(key)}")


if __name__ == "__main__":
    main()
