"""Compliance guard numbers: development data (5-fold cross-validated; the old held-out split of
redteam.tsv and the first blind set redteam_holdout.tsv are development data since 2026-11-30 and shown
as out-of-fold subsets), the blind set redteam_holdout2.tsv, each for rules alone and rules + classifier;
the script library; consultant messages of simulated and real chats; the per-message check time.

    .venv/bin/python bench/bench_guard.py [--sim FILE.jsonl] [--real FILE.jsonl] [--tune] [--skip-blind]
        [--list-misses] [--list-blind-misses]

The classifier is trained on development texts only (load_dev: redteam.tsv, redteam_more.tsv,
redteam_holdout.tsv; plus the library and the rule examples), so the blind numbers are out of sample.
Development numbers for the combined guard are 5-fold cross-validated (stratified by label; the classifier
never scores a text it was trained on). ``--tune`` prints the sweep over (CLASSIFIER_THRESHOLD,
PHRASE_MIN) on the development data that the shipped values were chosen from (with ``--real``, also the
real help-desk block rate of each pair). redteam_holdout2.tsv was written on 2026-11-30 before the guard
was run on it; its misses are listed only with ``--list-blind-misses`` (look only after the last
measurement, and never tune on it).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from yuyue.features.normalize import normalize
from yuyue.models.replies.guard import (
    CLASSIFIER_MIN_CHARS,
    CLASSIFIER_THRESHOLD,
    OK,
    PHRASE_MIN,
    REDTEAM_HOLDOUT,
    REDTEAM_HOLDOUT2,
    RULE_VETO,
    CombinedGuard,
    ComplianceGuard,
    GuardClassifier,
    check_consultant_message,
    default_classifier,
    load_dev,
    load_redteam,
    training_data,
)
from yuyue.models.replies.scripts import fill_slots, load_library

Pairs = list[tuple[str, str]]


def _rates(pairs: Pairs, blocked: list[bool] | np.ndarray) -> tuple[int, int, int, int]:
    bad = [bool(b) for (label, _), b in zip(pairs, blocked, strict=True) if label != OK]
    good = [not b for (label, _), b in zip(pairs, blocked, strict=True) if label == OK]
    return sum(bad), len(bad), sum(good), len(good)


def _line(name: str, pairs: Pairs, blocked: list[bool] | np.ndarray) -> None:
    b, nb, g, ng = _rates(pairs, blocked)
    print(
        f"  {name:<36} prohibited blocked {b / nb:6.1%} ({b}/{nb})   compliant passed {g / ng:6.1%} ({g}/{ng})"
    )


def cv_scores(pairs: Pairs, folds: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold P(prohibited) and phrase evidence for each development text; every fold also trains on
    the library and the rule examples (as the shipped classifier does)."""
    from sklearn.model_selection import StratifiedKFold

    labels, texts = training_data()
    dev_texts = {t for _, t in pairs}
    extra = [(label, t) for label, t in zip(labels, texts, strict=True) if t not in dev_texts]
    out, phrase = np.zeros(len(pairs)), np.zeros(len(pairs))
    skf = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in skf.split(np.zeros(len(pairs)), [label for label, _ in pairs]):
        train = [pairs[i] for i in train_idx] + extra
        clf = GuardClassifier.fit([label for label, _ in train], [t for _, t in train])
        for i in test_idx:
            norm = normalize(pairs[i][1])
            out[i], phrase[i] = clf.p_prohibited(norm), clf.phrase_evidence(norm)
    return out, phrase


def combine(
    rule_block: np.ndarray,
    negated: np.ndarray,
    short: np.ndarray,
    p: np.ndarray,
    phrase: np.ndarray,
    veto: float,
    threshold: float,
    phrase_min: float,
) -> np.ndarray:
    """CombinedGuard.check's decision from its parts (rules, negation, length, P(prohibited), phrase
    evidence)."""
    clf_block = (p >= threshold) & (phrase >= phrase_min)
    return np.where(short, rule_block, (rule_block & (p >= veto)) | (~rule_block & ~negated & clf_block))


def _parts(clf: GuardClassifier, rules: ComplianceGuard, texts: list[str]) -> tuple[np.ndarray, ...]:
    norms = [normalize(t) for t in texts]
    return (
        np.array([bool(rules.check_normalized(n)) for n in norms]),
        np.array([rules.negated_normalized(n) for n in norms]),
        np.array([len(n.strip()) < CLASSIFIER_MIN_CHARS for n in norms]),
        np.array([clf.p_prohibited(n) for n in norms]),
        np.array([clf.phrase_evidence(n) for n in norms]),
    )


def _consultant_texts(path: Path) -> list[str]:
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            out += [m["text"] for m in json.loads(line)["messages"] if m["role"] == "consultant"]
    return out


def _block_rate(name: str, path: Path, rules: ComplianceGuard, combined: CombinedGuard, show: int) -> None:
    msgs = _consultant_texts(path)
    uniq = sorted(set(msgs))
    verdicts = {t: combined.check(t) for t in uniq}
    rule_v = {t: rules.check(t).allowed for t in uniq}
    blocked = [t for t in msgs if not verdicts[t]["allowed"]]
    print(f"\n{name} consultant messages ({path}): {len(msgs)} messages, {len(uniq)} distinct")
    print(f"  rules alone blocked {sum(not rule_v[t] for t in msgs) / len(msgs):.2%} of messages")
    print(
        f"  rules + classifier blocked {len(blocked) / len(msgs):.2%} of messages ({len(blocked)}), "
        f"{sum(not v['allowed'] for v in verdicts.values()) / len(uniq):.2%} of distinct texts"
    )
    by_cat = Counter(verdicts[t]["rules"][0]["category"] for t in blocked)
    print("  by category:", ", ".join(f"{c} {n}" for c, n in by_cat.most_common()))
    for t in [t for t in uniq if not verdicts[t]["allowed"]][:show]:
        print(f"    {verdicts[t]['rules'][0]['id']:<30} {t[:90]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sim", type=Path, default=None, help="simulated chats (JSONL): consultant block rate")
    ap.add_argument("--real", type=Path, default=None, help="real chats (JSONL): consultant block rate")
    ap.add_argument("--tune", action="store_true", help="print the CV sweep on the development data")
    ap.add_argument("--skip-blind", action="store_true", help="do not score the blind set (tuning)")
    ap.add_argument(
        "--list-misses",
        action="store_true",
        help="list the old held-out texts judged wrongly in CV (not those of redteam_holdout2.tsv)",
    )
    ap.add_argument(
        "--list-blind-misses", action="store_true", help="also list redteam_holdout2.tsv's misses"
    )
    args = ap.parse_args()

    rules = ComplianceGuard.default()
    t0 = time.perf_counter()
    clf = default_classifier()
    print(
        f"classifier trained in {time.perf_counter() - t0:.2f} s on {len(training_data()[1])} texts, "
        f"{len(clf.vocab)} n-grams; threshold {CLASSIFIER_THRESHOLD}, phrase evidence >= {PHRASE_MIN}, "
        f"rule veto below {RULE_VETO}, min {CLASSIFIER_MIN_CHARS} chars"
    )
    combined = CombinedGuard(rules, clf)

    dev = load_dev()
    norms = [normalize(t) for _, t in dev]
    rule_dev = np.array([bool(rules.check_normalized(n)) for n in norms])
    negated = np.array([rules.negated_normalized(n) for n in norms])
    short = np.array([len(n.strip()) < CLASSIFIER_MIN_CHARS for n in norms])
    p_dev, phrase_dev = cv_scores(dev)
    comb_dev = combine(
        rule_dev, negated, short, p_dev, phrase_dev, RULE_VETO, CLASSIFIER_THRESHOLD, PHRASE_MIN
    )
    print(f"\ndevelopment data ({len(dev)} texts; combined = 5-fold cross-validated classifier)")
    _line("rules alone", dev, rule_dev)
    _line("rules + classifier (CV)", dev, comb_dev)
    for name, subset in (
        ("  of which old held-out split", load_redteam(split="heldout")),
        ("  of which redteam_holdout.tsv", load_redteam(REDTEAM_HOLDOUT)),
    ):
        keep = {t for _, t in subset}
        mask = np.array([t in keep for _, t in dev])
        _line(f"{name} (CV)", [x for x, m in zip(dev, mask, strict=True) if m], comb_dev[mask])
        if args.list_misses:
            for (label, t), c, m in zip(dev, comb_dev, mask, strict=True):
                if m and (label == OK) == c:
                    print(f"    {'false block' if label == OK else 'missed':<11} {label:<20} {t}")
    if args.tune:
        real = None
        if args.real is not None:
            msgs = _consultant_texts(args.real)
            uniq = sorted(set(msgs))
            weight = np.array([Counter(msgs)[t] for t in uniq])
            real = _parts(clf, rules, uniq)
        for th in np.arange(0.5, 0.76, 0.05):
            for phrase_min in (-np.inf, 0.0, 0.1, 0.15, 0.2, 0.25, 0.3):
                name = f"threshold {th:.2f} phrase {phrase_min:5.2f}"
                b = combine(rule_dev, negated, short, p_dev, phrase_dev, RULE_VETO, th, phrase_min)
                b_, nb, g, ng = _rates(dev, b)
                extra = ""
                if real is not None:
                    rb = combine(*real, RULE_VETO, th, phrase_min)
                    extra = f"   real help-desk blocked {(rb * weight).sum() / weight.sum():.2%}"
                print(
                    f"  {name:<36} prohibited blocked {b_ / nb:6.1%}   compliant passed {g / ng:6.1%}{extra}"
                )

    if REDTEAM_HOLDOUT2.exists() and not args.skip_blind:
        held = load_redteam(REDTEAM_HOLDOUT2)
        print(f"\nblind set redteam_holdout2.tsv ({len(held)} texts; never trained or tuned on)")
        comb = [not combined.check(t)["allowed"] for _, t in held]
        _line("rules alone", held, [not rules.check(t).allowed for _, t in held])
        _line("rules + classifier", held, comb)
        per = Counter(label for (label, _), c in zip(held, comb, strict=True) if label != OK and not c)
        print("  missed per category:", ", ".join(f"{c} {n}" for c, n in sorted(per.items())) or "none")
        if args.list_blind_misses:
            for (label, t), c in zip(held, comb, strict=True):
                if (label == OK) == c:
                    print(f"    {'false block' if label == OK else 'missed':<11} {label:<20} {t}")

    lib = [fill_slots(e.text, {}) for e in load_library()]
    lib_blocked = [t for t in lib if not combined.check(t)["allowed"]]
    print(f"\nscript library: {len(lib) - len(lib_blocked)}/{len(lib)} pass rules + classifier")
    for t in lib_blocked:
        print(f"    blocked: {t}")

    if args.sim is not None:
        _block_rate("simulator", args.sim, rules, combined, show=10)
    if args.real is not None:
        _block_rate("real service", args.real, rules, combined, show=40)

    # per-message check time on the consultant path (rules + classifier + alternative)
    times = [t for _, t in dev if 14 <= len(t) <= 26] + [t for t in lib if 14 <= len(t) <= 26]
    for t in times[:50]:
        check_consultant_message(t)
    ns = []
    for t in times:
        s = time.perf_counter_ns()
        check_consultant_message(t)
        ns.append(time.perf_counter_ns() - s)
    ns.sort()
    print(
        f"\ncheck_consultant_message over {len(ns)} texts of 14-26 chars: median {ns[len(ns) // 2] / 1000:.0f} µs, "
        f"p99 {ns[int(len(ns) * 0.99)] / 1000:.0f} µs"
    )


if __name__ == "__main__":
    main()
