"""The consultant-message check is linear in the text: 10k characters cost about 10x what 1k cost.

Every consultant message goes through the rules and the classifier on the request path; a pattern that
backtracks (``\\d+`` before a bounded gap, as four rules had) turned a 10,000-digit message into seconds
of one regex search holding the GIL. Ratios, best of five runs, not absolute times.
"""

from __future__ import annotations

import time

import pytest

from yuyue.models.replies.guard import check_consultant_message

UNITS = {
    "digits": "1",
    "digits_spaced": "12 ",
    "numerals": "一二三四五六七八九十",
    "percent": "100%患者 ",
    "days": "3天治好 ",
    "price": "99元一次 ",
    "many": "上千位顾客 ",
    "punctuation_free": "保证效果包您满意",
}


def _best(text: str) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        check_consultant_message(text)
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("kind", sorted(UNITS))
def test_check_scales_linearly(kind):
    check_consultant_message("您好")  # the classifier trains on first use
    unit = UNITS[kind]
    small = (unit * (1000 // len(unit) + 1))[:1000]
    big = (unit * (10_000 // len(unit) + 1))[:10_000]
    t_small, t_big = _best(small), _best(big)
    # linear: ~10x; the quadratic rules this guards against gave ~100x (10k digits: 3.6 s vs 36 ms).
    # 40x and 20 ms of slack keep a loaded machine's noise from failing it
    assert t_big <= 40 * t_small + 0.020, (kind, t_small, t_big)
