"""Simulator variety: distinct phrasing, per-chat names, long descriptions, more departments, shifted world."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from yuyue.data.contract import Conversation
from yuyue.data.simulator import generate_file, iter_records
from yuyue.data.simulator.bank import PhraseBankError, load_bank

N = 3000
SEED = 11
_HOSPITAL = re.compile(r"(?:欢迎咨询|这里是|我是|导航搜)(\w{2,14}?(?:医院|门诊部|诊所|齿科|中心))")
_FORBIDDEN = ("保证", "根治", "治愈率", "成功率", "100%", "包好", "最好", "无效退款", "再不治", "越拖越")


@pytest.fixture(scope="module")
def default() -> list[dict]:
    return list(iter_records(N, SEED))


@pytest.fixture(scope="module")
def shifted() -> list[dict]:
    return list(iter_records(N, SEED, variant="shifted"))


def _texts(recs: list[dict], role: str) -> list[str]:
    return [m["text"] for r in recs for m in r["messages"] if m["role"] == role]


@pytest.mark.parametrize("variant", ["default", "shifted"])
def test_most_messages_are_distinct(variant, default, shifted):
    recs = default if variant == "default" else shifted
    visitor, consultant = _texts(recs, "visitor"), _texts(recs, "consultant")
    # issue 13 asks >= 50 % / 30 % of the default; the shifted world types with less punctuation
    assert len(set(visitor)) >= (0.5 if variant == "default" else 0.45) * len(visitor)
    assert len(set(consultant)) >= 0.3 * len(consultant)


def test_long_pasted_descriptions(default):
    lengths = np.array([len(t) for t in _texts(default, "visitor")])
    long = lengths[lengths >= 300]
    assert len(long) >= 30
    assert long.max() <= 1000
    assert np.percentile(lengths, 50) < 20  # most messages stay short


def test_each_chat_has_its_own_hospital_and_consultant_name(default):
    hospitals = Counter(
        name for r in default for m in r["messages"] if m["role"] == "consultant"
        for name in _HOSPITAL.findall(m["text"])
    )  # fmt: skip
    assert len(hospitals) >= 100
    assert hospitals.most_common(1)[0][1] < 0.05 * N
    names = Counter(
        m.group(1) for r in default for msg in r["messages"]
        if msg["role"] == "consultant" and (m := re.search(r"在线咨询(\S{2,6}?)，", msg["text"]))
    )  # fmt: skip
    assert len(names) >= 30


def test_departments_beyond_the_four(default):
    bank = load_bank()
    names = {d.name for d in bank.departments}
    assert {"整形美容", "男科", "妇科", "口腔", "皮肤科", "眼科", "肝病"} <= names
    assert all(len(d.projects) >= 3 for d in bank.departments)
    seen = Counter(r["department"] for r in default)
    assert all(seen[name] >= 50 for name in ("皮肤科", "眼科", "肝病"))


def test_stage_labels_stay_complete_when_consultants_merge_lines(default):
    for rec in default:
        for m in rec["messages"]:
            assert (m["role"] == "consultant") == ("stage" in m)
    # short acknowledgements run into the next line: "好的王女士。" + a question in one message
    merged = [t for t in _texts(default, "consultant") if re.match(r"^(好的|收到)[^。]{0,12}。.{6,}？", t)]
    assert len(merged) >= 20


def test_shifted_world_differs_in_rates_traffic_and_phrasing(default, shifted):
    def rate(recs, f):
        return float(np.mean([f(r) for r in recs]))

    assert (
        rate(shifted, lambda r: r["outcome"]["booked"])
        < rate(default, lambda r: r["outcome"]["booked"]) - 0.03
    )
    assert (
        rate(shifted, lambda r: r["truth"]["p_book"]) < rate(default, lambda r: r["truth"]["p_book"]) - 0.03
    )
    mobile = rate(shifted, lambda r: r["visit"]["device"] == "mobile")
    assert mobile > rate(default, lambda r: r["visit"]["device"] == "mobile") + 0.1
    toutiao = rate(shifted, lambda r: r["visit"]["engine"] == "toutiao")
    assert toutiao > rate(default, lambda r: r["visit"]["engine"] == "toutiao") + 0.08
    seen = set(_texts(default, "visitor"))
    new = [t for t in _texts(shifted, "visitor") if t not in seen]
    assert len(new) > 0.5 * len(_texts(shifted, "visitor"))
    assert {r["conversation_id"][:8] for r in shifted}.isdisjoint({r["conversation_id"][:8] for r in default})


def test_shifted_records_validate_and_keep_truth_exact(shifted):
    for rec in shifted:
        Conversation.model_validate(rec)
        t = rec["truth"]
        assert t["p_arrive"] == pytest.approx(t["p_book"] * t["p_arrive_given_booked"], abs=2e-6)
        planted = any(e["type"] in ("phone", "wechat", "qq") for e in t["entities"])
        assert rec["outcome"]["contact"] == planted
        for e in t["entities"]:
            msg = rec["messages"][e["message"]]
            assert msg["role"] == "visitor"
            if e["type"] in ("wechat", "surname"):
                assert e["value"] in msg["text"]
        for m in rec["messages"]:
            if m["role"] == "consultant":
                assert not any(f in m["text"] for f in _FORBIDDEN), m["text"]


def test_shifted_files_identical_for_any_worker_count(tmp_path: Path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert generate_file(one, n=1200, seed=5, workers=1, variant="shifted") == 1200
    assert generate_file(two, n=1200, seed=5, workers=2, variant="shifted") == 1200
    assert one.read_bytes() == two.read_bytes()
    assert list(iter_records(3, 5, start=7, variant="shifted")) == list(
        iter_records(3, 5, start=7, variant="shifted")
    )


def test_unknown_variant_is_named_in_the_error():
    with pytest.raises(PhraseBankError, match="unknown simulator variant 'tilted'"):
        load_bank(variant="tilted")
