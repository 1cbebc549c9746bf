"""Visitor and consultant signals: one table of positives and negatives per signal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yuyue.features.normalize import normalize
from yuyue.features.signals import (
    CONCERN_ANSWERS,
    CONCERN_SIGNALS,
    CONCERN_TRIGGERS,
    CONCERNS,
    CONSULTANT_SIGNALS,
    VISITOR_SIGNALS,
    consultant_signals,
    expand_pattern,
    visitor_signals,
)
from yuyue.features.tokenize import tokenize

MEDQA = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "medqa_dev.jsonl"


def _visitor(text: str) -> frozenset[str]:
    t = normalize(text)
    return visitor_signals(t, tokenize(t))


def _consultant(text: str) -> frozenset[str]:
    t = normalize(text)
    return consultant_signals(t, tokenize(t))


# signal → (messages that must fire it, messages that must not)
VISITOR_CASES: dict[str, tuple[list[str], list[str]]] = {
    "asks_price": (
        ["隆鼻多少钱", "双眼皮价格大概是多少？", "现在有没有优惠", "做一次要花多少"],
        ["我想了解一下隆鼻", "好的谢谢"],
    ),
    "asks_address": (
        ["你们医院在哪里", "地址发我一下", "从火车站怎么过去", "离西湖远吗"],
        ["多少钱", "我在上班"],
    ),
    "asks_time": (
        ["你们几点下班", "周末上班吗", "什么时候可以过去", "需要提前预约吗"],
        ["我下班了", "多少钱"],
    ),
    "asks_prepare": (
        ["去的时候需要带什么吗？", "要准备什么吗", "检查需要空腹吗", "要带身份证吗", "带上哪些资料"],
        ["我带孩子一起去", "准备好了", "多少钱"],
    ),
    "asks_doctor": (
        ["哪个医生做得好", "主刀医生是谁", "医生技术怎么样", "能挂专家号吗"],
        ["医生你好", "我有点怕"],
    ),
    "asks_insurance": (["能用医保吗", "可以报销吗", "社保能刷吗"], ["多少钱", "安全吗"]),
    "asks_effect": (["效果怎么样", "能维持多久", "这个能根治吗", "做完是什么样"], ["多少钱", "你好"]),
    "concern_price": (
        ["太贵了", "有点贵", "我预算有限", "能便宜点吗", "贵不贵"],
        ["不贵", "不算贵", "您贵姓", "贵院在哪", "我在贵州"],
    ),
    "concern_safety": (
        ["安全吗", "有没有副作用", "会不会有后遗症", "你们正规吗", "我担心麻醉出问题"],
        ["没有风险就好", "你好"],
    ),
    "concern_pain": (
        ["疼不疼啊", "会不会很痛", "怕疼", "要打麻药吗", "不会很疼吧"],
        ["一点都不痛", "不疼", "你好"],
    ),
    "concern_recovery": (
        ["恢复期多久", "多久能上班", "要住院吗", "会留疤吗", "影响上班吗"],
        ["效果怎么样", "你好"],
    ),
    "concern_effect": (
        ["怕效果不好", "担心做出来不自然", "会不会复发", "我之前做的没效果"],
        ["效果怎么样", "你好"],
    ),
    "concern_privacy": (["不想让家里人知道", "会保密吗", "看得出来吗", "怕被同事发现"], ["我知道了", "你好"]),
    "concern_distance": (
        ["有点远", "我在外地", "过去一趟不方便", "当天能回来吗"],
        ["不远", "离得不远", "你好"],
    ),
    "hesitation": (
        ["我考虑一下", "再看看吧", "回头再说", "我跟家人商量商量", "还没想好"],
        ["好的", "多少钱"],
    ),
    "comparison": (
        ["别的医院说只要八千", "公立医院能做吗", "我去过人民医院", "你们和其他医院比有什么区别"],
        ["还有其他问题吗", "你好"],
    ),
    "refuses_contact": (
        ["不方便留电话", "先不留了", "电话不方便", "不要打电话给我", "就在这里聊吧"],
        ["可以加微信", "好的"],
    ),
    "gives_contact_intent": (["可以加微信", "你加我吧", "我的电话是", "微信同号"], ["不可以加微信", "你好"]),
    "agrees": (
        ["好的", "嗯嗯", "可以", "行，那就明天", "没问题", "帮我预约一下"],
        ["不行", "不可以", "可以吗", "好疼"],
    ),
    "negative": (["太贵了，算了", "不做了", "不需要了", "骗子"], ["不算太贵", "好的", "算了一下"]),
    "urgent": (["越快越好", "今天能做吗", "比较急", "最快什么时候"], ["不急", "急性肠胃炎", "你好"]),
    "greeting": (["你好", "在吗", "医生您好，我想问一下", "hello"], ["多少钱", "谢谢"]),
    "question": (["多少钱", "安全吗", "怎么走", "可以吗?", "是不是要住院"], ["好的", "我考虑一下", "谢谢"]),
}

CONSULTANT_CASES: dict[str, tuple[list[str], list[str]]] = {
    "asks_name": (["请问怎么称呼您？", "您贵姓", "您姓什么"], ["您好", "贵院地址在这里"]),
    "asks_contact": (
        ["方便留个电话吗", "可以加一下您的微信", "留下您的联系方式", "我给您打个电话"],
        ["您好", "我们主任很好"],
    ),
    "asks_condition": (
        ["您现在是什么情况", "这种情况多久了", "之前有没有做过检查", "方便发张照片吗"],
        ["祝您早日康复", "好的"],
    ),
    "asks_expectation": (
        ["您希望达到什么效果", "想要什么样的效果", "您最在意哪方面", "想自然一点还是明显一些"],
        ["好的", "地址在文三路"],
    ),
    "explains": (
        ["一般来说需要先面诊", "这个手术主要是通过假体来垫高", "建议您先做个检查"],
        ["好的", "再见"],
    ),
    "answers_price": (
        ["费用大概在八千左右", "这个项目3000元", "价格都是明码标价的", "可以分期"],
        ["好的", "您好"],
    ),
    "answers_safety": (["我们是正规医院，您放心", "风险很小", "手术很安全"], ["好的", "您好"]),
    "answers_pain": (["全程麻醉，基本不疼", "是微创的", "痛感很轻"], ["好的", "您好"]),
    "answers_recovery": (["恢复期一周左右", "7天就可以拆线", "不影响工作"], ["好的", "您好"]),
    "answers_effect": (["效果很自然", "可以永久维持", "给您看下案例"], ["好的", "您好"]),
    "answers_privacy": (["我们会保密的", "一对一接诊", "单独诊室，不会泄露"], ["好的", "您好"]),
    "answers_distance": (
        ["坐地铁2号线就到", "医院在文三路附近", "有停车场", "可以打车过来"],
        ["好的", "您好"],
    ),
    "recommends_expert": (["我们李主任有20年经验", "给您推荐专家", "王医生擅长鼻综合"], ["好的", "您好"]),
    "mentions_offer": (["这个月有优惠活动", "现在打8折", "面诊免费"], ["好的", "您好"]),
    "proposes_time": (
        ["明天下午过来方便吗", "您什么时候有空", "帮您预约一下", "下午3点可以吗"],
        ["好的", "您好"],
    ),
    "gives_address": (
        ["地址是西湖区文三路100号", "我们医院位于文三路", "医院在杭州市西湖区文三路"],
        ["好的", "您好"],
    ),
    "question": (["您多大了？", "您是想做双眼皮吗", "您看什么时候方便"], ["好的", "祝您早日康复"]),
    "closing": (["祝您早日康复", "有问题随时联系我", "感谢您的咨询", "不客气"], ["您好", "多少钱"]),
}


def test_names_are_documented_and_unique() -> None:
    import yuyue.features.signals as module

    for name in (*VISITOR_SIGNALS, *CONSULTANT_SIGNALS):
        assert f"``{name}``" in (module.__doc__ or "") or name.startswith("answers_")
    assert len(set(VISITOR_SIGNALS)) == len(VISITOR_SIGNALS)
    assert len(set(CONSULTANT_SIGNALS)) == len(CONSULTANT_SIGNALS)
    assert set(VISITOR_CASES) == set(VISITOR_SIGNALS)
    assert set(CONSULTANT_CASES) == set(CONSULTANT_SIGNALS)


def test_concern_maps() -> None:
    assert CONCERNS == ("price", "safety", "pain", "recovery", "effect", "privacy", "distance")
    for c in CONCERNS:
        assert CONCERN_SIGNALS[c] in VISITOR_SIGNALS
        assert CONCERN_ANSWERS[c] in CONSULTANT_SIGNALS
    assert CONCERN_ANSWERS["price"] == "answers_price"
    assert set(CONCERN_TRIGGERS) == set(CONCERNS)
    for c, triggers in CONCERN_TRIGGERS.items():
        assert CONCERN_SIGNALS[c] in triggers and set(triggers) <= set(VISITOR_SIGNALS)
    assert "asks_price" in CONCERN_TRIGGERS["price"]


@pytest.mark.parametrize("signal", VISITOR_SIGNALS)
def test_visitor_signal_table(signal: str) -> None:
    positives, negatives = VISITOR_CASES[signal]
    for text in positives:
        assert signal in _visitor(text), f"{signal} should fire on {text!r}: {sorted(_visitor(text))}"
    for text in negatives:
        assert signal not in _visitor(text), f"{signal} should not fire on {text!r}"


@pytest.mark.parametrize("signal", CONSULTANT_SIGNALS)
def test_consultant_signal_table(signal: str) -> None:
    positives, negatives = CONSULTANT_CASES[signal]
    for text in positives:
        assert signal in _consultant(text), f"{signal} should fire on {text!r}: {sorted(_consultant(text))}"
    for text in negatives:
        assert signal not in _consultant(text), f"{signal} should not fire on {text!r}"


def test_outputs_use_only_declared_names() -> None:
    for text in ("太贵了，算了", "你好，在吗？双眼皮多少钱", "不方便留电话，我考虑一下"):
        assert _visitor(text) <= set(VISITOR_SIGNALS)
    for text in ("您好，怎么称呼？方便留个电话吗", "地址是文三路100号，祝您早日康复"):
        assert _consultant(text) <= set(CONSULTANT_SIGNALS)


def test_empty_and_traditional_text() -> None:
    assert visitor_signals("", []) == frozenset()
    assert consultant_signals("", []) == frozenset()
    # traditional and full-width input is folded by normalize first
    assert "asks_price" in _visitor("雙眼皮多少錢？")
    assert "question" in _visitor("雙眼皮多少錢？")


def test_pattern_expansion() -> None:
    assert expand_pattern("(?:担心|怕)(?:价格)?") == ["怕", "怕价格", "担心", "担心价格"]
    assert expand_pattern(r"\d折") == [f"{d}折" for d in "0123456789"]
    assert expand_pattern("离.{1,8}远") is None
    assert expand_pattern("^好") is None


@pytest.mark.skipif(not MEDQA.exists(), reason="shared real data not present")
def test_rates_on_real_patient_questions() -> None:
    texts = []
    with MEDQA.open(encoding="utf-8") as fh:
        for line in fh:
            for m in json.loads(line)["messages"]:
                if m["role"] == "visitor":
                    texts.append(normalize(m["text"]))
    sigs = [visitor_signals(t, tokenize(t)) for t in texts]
    rate = {name: sum(name in s for s in sigs) / len(sigs) for name in VISITOR_SIGNALS}
    # these are questions to a doctor: nearly all read as questions, few as bookings talk
    assert rate["question"] > 0.9
    assert rate["greeting"] > 0.05
    assert rate["refuses_contact"] < 0.01
    assert rate["gives_contact_intent"] < 0.01
    assert rate["agrees"] < 0.02
    assert rate["negative"] < 0.02
    assert rate["asks_price"] < 0.05
