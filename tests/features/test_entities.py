"""Entity extraction: visit times against a fixed message time, and the visitor's facts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from yuyue.features.entities import MessageEntities, cn_number, extract_entities, parse_visit_time
from yuyue.features.normalize import normalize

CST = timezone(timedelta(hours=8))
AT = datetime(2025, 3, 5, 10, 0, tzinfo=CST)  # a Wednesday, 10:00


def _dt(month: int, day: int, hour: int, minute: int = 0, year: int = 2025) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CST)


@pytest.mark.parametrize(
    ("text", "expected", "expression"),
    [
        ("明天下午", _dt(3, 6, 14), "明天下午"),
        ("后天上午可以", _dt(3, 7, 9), "后天上午"),
        ("大后天过来", _dt(3, 8, 9), "大后天"),
        ("今天晚上过来", _dt(3, 5, 19), "今天晚上"),
        ("今晚有空", _dt(3, 5, 19), "今晚"),
        ("明天中午可以吗", _dt(3, 6, 12), "明天中午"),
        ("今天可以过来吗", _dt(3, 5, 11), "今天"),
        ("周六", _dt(3, 8, 9), "周六"),
        ("星期六有空", _dt(3, 8, 9), "星期六"),
        ("礼拜六去", _dt(3, 8, 9), "礼拜六"),
        ("周三过来", _dt(3, 12, 9), "周三"),  # said on a Wednesday: next week's
        ("这周五可以", _dt(3, 7, 9), "这周五"),
        ("下周六吧", _dt(3, 15, 9), "下周六"),
        ("下星期一上午", _dt(3, 10, 9), "下星期一上午"),
        ("这周末可以吗", _dt(3, 8, 9), "这周末"),
        ("下周末过来", _dt(3, 15, 9), "下周末"),
        ("3号过来", _dt(4, 3, 9), "3号"),
        ("8号来", _dt(3, 8, 9), "8号"),
        ("3月8号", _dt(3, 8, 9), "3月8号"),
        ("3月1日预约", _dt(3, 1, 9, year=2026), "3月1日"),
        ("4月12日下午两点半可以", _dt(4, 12, 14, 30), "4月12日下午两点半"),
        ("2025年3月20日上午过来", _dt(3, 20, 9), "2025年3月20日上午"),
        ("2025-03-20可以来", _dt(3, 20, 9), "2025-03-20"),
        ("10点半到", _dt(3, 5, 10, 30), "10点半"),
        ("9点到", _dt(3, 6, 9), "9点"),  # already past: tomorrow
        ("下午3点", _dt(3, 5, 15), "下午3点"),
        ("3点", _dt(3, 5, 15), "3点"),
        ("15:30可以", _dt(3, 5, 15, 30), "15:30"),
        ("明天上午10点半", _dt(3, 6, 10, 30), "明天上午10点半"),
        ("周日下午两点", _dt(3, 9, 14), "周日下午两点"),
        ("明天晚上7点", _dt(3, 6, 19), "明天晚上7点"),
        ("今天没空,明天下午吧", _dt(3, 6, 14), "明天下午"),
        # 能去 is a visit cue as 可以 is (messages over 8 characters need one)
        ("我明天下午应该能去的", _dt(3, 6, 14), "明天下午"),
        ("那我周六上午能去吗医生", _dt(3, 8, 9), "周六上午"),
        ("下周六我能去你们那里吗", _dt(3, 15, 9), "下周六"),
        # coming, and an activity question in the same message: still a visit
        ("明天下午来，做完能吃辣吗", _dt(3, 6, 14), "明天下午"),
        ("周六上午过来面诊，之后能去健身吗", _dt(3, 8, 9), "周六上午"),
    ],
)
def test_visit_time(text: str, expected: datetime, expression: str) -> None:
    when, said = parse_visit_time(normalize(text), AT)
    assert (when, said) == (expected, expression)
    assert when is not None and when.tzinfo == CST


@pytest.mark.parametrize(
    "text",
    [
        "今天下午吃了药还是疼",
        "有一点疼",
        "差一点就做了",
        "每周六都有专家",
        "上周六去过别家",
        "3号楼在哪",
        "坐地铁2号线",
        "一周一次",
        "做完要休息3天",
        "我想咨询一下双眼皮",
        "周一到周五都有专家坐诊的",
        "打48周一般就可以转阴",
        "昨天晚上过来看过",
        "是后天形成的,可以治吗",
        "11.8日复查的结果可以吗",
        # 能去掉 / 能去除 (can remove), back to work, cannot go: not a visit
        "能去掉疤吗",
        "明天下午能去掉疤吗",
        "今天晚上能去掉痘印吗",
        "明天下午能去除眼袋吗医生",
        "做完明天下午能去上班吗",
        "明天下午我有事不能去了",
        # a day for an activity after treatment, not for coming over
        "明天我能去游泳吗",
        "周六能去健身吗",
        "做完后天可以洗澡吗",
        "明天下午可以喝酒吗",
    ],
)
def test_not_a_visit_time(text: str) -> None:
    assert parse_visit_time(normalize(text), AT) == (None, None)


def _entities(text: str, role: str = "visitor") -> MessageEntities:
    return extract_entities(normalize(text), role, AT)


@pytest.mark.parametrize(
    ("text", "surname", "form", "gender"),
    [
        ("我姓王", "王", None, None),
        ("免贵姓欧阳,女", "欧阳", None, None),
        ("叫我王姐就行", "王", "王姐", "female"),
        ("叫我小李", "李", "小李", None),
        ("我是老张", "张", "老张", None),
        ("我是陈女士", "陈", "陈女士", "female"),
        ("刘先生,想咨询一下", "刘", "刘先生", "male"),
        ("我叫王小明,我是男的", "王", None, "male"),
        ("我老公想做隆鼻", None, None, "female"),
        ("帮我女朋友问问双眼皮", None, None, "male"),
        ("本人女,30岁", None, None, "female"),
        ("想咨询一下", None, None, None),
    ],
)
def test_visitor_person_facts(text: str, surname: str | None, form: str | None, gender: str | None) -> None:
    e = _entities(text)
    assert (e.surname, e.address_form, e.gender) == (surname, form, gender)


def test_consultant_sets_address_form_only() -> None:
    e = _entities("王女士您好,明天下午3点方便过来吗", role="consultant")
    assert e.address_form == "王女士"
    assert e.surname is None and e.gender is None
    assert e.visit_time == _dt(3, 6, 15)


def test_consultant_facts_are_not_the_visitors() -> None:
    e = _entities("我们医院在上海,电话13812345678,今年25周年", role="consultant")
    assert e.regions == [] and e.contact_kinds == [] and e.age is None


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("我今年25", 25),
        ("25岁", 25),
        ("我三十岁了", 30),
        ("30多岁", 30),
        ("二十七八岁", 27),
        ("年龄:45", 45),
        ("孩子3岁了", None),
        ("我老公35岁", None),
        ("今年3月做的", None),
        ("今年2024年", None),
    ],
)
def test_age(text: str, age: int | None) -> None:
    assert _entities(text).age == age


@pytest.mark.parametrize(
    ("text", "projects"),
    [
        ("想割双眼皮,顺便开眼角", ["双眼皮", "开眼角"]),
        ("垫鼻子多少钱,假体隆鼻呢", ["隆鼻"]),
        ("前列腺炎能治好吗", ["前列腺炎"]),
        ("你好", []),
    ],
)
def test_projects(text: str, projects: list[str]) -> None:
    assert _entities(text).projects == projects


@pytest.mark.parametrize(
    ("text", "regions"),
    [
        ("我在上海", ["上海"]),
        ("温州的", ["温州"]),
        ("浙江杭州的", ["浙江", "杭州"]),
        ("我是大同人", ["大同"]),
        ("大同小异", []),
        ("内蒙古呼和浩特", ["内蒙古", "呼和浩特"]),
        ("想做双眼皮", []),
    ],
)
def test_regions(text: str, regions: list[str]) -> None:
    assert _entities(text).regions == regions


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("微信就是手机号13812345678", ["phone", "wechat"]),
        ("电话138 1234 5678", ["phone"]),
        ("加我qq 123456", ["qq"]),
        ("vx: lily_0801", ["wechat"]),
    ],
)
def test_contact_kinds(text: str, kinds: list[str]) -> None:
    assert _entities(text).contact_kinds == kinds


def test_given_tokens_and_pii_are_used() -> None:
    text = normalize("我姓王,想做隆鼻")
    e = extract_entities(text, "visitor", AT, tokens=["吸脂"], pii=[])
    assert e.projects == ["吸脂"] and e.surname is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("25", 25), ("十八", 18), ("三十", 30), ("三十五", 35), ("两", 2), ("九十", 90), ("岁", None)],
)
def test_cn_number(text: str, value: int | None) -> None:
    assert cn_number(text) == value
