"""Adversarial texts against the per-message step: milliseconds per stage for 1k, 4k and 10k characters.

Each text kind repeats cue words and patterns from the lexicons (signals.yaml, triggers.yaml,
domain.tsv, places.txt, surnames.txt, keywords.yaml) or a personal-data shape (``qq号是12345 ``)
up to the length. For every kind and length the step is run four ways on a fresh chat:

- ``v``: the visitor sends the text (features, scores, hints, suggestions);
- ``v_next``: the visitor then sends a short message (the suggestion context still holds the text);
- ``c_next``: on another chat, the consultant answers the text briefly (the stage model reads it as
  context);
- ``c``: the consultant sends the text itself (features, scores, stage).

Personal-data detection (``features/pii.py``) is timed on its own (``pii`` column, normalised text,
skipped above ``--pii-limit`` seconds at a shorter length) and, unless ``--real-pii``, replaced by a
stub finding nothing inside the step, so the step's columns measure everything else.

    .venv/bin/python bench/bench_adversarial.py --model /work/scratch/testmodel [--real-pii]
"""

from __future__ import annotations

import argparse
import itertools
import re._constants as _c
import re._parser as _p
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

LENGTHS = (1000, 4000, 10000)
_TZ = timezone(timedelta(hours=8))
_ANY_CHAR = "的"


# ---------------------------------------------------------------------------------------------- texts


def regex_sample(pattern: str, longest: bool = False) -> str:
    """One string ``pattern`` matches (shortest choices, or with ``longest`` the longest bounded gaps)."""

    def walk(node: Any) -> str:
        out = []
        for op, av in node:
            if op is _c.LITERAL:
                out.append(chr(av))
            elif op is _c.ANY:
                out.append(_ANY_CHAR)
            elif op is _c.IN:
                lit = [chr(v) for o, v in av if o is _c.LITERAL]
                if lit:
                    out.append(lit[0])
                elif any(o is _c.NEGATE for o, _ in av):
                    out.append(_ANY_CHAR)
                elif any(o is _c.CATEGORY and v is _c.CATEGORY_DIGIT for o, v in av):
                    out.append("1")
                elif any(o is _c.RANGE for o, _ in av):
                    out.append(chr(next(v for o, v in av if o is _c.RANGE)[0]))
                else:
                    out.append(" ")
            elif op is _c.SUBPATTERN:
                out.append(walk(av[3]))
            elif op is _c.BRANCH:
                alts = [walk(a) for a in av[1]]
                out.append(max(alts, key=len) if longest else alts[0])
            elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
                lo, hi, sub = av
                n = min(hi, 8) if longest and hi is not _c.MAXREPEAT else max(lo, 1 if longest else lo)
                out.append(walk(sub) * n)
            elif op is _c.CATEGORY:
                out.append(" ")
            # AT (^ $), ASSERT and ASSERT_NOT add nothing
        return "".join(out)

    return walk(list(_p.parse(pattern)))


def _lexicon_text(name: str) -> str:
    return resources.files("yuyue.features.lexicon").joinpath(name).read_text(encoding="utf-8")


def _patterns_of(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("patterns", "tokens", "exclude", "requires") and isinstance(v, list):
                yield from (str(x) for x in v)
            elif k in ("prefix", "question_after", "not_after") and isinstance(v, str):
                yield v
            else:
                yield from _patterns_of(v)
    elif isinstance(node, list):
        for x in node:
            yield from _patterns_of(x)


def cue_units() -> dict[str, list[str]]:
    """Cue words and pattern samples per source."""
    import yuyue.models.replies.trigger as trig

    def samples(patterns: list[str]) -> list[str]:
        out = []
        for p in patterns:
            try:
                out += [regex_sample(p), regex_sample(p, longest=True)]
            except Exception:  # noqa: BLE001 - a pattern the sampler cannot walk is skipped
                continue
        return [s for s in dict.fromkeys(out) if s.strip()]

    signals = list(_patterns_of(yaml.safe_load(_lexicon_text("signals.yaml"))))
    triggers = list(_patterns_of(yaml.safe_load(Path(trig.TRIGGERS_FILE).read_text(encoding="utf-8"))))
    keywords = list(
        _patterns_of(
            {
                "patterns": [
                    p
                    for v in yaml.safe_load(_lexicon_text("keywords.yaml")).values()
                    if isinstance(v, list)
                    for p in v
                ]
            }
        )
    )
    rows = [
        ln.split("\t") for ln in _lexicon_text("domain.tsv").splitlines() if ln and not ln.startswith("#")
    ]
    places = [
        ln.split("\t")[0] for ln in _lexicon_text("places.txt").splitlines() if ln and not ln.startswith("#")
    ]
    surnames = [
        ln.split("\t")[0].lstrip("!")
        for ln in _lexicon_text("surnames.txt").splitlines()
        if ln and not ln.startswith("#")
    ]
    return {
        "signals": samples(signals),
        "triggers": samples(triggers),
        "keywords": samples(keywords),
        "domain": [r[0] for r in rows],
        "places": [f"我在{p}市的{p}人" for p in places],
        "surnames": [f"我姓{s}{s}女士叫我小{s}" for s in surnames],
    }


def _fill(unit: str, length: int) -> str:
    return (unit * (length // max(1, len(unit)) + 1))[:length]


def adversarial_texts(length: int) -> dict[str, str]:
    """Text kind → a text of exactly ``length`` characters."""
    units = cue_units()
    fixed = {
        "qq": "qq号是12345 ",
        "phone": "手机13812345678 ",
        "digits": "1234567890",
        "digits_spaced": "1 2 3 4 5 ",
        "wechat": "加我微信vx_abc123 wxid_abcdefg ",
        "time": "明天下午3点半来 周六上午10点到院 3月5号可以 12:30方便 ",
        "age_gender": "我今年25岁我是女的孩子3岁我老公35岁",
        "neg_trigger": "不会胸痛",
        "excluded": "笑死",
        "negated_cues": "".join("不" + w for w in units["signals"][:200]),
        "emoticon": "[微笑]😀",
        "one_han": "嗯",
        "one_latin": "a",
        "punct": "?。",
    }
    out = {k: _fill(v, length) for k, v in fixed.items()}
    for name, words in units.items():
        out[name] = _fill("".join(words), length)
    # every unit interleaved, so no kind's structure is only ever seen alone
    mixed = [v for v in fixed.values()] + [w for words in units.values() for w in words[:40]]
    out["mixed"] = _fill(
        "".join(x for pair in itertools.zip_longest(mixed[::2], mixed[1::2]) for x in pair if x), length
    )
    return out


# ---------------------------------------------------------------------------------------------- timing


@contextmanager
def pii_stubbed(enabled: bool = True):
    """``find_pii`` replaced on the step's paths by one that finds nothing (its own time is not ours)."""
    import yuyue.features.state as state_mod
    import yuyue.models.replies.retrieve as retrieve_mod

    saved = state_mod.find_pii, retrieve_mod.find_pii
    if enabled:
        state_mod.find_pii = retrieve_mod.find_pii = lambda text, name_answer=False: []
    clear_caches()
    try:
        yield
    finally:
        state_mod.find_pii, retrieve_mod.find_pii = saved
        clear_caches()


def clear_caches() -> None:
    """Forget cached text analyses, so a repeated text costs what a new one does."""
    from yuyue.features.state import analyse_text
    from yuyue.models.replies.retrieve import _cached_tokens

    analyse_text.cache_clear()
    _cached_tokens.cache_clear()


def _session(model: Any):
    at = datetime(2025, 3, 3, 10, 0, tzinfo=_TZ)
    session, _ = model.open_chat(started_at=at, department="整形美容")
    model.on_message(session, "consultant", "您好，请问有什么可以帮您？", at + timedelta(seconds=5))
    model.on_message(session, "visitor", "你好，想问一下双眼皮", at + timedelta(seconds=20))
    model.on_message(session, "consultant", "好的，请问您怎么称呼？", at + timedelta(seconds=30))
    return session, at + timedelta(seconds=60)


def step_timings(model: Any, text: str, **kw: Any) -> dict[str, float]:
    """Milliseconds per part of the four steps described in the module docstring (one run, caches cleared)."""
    clear_caches()
    out: dict[str, float] = {}
    session, at = _session(model)
    t0 = time.perf_counter()
    ins = model.on_message(session, "visitor", text, at, **kw)
    out["v"] = (time.perf_counter() - t0) * 1e3
    for k, v in ins.timings_ms.items():
        out["v." + k] = v
    t0 = time.perf_counter()
    model.on_message(session, "visitor", "那大概多少钱", at + timedelta(seconds=10), **kw)
    out["v_next"] = (time.perf_counter() - t0) * 1e3
    session, at = _session(model)
    model.on_message(session, "visitor", text, at, **kw)
    t0 = time.perf_counter()
    model.on_message(session, "consultant", "价格要看您的情况", at + timedelta(seconds=20), **kw)
    out["c_next"] = (time.perf_counter() - t0) * 1e3
    session, at = _session(model)
    t0 = time.perf_counter()
    ins = model.on_message(session, "consultant", text, at, **kw)
    out["c"] = (time.perf_counter() - t0) * 1e3
    return out


def best_of(fn: Callable[[], dict[str, float]], repeat: int) -> dict[str, float]:
    """Per-key minimum over ``repeat`` runs (the least disturbed by other work on the machine)."""
    runs = [fn() for _ in range(repeat)]
    return {k: min(r[k] for r in runs) for k in runs[0]}


def pii_ms(text: str) -> float:
    from yuyue.features.normalize import normalize
    from yuyue.features.pii import find_pii

    norm = normalize(text)
    t0 = time.perf_counter()
    find_pii(norm)
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a saved model directory")
    ap.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    ap.add_argument("--kinds", default="", help="comma-separated text kinds (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--real-pii", action="store_true", help="keep the real find_pii inside the step")
    ap.add_argument(
        "--pii-limit", type=float, default=2.0, help="seconds; longer texts of a kind are skipped"
    )
    args = ap.parse_args()

    from yuyue.models.bundle import YuyueModel

    model = YuyueModel.load(args.model)
    lengths = [int(x) for x in args.lengths.split(",")]
    texts = {n: adversarial_texts(n) for n in lengths}
    kinds = [k for k in texts[lengths[0]] if not args.kinds or k in args.kinds.split(",")]
    _session(model)  # warm up (jieba dictionary, lexicons)
    cols = ["pii", "v.features", "v.scores", "v.hints_replies", "v", "v_next", "c_next", "c"]
    print(
        f"ms per part of the step (best of {args.repeat}); pii {'inside' if args.real_pii else 'stubbed'} "
        "in the step columns, timed alone in 'pii'"
    )
    print(f"{'kind':<14}{'chars':>6}" + "".join(f"{c:>16}" for c in cols) + "  degraded")
    for kind in kinds:
        pii_over = False
        for n in lengths:
            text = texts[n][kind]
            row = {}
            if pii_over:
                row["pii"] = float("nan")
            else:
                row["pii"] = pii_ms(text)
                pii_over = row["pii"] > args.pii_limit * 1e3
            if args.real_pii and pii_over:
                print(f"{kind:<14}{n:>6}  pii over the limit: step skipped")
                continue
            with pii_stubbed(not args.real_pii):
                row.update(best_of(lambda t=text: step_timings(model, t), args.repeat))
                clear_caches()
                session, at = _session(model)
                degraded = model.on_message(session, "visitor", text, at).degraded
            print(
                f"{kind:<14}{n:>6}"
                + "".join(f"{row.get(c, float('nan')):>16.2f}" for c in cols)
                + "  "
                + (",".join(degraded) or "-")
            )


if __name__ == "__main__":
    main()
