"""Spans index the raw text through an exact offset map: masked raw text never shows a phone's digits."""

from __future__ import annotations

import re

import pytest

from yuyue.features.normalize import normalize, normalize_mapped
from yuyue.features.pii import find_pii_raw, mask_text, raw_spans
from yuyue.features.state import analyse_text

PHONE = "13966012847"

RAW_CASES = [
    ("[微笑][微笑]我的电话13966012847", "[微笑][微笑]我的电话139****2847"),
    ("   我的电话13966012847", "   我的电话139****2847"),
    ("你好\n\n我的电话 13966012847", "你好\n\n我的电话 139****2847"),
    ("😀😀👨‍👩‍👧我的电话13966012847", "😀😀👨‍👩‍👧我的电话139****2847"),
    ("電話：１３９６６０１２８４７", "電話：139****2847"),
    ("电话139\u200b6601\u200b2847", "电话139****2847"),
    ("\u200b\ufeff电话13966012847", "\u200b\ufeff电话139****2847"),
    ("㈠㈡ﬁ电话13966012847", "㈠㈡ﬁ电话139****2847"),  # NFKC makes these longer
    ("e\u0301e\u0301 电话13966012847", "e\u0301e\u0301 电话139****2847"),  # and these shorter
    ("电话139😀6601😀2847", "电话139****2847"),
    ("电话 ①③⑨⑥⑥⓪①②⑧④⑦ 谢谢", "电话 139****2847 谢谢"),
    ("[呵呵] \t 王女士 电话13966012847", "[呵呵] \t *女士 电话139****2847"),
]


@pytest.mark.parametrize(("raw", "masked"), RAW_CASES)
def test_masking_the_raw_text_hides_the_number(raw: str, masked: str) -> None:
    out = mask_text(raw, find_pii_raw(raw))
    assert out == masked
    assert not re.search("|".join(PHONE[i : i + 5] for i in range(7)), out)  # no run of 5 of its digits


@pytest.mark.parametrize(("raw", "masked"), RAW_CASES)
def test_spans_of_the_message_path_map_onto_the_raw_text(raw: str, masked: str) -> None:
    """What the service stores: spans found on the normalised text (analyse_text), moved by raw_spans."""
    from yuyue.serving.service import masked_text

    norm, spans, _ = analyse_text(raw)
    stored = {"text": raw, "pii": [[s.type, s.start, s.end] for s in raw_spans(raw, spans)]}
    assert masked_text(stored) == masked
    for s in raw_spans(raw, spans):
        assert normalize(raw[s.start : s.end]).replace(" ", "")  # the raw slice holds the data


def test_old_rows_with_normalised_offsets_are_still_masked() -> None:
    from yuyue.serving.service import masked_text

    raw = "[微笑][微笑]我的电话13966012847"
    norm = normalize(raw)
    old = {"text": raw, "pii": [["phone", norm.index("139"), norm.index("139") + 11]]}
    assert masked_text(old) == "[微笑][微笑]我的电话139****2847"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "abc",
        "  a  b\n",
        "[微笑]",
        "😀",
        "\u200b",
        "㈠",
        "e\u0301",
        "한\u1100\u1161",
        "繁體字 ＡＢＣ １２３",
        "a👍🏻b",
    ],
)
def test_normalize_mapped_equals_normalize_and_its_map_is_in_range(raw: str) -> None:
    norm, lo, hi = normalize_mapped(raw)
    assert norm == normalize(raw)
    assert len(lo) == len(hi) == len(norm)
    assert all(0 <= a < b <= len(raw) for a, b in zip(lo, hi, strict=True))
    assert lo == sorted(lo) and hi == sorted(hi)
