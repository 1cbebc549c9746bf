"""Behavioural tests of the trained scorer: invariance, direction, minimum functionality."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.utils.records import record
from yuyue.data.contract import Conversation
from yuyue.features.state import replay

TZ = timezone(timedelta(hours=8))
OPENING = [
    ("visitor", "你好，隆鼻大概多少钱"),
    ("consultant", "您好，请问怎么称呼您？"),
    ("visitor", "我姓王"),
    ("consultant", "王女士您好，您现在鼻子是什么情况呢？"),
    ("visitor", "鼻梁有点低，想垫高一点"),
    (
        "consultant",
        "了解，具体方案要医生面诊评估，价格因方案不同有差别。方便留个电话吗？医生可以给您详细说明",
    ),
]


def _chat(turns):
    start = datetime(2025, 11, 5, 14, 0, tzinfo=TZ)
    msgs = [
        {"at": (start + timedelta(seconds=40 * i)).isoformat(), "role": r, "text": t}
        for i, (r, t) in enumerate(turns)
    ]
    return Conversation.model_validate(record(messages=msgs, started_at=msgs[0]["at"], outcome=None))


def _p(model, turns, target="booked", closed=False):
    h = {
        k: v
        for k, v in model.hospital.items()
        if k in ("hospital_name", "hospital_city", "hospital_province")
    }
    return model.score(replay(_chat(turns), **h), closed=closed)[target].probability


@pytest.mark.parametrize("closed", [False, True])
def test_phone_digits_do_not_move_the_score(model, closed):
    a = _p(model, OPENING + [("visitor", "我电话13812345678")], closed=closed)
    b = _p(model, OPENING + [("visitor", "我电话15987654321")], closed=closed)
    assert a == b


def test_surname_does_not_move_the_score(model):
    other = [(r, t.replace("王", "李")) for r, t in OPENING]
    assert _p(model, OPENING) == _p(model, other)


def test_leaving_a_phone_number_raises_the_score(model):
    base = OPENING + [("visitor", "嗯")]
    with_phone = OPENING + [("visitor", "好的 138 1234 5678")]
    for target in ("booked", "arrived"):
        assert _p(model, with_phone, target) > _p(model, base, target)


def test_too_expensive_lowers_the_score(model):
    neutral = OPENING + [("visitor", "好的，我了解一下")]
    negative = OPENING + [("visitor", "太贵了，算了")]
    assert _p(model, negative) < _p(model, neutral)


def test_agreed_visit_beats_refusal(model):
    agreed = OPENING + [
        ("visitor", "可以，13812345678"),
        ("consultant", "好的，明天下午两点您方便来院吗？"),
        ("visitor", "可以，明天下午过去"),
    ]
    refused = OPENING + [("visitor", "不方便留电话，我再考虑考虑吧"), ("consultant", "好的，有问题随时咨询")]
    assert _p(model, agreed, closed=True) > 2 * _p(model, refused, closed=True)


@pytest.mark.parametrize(
    "question, concern",
    [("隆鼻大概多少钱？", "price"), ("做完会不会被同事知道", "privacy"), ("术后要恢复多久", "recovery")],
)
def test_concern_scripts_answer_the_concern_raised(model, question, concern):
    at = datetime(2025, 3, 5, 14, 0, tzinfo=TZ)
    session, _ = model.open_chat(started_at=at, department="整形美容", project="隆鼻")
    insight = model.on_message(session, "visitor", question, at)
    entries = [model.suggester.pool.get(s.id) for s in insight.suggestions]
    assert insight.suggestions
    assert {e.concern for e in entries if e is not None and e.concern} <= {concern}
