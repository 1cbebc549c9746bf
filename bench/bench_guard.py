"""Compliance guard numbers: red-team development and held-out splits, rules alone vs rules + classifier;
the script library; the simulator's consultant messages; the per-message check time.

    .venv/bin/python bench/bench_guard.py [--sim FILE.jsonl] [--tune]

The classifier is trained on the development split only (plus the library and the rule examples), so
the held-out numbers are out of sample. Development numbers for the combined guard are 5-fold
cross-validated (the classifier never scores a text it was trained on). ``--tune`` prints the
threshold sweep on the development split (cross-validated) that CLASSIFIER_THRESHOLD was chosen from.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np

from yuyue.features.normalize import normalize
from yuyue.models.replies.guard import (
    CLASSIFIER_MIN_CHARS,
    CLASSIFIER_THRESHOLD,
    OK,
    CombinedGuard,
    ComplianceGuard,
    GuardClassifier,
    check_consultant_message,
    default_classifier,
    load_redteam,
    training_data,
)
from yuyue.models.replies.scripts import fill_slots, load_library


def _rates(pairs: list[tuple[str, str]], blocked: list[bool]) -> tuple[float, float, int, int]:
    bad = [b for (label, _), b in zip(pairs, blocked, strict=True) if label != OK]
    good = [not b for (label, _), b in zip(pairs, blocked, strict=True) if label == OK]
    return sum(bad) / len(bad), sum(good) / len(good), len(bad), len(good)


def _line(name: str, pairs: list[tuple[str, str]], blocked: list[bool]) -> None:
    b, p, nb, ng = _rates(pairs, blocked)
    print(f"  {name:<34} prohibited blocked {b:6.1%} ({round(b * nb)}/{nb})   "
          f"compliant passed {p:6.1%} ({round(p * ng)}/{ng})")


def _cv_p(pairs: list[tuple[str, str]], folds: int = 5) -> list[float]:
    """Out-of-fold P(prohibited) for each development text (training also holds library + rule examples)."""
    labels, texts = training_data()
    dev_texts = {t for _, t in pairs}
    extra = [(label, t) for label, t in zip(labels, texts, strict=True) if t not in dev_texts]
    out = [0.0] * len(pairs)
    for k in range(folds):
        train = [pr for i, pr in enumerate(pairs) if i % folds != k] + extra
        clf = GuardClassifier.fit([label for label, _ in train], [t for _, t in train])
        for i, (_, t) in enumerate(pairs):
            if i % folds == k:
                out[i] = clf.p_prohibited(normalize(t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sim", type=Path, default=None, help="simulated chats (JSONL) for the consultant block rate")
    ap.add_argument("--tune", action="store_true", help="print the CV threshold sweep on the development split")
    args = ap.parse_args()

    rules = ComplianceGuard.default()
    t0 = time.perf_counter()
    clf = default_classifier()
    print(f"classifier trained in {time.perf_counter() - t0:.2f} s on {len(training_data()[1])} texts, "
          f"{len(clf.vocab)} n-grams; threshold {CLASSIFIER_THRESHOLD}, min {CLASSIFIER_MIN_CHARS} chars")
    combined = CombinedGuard(rules, clf)

    dev, held = load_redteam(split="dev"), load_redteam(split="heldout")
    rule_dev = [not rules.check(t).allowed for _, t in dev]
    p_dev = _cv_p(dev)

    def comb_cv(threshold: float) -> list[bool]:
        return [r or (len(normalize(t).strip()) >= CLASSIFIER_MIN_CHARS and p >= threshold)
                for r, p, (_, t) in zip(rule_dev, p_dev, dev, strict=True)]

    print(f"\ndevelopment split ({len(dev)} texts; combined = 5-fold cross-validated classifier)")
    _line("rules alone", dev, rule_dev)
    _line("rules + classifier (CV)", dev, comb_cv(CLASSIFIER_THRESHOLD))
    if args.tune:
        for th in np.arange(0.3, 0.81, 0.05):
            _line(f"  classifier alone (CV) at {th:.2f}", dev, [p >= th for p in p_dev])
            _line(f"  rules + classifier (CV) at {th:.2f}", dev, comb_cv(float(th)))

    print(f"\nheld-out split ({len(held)} texts; never tuned on, never trained on)")
    rule_held = [not rules.check(t).allowed for _, t in held]
    comb_held = [not combined.check(t)["allowed"] for _, t in held]
    _line("rules alone", held, rule_held)
    _line("rules + classifier", held, comb_held)
    for (label, t), c in zip(held, comb_held, strict=True):
        if (label == OK) == c:
            print(f"    {'false block' if label == OK else 'missed':<11} {label:<20} {t}")
    cats = [(label, combined.check(t)["rules"]) for label, t in held if label != OK]
    agree = sum(any(h["category"] == label for h in hits) for label, hits in cats if hits)
    print(f"  category named matches the label on {agree}/{sum(1 for _, h in cats if h)} blocked held-out texts")

    lib = [fill_slots(e.text, {}) for e in load_library()]
    lib_blocked = [t for t in lib if not combined.check(t)["allowed"]]
    print(f"\nscript library: {len(lib) - len(lib_blocked)}/{len(lib)} pass rules + classifier"
          f" (the classifier trains on them as 'ok'; rules alone: "
          f"{sum(rules.check(t).allowed for t in lib)}/{len(lib)})")
    for t in lib_blocked:
        print(f"    blocked: {t}")

    if args.sim is not None:
        msgs = []
        with args.sim.open(encoding="utf-8") as f:
            for line in f:
                msgs += [m["text"] for m in json.loads(line)["messages"] if m["role"] == "consultant"]
        uniq = sorted(set(msgs))
        verdicts = {t: combined.check(t) for t in uniq}
        rule_v = {t: rules.check(t).allowed for t in uniq}
        blocked = [t for t in msgs if not verdicts[t]["allowed"]]
        print(f"\nsimulator consultant messages ({args.sim}): {len(msgs)} messages, {len(uniq)} distinct")
        print(f"  rules alone blocked {sum(not rule_v[t] for t in msgs) / len(msgs):.1%} of messages, "
              f"{sum(not v for v in rule_v.values()) / len(uniq):.1%} of distinct texts")
        print(f"  rules + classifier blocked {len(blocked) / len(msgs):.1%} of messages, "
              f"{sum(not v['allowed'] for v in verdicts.values()) / len(uniq):.1%} of distinct texts")
        by_cat = Counter(h["category"] for t in blocked for h in verdicts[t]["rules"][:1])
        print("  by category:", ", ".join(f"{c} {n}" for c, n in by_cat.most_common()))
        for t in [t for t in uniq if not verdicts[t]["allowed"]][:15]:
            print(f"    {verdicts[t]['rules'][0]['id']:<28} {t}")
        times = uniq[:2000]
    else:
        times = lib + [t for _, t in dev]

    # per-message check time: the consultant path (rules + classifier + alternative)
    for t in times[:50]:
        check_consultant_message(t)
    ns = []
    for t in times:
        s = time.perf_counter_ns()
        check_consultant_message(t)
        ns.append(time.perf_counter_ns() - s)
    ns.sort()
    print(f"\ncheck_consultant_message over {len(ns)} texts (mean {statistics.mean(len(t) for t in times):.0f} chars): "
          f"median {ns[len(ns) // 2] / 1000:.0f} µs, p99 {ns[int(len(ns) * 0.99)] / 1000:.0f} µs")


if __name__ == "__main__":
    main()
