"""Hint rules: each fires on its situation and stays quiet otherwise; bad YAML is reported by rule."""

from __future__ import annotations

import math

import pytest
import yaml

from yuyue.models.hints import HINTS_FILE, Hint, HintEngine, HintRuleError

L1 = math.log1p(1)  # a signal seen once (sig.* features are log1p counts)


@pytest.fixture(scope="module")
def engine() -> HintEngine:
    return HintEngine.from_yaml(HINTS_FILE)


def ids(engine: HintEngine, features: dict[str, float], stages=(), top: int = 50) -> list[str]:
    return [h.id for h in engine.hints(features, set(stages), top=top)]


# (rule id, features, stages done) where the rule must fire …
POSITIVE = [
    ("ask_name", {"dlg.n_consultant": 2}, ()),
    ("contact_asks_repeated", {"dlg.contact_asks_pending": 3, "dlg.n_consultant": 4}, ()),
    ("contact_before_concern", {"concern.open": 1, "dlg.contact_asks_pending": 1}, ()),
    ("refuses_contact", {"sig.v.refuses_contact": L1}, ()),
    ("concern_price", {"concern.price.raised": 1, "concern.price.open": 1, "concern.open": 1}, ()),
    ("concern_safety", {"concern.safety.raised": 1, "concern.safety.open": 1}, ()),
    ("concern_pain", {"concern.pain.raised": 1, "concern.pain.open": 1}, ()),
    ("concern_recovery", {"concern.recovery.raised": 1, "concern.recovery.open": 1}, ()),
    ("concern_effect", {"concern.effect.raised": 1, "concern.effect.open": 1}, ()),
    ("concern_privacy", {"concern.privacy.raised": 1, "concern.privacy.open": 1}, ()),
    ("concern_distance", {"concern.distance.raised": 1, "concern.distance.open": 1}, ()),
    ("hesitation", {"sig.v.hesitation": L1}, ()),
    ("hesitation", {"sig.v.negative": L1}, ()),
    ("comparison", {"sig.v.comparison": L1}, ()),
    ("visit_agreed_directions", {"ent.visit_time_agreed": 1, "ent.visit_time_proposed": 1}, {"book"}),
    ("asks_address_invite", {"sig.v.asks_address": L1}, ()),
    ("contact_left_book", {"ent.has_contact": 1, "ent.contact.phone": 1}, ()),
    ("asks_doctor_expert", {"sig.v.asks_doctor": L1}, ()),
    ("asks_price_answer", {"sig.v.asks_price": L1}, ()),
    ("probe_status", {"dlg.n_consultant": 3, "flow.asked_name": 1}, {"greet"}),
    ("probe_expectation", {"dlg.n_consultant": 3}, {"greet", "probe_status"}),
    ("ask_contact_after_booking", {"ent.visit_time_agreed": 1}, {"book"}),
    ("close_politely", {"ent.visit_time_agreed": 1, "sig.c.gives_address": L1}, {"book", "directions"}),
]

# … and where it must not.
NEGATIVE = [
    ("ask_name", {"dlg.n_consultant": 1}, ()),
    ("ask_name", {"dlg.n_consultant": 3, "flow.asked_name": 1}, ()),
    ("ask_name", {"dlg.n_consultant": 3, "ent.has_address_form": 1}, ()),
    ("contact_asks_repeated", {"dlg.contact_asks_pending": 2}, ()),
    ("contact_asks_repeated", {"dlg.contact_asks": 5, "ent.has_contact": 1}, ()),
    ("contact_before_concern", {"concern.open": 1}, ()),
    ("contact_before_concern", {"concern.open": 1, "dlg.contact_asks_pending": 4}, ()),  # suppressed
    ("refuses_contact", {"sig.v.refuses_contact": L1, "ent.has_contact": 1}, ()),
    ("concern_price", {"concern.price.raised": 1, "concern.price.answered": 1}, ()),
    ("concern_price", {"concern.safety.raised": 1}, ()),
    ("concern_safety", {"concern.safety.raised": 1, "concern.safety.answered": 1}, ()),
    ("concern_pain", {}, ()),
    ("concern_recovery", {"concern.recovery.raised": 1, "concern.recovery.answered": 1}, ()),
    ("concern_effect", {"sig.v.asks_effect": L1}, ()),
    ("concern_privacy", {}, ()),
    ("concern_distance", {"concern.distance.answered": 1, "concern.distance.raised": 1}, ()),
    ("hesitation", {"sig.v.hesitation": L1, "ent.visit_time_agreed": 1}, ()),
    ("hesitation", {"sig.v.agrees": L1}, ()),
    ("comparison", {}, ()),
    ("visit_agreed_directions", {"ent.visit_time_proposed": 1}, ()),
    ("visit_agreed_directions", {"ent.visit_time_agreed": 1}, {"directions"}),
    ("visit_agreed_directions", {"ent.visit_time_agreed": 1, "sig.c.gives_address": L1}, ()),
    ("asks_address_invite", {"sig.v.asks_address": L1, "ent.visit_time_agreed": 1}, ()),
    ("asks_address_invite", {"sig.v.asks_address": L1, "ent.visit_time_proposed": 1}, ()),
    ("asks_address_invite", {"sig.v.asks_address": L1}, {"book"}),
    ("asks_address_invite", {"sig.v.asks_address": L1, "sig.v.hesitation": L1}, ()),  # suppressed
    ("contact_left_book", {"ent.has_contact": 1, "ent.visit_time_agreed": 1}, ()),
    ("contact_left_book", {"ent.has_contact": 1}, {"book"}),
    ("contact_left_book", {"dlg.contact_asks": 1}, ()),
    ("asks_doctor_expert", {"sig.v.asks_doctor": L1, "sig.c.recommends_expert": L1}, ()),
    ("asks_doctor_expert", {"sig.v.asks_doctor": L1}, {"recommend_expert"}),
    ("asks_price_answer", {"sig.v.asks_price": L1, "sig.c.answers_price": L1}, ()),
    ("asks_price_answer", {"sig.v.asks_price": L1, "concern.price.raised": 1}, ()),
    ("probe_status", {"dlg.n_consultant": 2}, ()),
    ("probe_status", {"dlg.n_consultant": 5}, {"probe_status"}),
    ("probe_status", {"dlg.n_consultant": 5, "sig.c.asks_condition": L1}, ()),
    ("probe_expectation", {"dlg.n_consultant": 5}, ()),
    ("probe_expectation", {"dlg.n_consultant": 5}, {"probe_status", "probe_expectation"}),
    ("ask_contact_after_booking", {"ent.visit_time_agreed": 1, "ent.has_contact": 1}, ()),
    ("ask_contact_after_booking", {"ent.visit_time_agreed": 1, "dlg.contact_asks_pending": 2}, ()),
    ("ask_contact_after_booking", {}, ()),
    ("close_politely", {"ent.visit_time_agreed": 1}, {"book"}),
    ("close_politely", {"ent.visit_time_agreed": 1}, {"directions", "close"}),
]


@pytest.mark.parametrize(("rule", "features", "stages"), POSITIVE)
def test_rule_fires(engine, rule, features, stages):
    assert rule in ids(engine, features, stages)


@pytest.mark.parametrize(("rule", "features", "stages"), NEGATIVE)
def test_rule_quiet(engine, rule, features, stages):
    assert rule not in ids(engine, features, stages)


def test_every_rule_has_positive_and_negative_cases(engine):
    rules = {r.hint.id for r in engine.rules}
    assert rules == {p[0] for p in POSITIVE}
    assert rules == {n[0] for n in NEGATIVE}


def test_fresh_chat_gets_no_hints(engine):
    assert engine.hints({}, set()) == []


def test_top_and_priority_order(engine):
    feats = {
        "dlg.contact_asks_pending": 3,
        "concern.price.raised": 1,
        "concern.price.open": 1,
        "concern.open": 1,
        "sig.v.hesitation": L1,
        "dlg.n_consultant": 4,
    }
    out = engine.hints(feats, set(), top=3)
    assert [h.id for h in out] == ["contact_asks_repeated", "concern_price", "hesitation"]
    assert all(isinstance(h, Hint) for h in out)
    assert out[0].text.startswith("已三次索要联系方式")
    assert [h.priority for h in out] == sorted((h.priority for h in out), reverse=True)
    assert len(engine.hints(feats, set(), top=1)) == 1
    assert engine.hints(feats, set(), top=0) == []


def test_wording_from_the_brief(engine):
    texts = {r.hint.id: r.hint.text for r in engine.rules}
    assert texts["hesitation"] == "访客犹豫：不要施压，提供信息并约定回访"
    assert texts["asks_address_invite"] == "访客问了地址，可以邀约"
    assert texts["visit_agreed_directions"] == "已约时间，告知地址路线"
    assert texts["contact_left_book"] == "已留联系方式，可以确认来院时间"
    assert texts["concern_price"] == "访客担心价格：说明价格区间并建议面诊"


def test_no_pressure_wording(engine):
    pressure = ["马上", "赶紧", "立刻", "名额", "仅限", "最后", "错过", "再不", "必须", "抓紧", "限时"]
    for r in engine.rules:
        assert not [w for w in pressure if w in r.hint.text], r.hint.id
    # the load-time guard itself
    assert "名额有限" in engine.banned_words


def test_default_checks_feature_names():
    pytest.importorskip("yuyue.features.visit")
    engine = HintEngine.default()
    assert {r.hint.id for r in engine.rules} >= {"ask_name", "hesitation"}


def test_features_used_exist_in_the_state():
    """Every feature a rule reads is one ConversationState can produce."""
    pytest.importorskip("yuyue.features.visit")
    from yuyue.features.state import feature_names

    names = set(feature_names())
    engine = HintEngine.from_yaml(HINTS_FILE)
    used = {c.feature for r in engine.rules for c in (*r.all_of, *r.any_of) if c.feature}
    assert used <= names, sorted(used - names)


# ---- validation -------------------------------------------------------------


def _doc(**rule) -> str:
    base = {"id": "r1", "priority": 10, "text": "提示", "when": ["dlg.n_consultant >= 1"]}
    base.update(rule)
    base = {k: v for k, v in base.items() if v is not None}
    return yaml.safe_dump({"banned_words": ["马上"], "hints": [base]}, allow_unicode=True)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"when": ["dlg.n_consultant >>= 1"]}, "cannot parse condition"),
        ({"when": ["dlg.n_consultant >= many"]}, "cannot parse condition"),
        ({"when": "dlg.n_consultant >= 1"}, "must be a list"),
        ({"when": [3]}, "must be a string"),
        ({"when": ["done booking"]}, "unknown stage"),
        ({"stage": "booking"}, "unknown stage"),
        ({"text": ""}, "'text' must be non-empty"),
        ({"text": "请马上预约"}, "pressure wording"),
        ({"priority": "high"}, "'priority' must be a number"),
        ({"id": "Bad Id"}, "'id' must be"),
        ({"suppresses": ["nope"]}, "suppresses unknown rule ids"),
        ({"colour": "red"}, "unknown keys"),
        ({"when": []}, "at least one condition"),
    ],
)
def test_invalid_rule_names_the_rule(rule, message):
    with pytest.raises(HintRuleError) as err:
        HintEngine.from_text(_doc(**rule))
    assert message in str(err.value)
    if "id" not in rule:
        assert "'r1'" in str(err.value)


def test_unknown_feature_rejected_when_names_known():
    with pytest.raises(HintRuleError, match=r"'r1'.*unknown feature 'dlg.n_consultnat'"):
        HintEngine.from_text(_doc(when=["dlg.n_consultnat >= 2"]), known_features={"dlg.n_consultant"})


def test_duplicate_ids_and_bad_documents():
    two = {"hints": [{"id": "a", "priority": 1, "text": "x", "when": ["f > 0"]}] * 2}
    with pytest.raises(HintRuleError, match="'a'.*duplicate id"):
        HintEngine.from_text(yaml.safe_dump(two))
    with pytest.raises(HintRuleError, match="top-level 'hints' list"):
        HintEngine.from_text("rules: []")
    with pytest.raises(HintRuleError, match="not valid YAML"):
        HintEngine.from_text("hints: [unclosed")
