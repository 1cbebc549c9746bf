"""Reply ranking on real Chinese medical Q&A: Yuyue's retriever beside lexical baselines.

Run: .venv/bin/python bench/bench_replies.py [--data ../shared/data/real/medqa_dev.jsonl] [--seed 0]
Conversation-level 80/20 split; each test question's true answer is ranked
against 9 answers from other conversations (R10@1, MRR). All methods see the
same pairs and the same distractors.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from yuyue.config import Settings
from yuyue.data.io import read_conversations
from yuyue.models.replies.metrics import (
    evaluate_lexical_baselines,
    r10_at_1_and_mrr,
    reply_pairs,
    split_conversations,
)
from yuyue.models.replies.scripts import load_library
from yuyue.training.train import _hospital, fit_suggester

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "medqa_dev.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    records = list(read_conversations(args.data))
    train, test = split_conversations(records, 0.2, args.seed)
    pairs = reply_pairs(test)
    print(f"{args.data.name}: {len(records)} conversations, {len(pairs)} test pairs (seed {args.seed})")
    t0 = time.perf_counter()
    suggester = fit_suggester(train, load_library(), _hospital(Settings()))
    print(f"yuyue suggester fitted in {time.perf_counter() - t0:.1f}s")
    assert suggester is not None
    rows = {
        "yuyue (BM25 over past contexts, pool)": r10_at_1_and_mrr(
            pairs, suggester.retriever.score_texts, args.seed
        )
    }
    rows.update(evaluate_lexical_baselines(records, seed=args.seed))
    print(f"{'method':<40}{'R10@1':>8}{'MRR':>8}")
    for name, m in rows.items():
        print(f"{name:<40}{m['r10@1']:>8.3f}{m['mrr']:>8.3f}")


if __name__ == "__main__":
    main()
