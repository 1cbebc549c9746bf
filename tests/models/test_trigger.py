"""Trigger: when the console must not offer ordinary suggestions."""

from __future__ import annotations

import pytest

from yuyue.models.replies.trigger import Trigger


@pytest.fixture(scope="module")
def trigger() -> Trigger:
    return Trigger.default()


@pytest.mark.parametrize(
    "text",
    ["我真的不想活了", "活着没意思，想死", "我想自杀", "割腕会不会很疼"],
)
def test_self_harm_gives_no_suggestions(trigger: Trigger, text: str) -> None:
    r = trigger.check(text)
    assert (r.action, r.reason) == ("none", "self_harm")


@pytest.mark.parametrize(
    "text",
    ["我未成年可以做双眼皮吗", "我才15岁，想做人流", "我今年十六岁", "我是初中生", "我女儿16岁怀孕了怎么办"],
)
def test_minors_give_no_suggestions(trigger: Trigger, text: str) -> None:
    assert trigger.check(text).action == "none"


@pytest.mark.parametrize(
    "text",
    ["我现在大出血怎么办", "胸痛得厉害，喘不上气", "孩子高烧不退还抽搐", "我老公突然昏迷了", "剧烈腹痛"],
)
def test_emergency_gives_only_the_safety_reply(trigger: Trigger, text: str) -> None:
    r = trigger.check(text)
    assert r.action == "emergency" and r.reason == "emergency"
    assert "120" in trigger.safety_reply


@pytest.mark.parametrize(
    "text",
    [
        "笑死我了",
        "想死你了",
        "热死了，今天能过去吗",
        "人流会不会大出血？",
        "做完隆鼻会不会呼吸困难",
        "我今年28岁，想做双眼皮",
        "孩子8岁，想做牙齿矫正",
        "隆鼻多少钱",
        "",
    ],
)
def test_ordinary_messages_get_suggestions(trigger: Trigger, text: str) -> None:
    assert trigger.check(text).action == "suggest"
