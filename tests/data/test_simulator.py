"""The conversation simulator: valid records, plausible rates, learnable and reproducible truth."""

from __future__ import annotations

import gzip
import re
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from yuyue.data.contract import ENGINES, STAGES, Conversation
from yuyue.data.simulator import ConversationSimulator, generate_file, iter_records
from yuyue.data.simulator.bank import load_bank
from yuyue.data.simulator.spelling import FULLWIDTH_DIGITS, id_card_valid

N = 3000
SEED = 11
_TO_ASCII_DIGITS = {v: k for k, v in FULLWIDTH_DIGITS.items()}


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return list(iter_records(N, SEED))


def _rate(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _booked(recs) -> np.ndarray:
    return np.array([r["outcome"]["booked"] for r in recs], dtype=float)


# -- shape of the records ---------------------------------------------------------------------------


def test_every_record_validates_against_the_contract(records):
    ids = set()
    for rec in records:
        conv = Conversation.model_validate(rec)
        assert conv.started_at == conv.messages[0].at
        assert conv.truth is not None and conv.outcome is not None
        ids.add(conv.conversation_id)
    assert len(ids) == len(records)


def test_consultant_messages_have_a_stage_and_visitor_messages_none(records):
    stages = Counter()
    for rec in records:
        for m in rec["messages"]:
            if m["role"] == "consultant":
                assert m.get("stage") in STAGES, m
                stages[m["stage"]] += 1
            else:
                assert "stage" not in m, m
    assert set(stages) == set(STAGES), f"stages never used: {set(STAGES) - set(stages)}"


def test_timestamps_are_realistic(records):
    gaps, months, hours = [], Counter(), Counter()
    for rec in records:
        ats = [m["at"] for m in rec["messages"]]
        assert all(a.endswith("+08:00") for a in ats)
        assert ats == sorted(ats)
        ts = [datetime.fromisoformat(a).timestamp() for a in ats]
        gaps += list(np.diff(ts))
        months[rec["started_at"][:7]] += 1
        hours[int(rec["started_at"][11:13])] += 1
    gaps = np.array(gaps)
    assert np.median(gaps) > 3 and np.median(gaps) < 120
    assert np.percentile(gaps, 99) < 15 * 60
    assert {m for m in months if m.startswith("2025-")} == {f"2025-{i:02d}" for i in range(1, 13)}
    assert min(months.values()) > N / 12 * 0.5
    night = sum(hours[h] for h in range(2, 7))
    day = sum(hours[h] for h in range(10, 15))
    assert day > 5 * night > 0


def test_conversation_lengths_vary(records):
    lengths = np.array([len(r["messages"]) for r in records])
    assert 10 <= lengths.mean() <= 30
    assert (lengths <= 3).mean() > 0.05
    assert lengths.max() >= 60


def test_consecutive_messages_from_the_same_side(records):
    runs = Counter()
    for rec in records:
        roles = [m["role"] for m in rec["messages"]]
        for a, b in zip(roles, roles[1:], strict=False):
            if a == b:
                runs[a] += 1
    assert runs["consultant"] > N and runs["visitor"] > N


def test_departments_projects_and_consultants(records):
    bank = load_bank()
    assert len(bank.departments) >= 4
    assert all(len(d.projects) >= 3 for d in bank.departments)
    by_dept = defaultdict(set)
    for rec in records:
        if "project" in rec:
            by_dept[rec["department"]].add(rec["project"])
    assert {"整形美容", "男科", "妇科", "口腔"} <= set(by_dept)
    assert all(len(p) >= 3 for p in by_dept.values())
    assert 0.02 < _rate("project" not in r for r in records) < 0.4
    assert len({r["consultant_id"] for r in records}) >= 8
    assert {r["hospital"] for r in records} == {"hz01"}
    assert {r.get("grade") for r in records} >= {"极佳", "较好", "一般", None}


# -- visit traces -----------------------------------------------------------------------------------


def test_visit_traces(records):
    visits = [r["visit"] for r in records]
    engines = Counter(v["engine"] for v in visits)
    assert set(engines) <= set(ENGINES) and len(engines) >= 7
    assert Counter(v["device"] for v in visits).keys() >= {"pc", "mobile", "tablet"}
    regions = Counter(v.get("region") for v in visits)
    assert regions[None] > 0 and regions["未知"] > 0 and regions["上海市"] > 0
    assert any(r and re.fullmatch(r"浙江省杭州市 \S+区", r) for r in regions)
    urls = [p["url"] for v in visits for p in v["pages"]]
    for part in ("/anli/", "/zhuanjia/", "/jiage/", "/luxian/"):
        assert any(part in u for u in urls), part
    assert all(p.get("title") for v in visits for p in v["pages"])
    assert any("?bdjj" in v["landing_url"] for v in visits)
    assert all(v["visits_before"] >= 0 for v in visits)


def test_visit_trace_follows_the_latents(records):
    local = [r for r in records if r["truth"]["latents"]["locality"] == "local"]
    far = [r for r in records if r["truth"]["latents"]["locality"] in ("neighbor", "far")]
    known = [r["visit"]["region"] for r in local if r["visit"].get("region") not in (None, "未知")]
    assert all(reg.startswith("浙江省杭州市") for reg in known)
    assert not any(r["visit"].get("region", "").startswith("浙江省杭州市") for r in far)
    intent = np.array([r["truth"]["latents"]["intent"] for r in records])
    route = np.array([any("/luxian/" in p["url"] for p in r["visit"]["pages"]) for r in records])
    before = np.array([r["visit"]["visits_before"] for r in records])
    hi, lo = intent > np.quantile(intent, 0.67), intent < np.quantile(intent, 0.33)
    assert route[hi].mean() > 2 * route[lo].mean()
    assert before[hi].mean() > 2 * before[lo].mean()
    direct = [r["truth"]["latents"]["intent"] for r in records if r["visit"]["engine"] == "direct"]
    feed = [r["truth"]["latents"]["intent"] for r in records if r["visit"]["engine"] == "toutiao"]
    assert np.mean(direct) > np.mean(feed) + 0.15


def test_hospital_city_comes_from_the_parameters():
    sim = ConversationSimulator(city="宁波市", province="浙江省")
    recs = [sim.conversation(3, i) for i in range(400)]
    local = [r["visit"].get("region") for r in recs if r["truth"]["latents"]["locality"] == "local"]
    local = [x for x in local if x not in (None, "未知")]
    assert local and all(x.startswith("浙江省宁波市") for x in local)


# -- outcomes and truth -----------------------------------------------------------------------------


def test_base_rates(records):
    contact = _rate(r["outcome"]["contact"] for r in records)
    booked = _rate(r["outcome"]["booked"] for r in records)
    booked_recs = [r for r in records if r["outcome"]["booked"]]
    known = [r["outcome"]["arrived"] for r in booked_recs if r["outcome"]["arrived"] is not None]
    unknown = _rate(r["outcome"]["arrived"] is None for r in booked_recs)
    assert 0.30 <= contact <= 0.60
    assert 0.10 <= booked <= 0.35
    assert 0.40 <= _rate(known) <= 0.80
    assert 0.01 <= unknown <= 0.12
    for r in records:
        o = r["outcome"]
        if not o["booked"]:
            assert o["arrived"] is False and "booked_at" not in o and "arrived_at" not in o
        if o["arrived"]:
            assert o["arrived_at"] >= r["messages"][-1]["at"]


def test_rates_differ_across_departments_engines_and_consultants(records):
    for key in ("department", "consultant_id", "engine"):
        groups = defaultdict(list)
        for r in records:
            groups[r["visit"]["engine"] if key == "engine" else r[key]].append(r["outcome"]["booked"])
        rates = [np.mean(v) for v in groups.values() if len(v) >= 100]
        assert max(rates) - min(rates) > 0.07, key


def test_latents_drive_outcomes(records):
    booked = _booked(records)
    lat = [r["truth"]["latents"] for r in records]
    intent = np.array([x["intent"] for x in lat])
    hi, lo = intent > np.quantile(intent, 0.67), intent < np.quantile(intent, 0.33)
    assert booked[hi].mean() > 2.5 * booked[lo].mean()
    skill = np.array([x["consultant_skill"] for x in lat])
    assert booked[skill >= 0.8].mean() > booked[skill <= 0.35].mean() + 0.05
    local = np.array([x["locality"] == "local" for x in lat])
    far = np.array([x["locality"] == "far" for x in lat])
    assert booked[local].mean() > booked[far].mean()


def test_chat_events_move_the_booking_probability(records):
    p = np.array([r["truth"]["p_book"] for r in records])
    contact = np.array([r["outcome"]["contact"] for r in records])
    agreed = np.array([r["truth"]["events"]["time_agreed"] for r in records])
    dropout = np.array([r["truth"]["events"]["dropout"] or r["truth"]["events"]["bounced"] for r in records])
    assert p[contact].mean() > 2 * p[~contact].mean()
    assert p[agreed].mean() > 2 * p[~agreed].mean()
    assert p[dropout].mean() < p[~dropout].mean()


def test_oracle_is_calibrated_and_informative(records):
    p = np.array([r["truth"]["p_book"] for r in records])
    y = _booked(records)
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(
        abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).sum()
        for b in range(10)
        if (bins == b).any()
    )
    assert ece / len(p) < 0.03
    assert 0.78 <= roc_auc_score(y, p) <= 0.95


def test_arrival_probabilities_are_consistent(records):
    for r in records:
        t = r["truth"]
        assert t["p_arrive"] == pytest.approx(t["p_book"] * t["p_arrive_given_booked"], abs=2e-6)
        assert 0 < t["p_arrive"] <= t["p_book"]
    booked = [r for r in records if r["outcome"]["booked"] and r["outcome"]["arrived"] is not None]
    p = np.array([r["truth"]["p_arrive_given_booked"] for r in booked])
    y = np.array([r["outcome"]["arrived"] for r in booked], dtype=float)
    assert abs(p.mean() - y.mean()) < 0.05
    assert y[p > np.median(p)].mean() > y[p <= np.median(p)].mean()


# -- planted entities -------------------------------------------------------------------------------


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text.translate(str.maketrans(_TO_ASCII_DIGITS)))


def test_entities_appear_in_the_referenced_message(records):
    types = Counter()
    for rec in records:
        for e in rec["truth"]["entities"]:
            msg = rec["messages"][e["message"]]
            assert msg["role"] == "visitor"
            text, value = msg["text"], e["value"]
            types[e["type"]] += 1
            if e["type"] == "phone":
                assert re.fullmatch(r"1[3-9]\d{9}", value)
                assert value in _digits(text), (value, text)
            elif e["type"] == "qq":
                assert re.fullmatch(r"[1-9]\d{4,10}", value) and value in _digits(text)
            elif e["type"] == "wechat":
                assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{5,19}", value) and value in text
            elif e["type"] == "id_card":
                assert id_card_valid(value) and value == value.upper() and value in text.upper()
            else:
                assert e["type"] == "surname" and 1 <= len(value) <= 2 and value in text
    assert set(types) == {"phone", "wechat", "qq", "id_card", "surname"}


def test_contact_flag_matches_planted_contact_details(records):
    for rec in records:
        planted = any(e["type"] in ("phone", "wechat", "qq") for e in rec["truth"]["entities"])
        assert rec["outcome"]["contact"] == planted


def test_text_variety(records):
    visitor = [m["text"] for r in records for m in r["messages"] if m["role"] == "visitor"]
    phones = [
        r["messages"][e["message"]]["text"]
        for r in records
        for e in r["truth"]["entities"]
        if e["type"] == "phone"
    ]
    joined = "\n".join(visitor)
    assert any("-" in t for t in phones) and any("+86" in t for t in phones)
    assert any(re.search(r"[０-９]{3}", t) for t in phones) and any(
        re.search(r"\d{3} \d{4} \d{4}", t) for t in phones
    )
    assert (
        re.search(r"\d{3,5}元", joined)
        and re.search(r"2025-\d\d-\d\d", joined)
        and re.search(r"\d\d岁", joined)
    )
    assert re.search(r"\d{16,19}", joined)  # order numbers, not contact data
    assert "？" in joined and "?" in joined
    assert any(ch in joined for ch in "嗎錢這個")  # a few visitors type traditional characters
    assert "垫鼻子" in joined and any(w in joined for w in ("价位", "费用"))
    assert len(set(visitor)) > 0.2 * len(visitor)


def test_consultants_make_no_forbidden_claims(records):
    forbidden = ("保证", "根治", "治愈率", "成功率", "100%", "包好", "最好", "无效退款", "再不治", "越拖越")
    for rec in records:
        for m in rec["messages"]:
            if m["role"] == "consultant":
                assert not any(f in m["text"] for f in forbidden), m["text"]


# -- reproducibility --------------------------------------------------------------------------------


def test_same_seed_same_records_and_start_offsets(records):
    again = list(iter_records(50, SEED, start=100))
    assert again == records[100:150]
    other = list(iter_records(50, SEED + 1, start=100))
    assert [r["messages"] for r in other] != [r["messages"] for r in records[100:150]]


def test_files_identical_for_any_worker_count(tmp_path: Path):
    n = 1200  # more than one chunk, so two workers really split the work
    one = tmp_path / "one.jsonl"
    two = tmp_path / "two.jsonl.gz"
    again = tmp_path / "again.jsonl"
    other = tmp_path / "other.jsonl"
    assert generate_file(one, n=n, seed=5, workers=1) == n
    assert generate_file(two, n=n, seed=5, workers=2) == n
    assert generate_file(again, n=n, seed=5, workers=2) == n
    generate_file(other, n=n, seed=6, workers=1)
    assert one.read_bytes() == gzip.decompress(two.read_bytes()) == again.read_bytes()
    assert one.read_bytes() != other.read_bytes()
    assert len(one.read_bytes().splitlines()) == n
