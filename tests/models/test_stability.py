"""Score stability on the hand-written desk chats (tests/data/chats/desk_chats.jsonl, 33 chats).

Played message by message through the trained bundle (``bench/bench_stability.py`` does the same and
prints the distribution). A buying signal (asking the way, a time, what to bring) never lowers
p(booked); a message that is not a decisive event (contact given or refused, visit time, the visitor
declining or leaving, the consultant closing) moves p(booked) by at most ``MAX_ORDINARY_SWING``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_stability.py"
# Largest ordinary swing measured (bench/bench_stability.py --model <3,000-chat test bundle>, 2026-11-30):
# 0.239 (desk-13 #8, 我姓孙: a surname given; p95 0.106) with a bundle trained before char n-grams; not yet
# measured on one trained with them. The bound leaves about 0.1 of margin for retraining noise.
MAX_ORDINARY_SWING = 0.35


def _bench():
    spec = importlib.util.spec_from_file_location("yuyue_bench_stability", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def steps(model):
    bench = _bench()
    return bench, bench.play(model)


def test_every_desk_chat_is_played(steps):
    bench, played = steps
    assert len({s.chat for s in played}) == 33
    kinds = {s.kind for s in played}
    assert kinds == {"ordinary", "decisive", "buying"}, kinds


def test_a_buying_signal_never_lowers_p_booked(steps):
    _, played = steps
    buying = [s for s in played if s.kind == "buying"]
    assert len(buying) >= 5  # the chats ask the way, times and what to bring
    lowered = [(s.chat, s.index, s.text, round(s.delta, 4)) for s in buying if s.delta < -1e-9]
    assert not lowered, lowered


def test_ordinary_messages_do_not_swing_p_booked(steps):
    _, played = steps
    worst = max((s for s in played if s.kind == "ordinary"), key=lambda s: abs(s.delta))
    assert abs(worst.delta) <= MAX_ORDINARY_SWING, (
        worst.chat,
        worst.index,
        worst.text,
        worst.before,
        worst.after,
    )


def test_the_classifier_names_decisive_events():
    bench = _bench()
    from datetime import datetime, timedelta, timezone

    from yuyue.features.state import ConversationState

    at = datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=8)))
    state = ConversationState.start(started_at=at, department="口腔")
    before = dict(state.flags)
    a = state.update("visitor", "我电话 13812345678", at)
    assert bench.classify("visitor", a, before, state.flags) == ("decisive", ["contact given"])
    before = dict(state.flags)
    a = state.update("visitor", "医院怎么走，地址在哪", at)
    kind, why = bench.classify("visitor", a, before, state.flags)
    assert kind == "buying" and "asks_address" in why
    before = dict(state.flags)
    a = state.update("visitor", "嗯嗯好的", at)
    assert bench.classify("visitor", a, before, state.flags)[0] == "ordinary"
