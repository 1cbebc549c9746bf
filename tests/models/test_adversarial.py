"""Adversarial messages: the per-message step stays linear (or bounded) in the text, and over its time
budget it drops the optional parts (suggestions) instead of stalling.

The scaling check compares 1,000 against 10,000 characters of every text kind of
``bench/bench_adversarial.py`` (repetitions of the lexicons' cue words and patterns); no absolute time is
asserted. Personal-data detection (``features/pii.py``) is stubbed out here and checked on its own.
"""

from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from yuyue.models.bundle import CONTEXT_CHARS, insight_dict
from yuyue.models.replies.trigger import Trigger

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_adversarial.py"
TZ = timezone(timedelta(hours=8))
AT = datetime(2025, 3, 3, 10, 0, tzinfo=TZ)


def _bench():
    spec = importlib.util.spec_from_file_location("yuyue_bench_adversarial", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.fixture(scope="module")
def bench():
    return _bench()


def _chat(model):
    session, _ = model.open_chat(started_at=AT, department="整形美容")
    model.on_message(session, "consultant", "您好，请问有什么可以帮您？", AT + timedelta(seconds=5))
    return session


# ---------------------------------------------------------------------------------------------- scaling


def test_adversarial_texts_cover_the_lexicons(bench):
    texts = bench.adversarial_texts(1000)
    assert {
        "qq",
        "signals",
        "triggers",
        "domain",
        "places",
        "surnames",
        "time",
        "neg_trigger",
        "mixed",
    } <= set(texts)
    assert all(len(t) == 1000 for t in texts.values())
    assert "不会胸痛" in texts["neg_trigger"] and "qq号是12345" in texts["qq"]


def test_whole_step_scales_linearly_on_adversarial_texts(model, bench):
    """10x the characters costs well under 20x the time for every kind (quadratic would be ~100x)."""
    short, long = bench.adversarial_texts(1000), bench.adversarial_texts(10000)
    bench.step_timings(model, "你好")  # warm up
    ratios = {}
    with bench.pii_stubbed():
        for kind in short:
            # no budget: every part runs, so a super-linear suggestion step cannot hide behind the fallback
            t1 = bench.best_of(lambda t=short[kind]: bench.step_timings(model, t, budget_ms=None), 2)
            t10 = bench.best_of(lambda t=long[kind]: bench.step_timings(model, t, budget_ms=None), 2)
            total1 = sum(t1[k] for k in ("v", "v_next", "c_next", "c"))
            total10 = sum(t10[k] for k in ("v", "v_next", "c_next", "c"))
            ratios[kind] = round(total10 / max(total1, 1.0), 1)  # at least 1 ms: below that, noise
    slow = {k: r for k, r in ratios.items() if r >= 20}
    assert not slow, f"10k/1k time ratios >= 20: {slow} (all: {ratios})"


def test_emergency_negation_is_looked_up_in_a_bounded_window():
    """Each candidate match searches only the few characters before it (was: the whole text before it)."""
    trig = Trigger.default()
    rule = next(r for r in trig.rules if r.name == "emergency")
    assert rule.not_after_width is not None and rule.not_after_width <= 10
    scanned = []

    class Counting:
        def __init__(self, rx):
            self.rx = rx

        def search(self, text, pos=0, endpos=None):
            scanned.append(endpos - pos)
            return self.rx.search(text, pos, endpos)

    counted = type(rule)(**{**vars(rule), "not_after": Counting(rule.not_after)})
    text = "不会胸痛" * 2500
    assert counted.match(text) is None  # every 胸痛 is negated
    assert len(scanned) == 2500 and max(scanned) <= rule.not_after_width


@pytest.mark.parametrize(
    "text, fires",
    [
        ("我不会胸痛吧", False),
        ("担心会不会大出血", False),
        ("我现在胸痛得厉害", True),
        ("怕" + "的" * 4 + "胸痛", True),
    ],
)
def test_emergency_negation_keeps_its_meaning(text, fires):
    assert (Trigger.default().check(text).action == "emergency") is fires


# ---------------------------------------------------------------------------------------------- budget


def test_over_budget_skips_suggestions_and_says_so(model):
    session = _chat(model)
    ins = model.on_message(session, "visitor", "双眼皮多少钱", AT + timedelta(seconds=20), budget_ms=0)
    assert ins.degraded == ["suggestions"] and ins.suggestions == []
    assert ins.scores and ins.hints is not None
    view = insight_dict(ins)
    assert view["degraded"] == ["suggestions"] and view["suggestions"] == []


def test_budget_reads_the_injected_clock(model, monkeypatch):
    """The same message is degraded or not depending only on the clock (no wall time involved)."""
    texts, results = ("双眼皮多少钱", "你们医院在哪里", "隆鼻多少钱"), {}
    for step in (0.001, 0.1):  # seconds per clock reading: features + scores take 2 readings
        ticks = iter(range(10**6))
        monkeypatch.setattr(model, "clock", lambda step=step, ticks=ticks: next(ticks) * step)
        session = _chat(model)
        results[step] = [
            model.on_message(session, "visitor", t, AT + timedelta(seconds=20 + i), budget_ms=50)
            for i, t in enumerate(texts)
        ]
    assert all(ins.degraded == [] for ins in results[0.001])
    assert any(ins.suggestions for ins in results[0.001])  # the model has replies for these
    assert all(ins.degraded == ["suggestions"] and not ins.suggestions for ins in results[0.1])
    # scores do not depend on the budget
    for a, b in zip(results[0.001], results[0.1], strict=True):
        assert {n: s.probability for n, s in a.scores.items()} == {
            n: s.probability for n, s in b.scores.items()
        }


def test_no_budget_and_system_messages_are_never_degraded(model):
    session = _chat(model)
    assert (
        model.on_message(
            session, "visitor", "双眼皮多少钱", AT + timedelta(seconds=9), budget_ms=None
        ).degraded
        == []
    )
    assert (
        model.on_message(session, "system", "访客已离开", AT + timedelta(seconds=10), budget_ms=0).degraded
        == []
    )


# ---------------------------------------------------------------------------------------------- caps


def test_a_long_message_is_kept_as_context_by_its_end_only(model):
    session = _chat(model)
    text = "双眼皮" * 3000 + "多少钱"
    model.on_message(session, "visitor", text, AT + timedelta(seconds=20), budget_ms=None)
    role, kept = session.context[-1]
    assert role == "visitor" and kept == text[-CONTEXT_CHARS:]
    assert len(session.to_bytes()) < 20 * CONTEXT_CHARS  # not the 9,000 characters


def test_safety_trigger_still_reads_the_whole_new_message(model):
    session = _chat(model)
    text = "我不想活了，" + "做双眼皮要多少钱" * 1000
    ins = model.on_message(session, "visitor", text, AT + timedelta(seconds=20), budget_ms=None)
    assert ins.suggestions == [] and ins.degraded == []
    ins = model.on_message(session, "visitor", "胸痛得厉害", AT + timedelta(seconds=30), budget_ms=None)
    assert [s.source for s in ins.suggestions] == ["safety"]
