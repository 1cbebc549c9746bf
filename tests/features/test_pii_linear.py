"""Personal-data detection is linear in the text: adversarial repetitions of every cue and pattern (issue 15).

A benchmark-style check, not a timed unit test: the best of several runs at 10,000 characters must stay
within 20x the time at 1,000 (plus a few ms of slack for timer noise); quadratic behaviour gives 100x.
"""

from __future__ import annotations

import time

import pytest

from yuyue.features.normalize import normalize
from yuyue.features.pii import find_pii, find_pii_raw

UNITS = [
    "qq号是12345 ",
    "电话",
    "微信",
    "手机",
    "扣扣",
    "企鹅",
    "wx",
    "vx ",
    "wechat is ",
    "my qq is 1234567 ",
    "1 3 8 ",
    "138-1234-",
    "1.2.",
    "１３８",
    "①③⑨",
    "一三九",
    "幺两",
    "13812345678 ",
    "0571-",
    "(0571)",
    "王女士",
    "叫我小王",
    "我是老王",
    "张海涛明天",
    "好的张海涛先生",
    "姓王",
    "我叫王小明",
    "好的王姐",
    "李姐您好",
    "a.",
    "www.",
    "x.com",
    "@",
    "x@",
    "a@b.c ",
    "@qq.com",
    "123456@qq.com ",
    "lucy_0921 ",
    "wxid_abcd",
    "解放路1号",
    "小区3栋",
    "3号楼2单元",
    "路12号",
    "身份证11010519491231002X",
    "110105",
    "[微笑]",
    "😀",
    "\u200b1",
    "a",
    "一",
    " ",
]


def _best(text: str, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        find_pii(text)
        best = min(best, time.perf_counter() - t0)
    return best


def _repeat(unit: str, n: int) -> str:
    return normalize((unit * (n // len(unit) + 1))[:n])


@pytest.mark.parametrize("unit", [*UNITS, "".join(UNITS)])
def test_ten_times_the_text_takes_at_most_twenty_times_as_long(unit: str) -> None:
    small, large = _repeat(unit, 1_000), _repeat(unit, 10_000)
    find_pii(small)  # warm caches (surname lexicon, tokenizer)
    t1, t10 = _best(small), _best(large)
    # linear is ~10x; the quadratic and cubic scans this guards against were 100x and more (10k: 104 s).
    # 40x and 20 ms of slack keep a loaded machine's noise from failing it
    assert t10 <= 40 * t1 + 0.020, (unit, t1, t10)


def test_the_issue_text_spans_are_bounded_by_the_text() -> None:
    text = "qq号是12345 " * 1000
    spans = find_pii_raw(text)
    assert len(spans) == 1000 and all(text[s.start : s.end] == "12345" for s in spans)
