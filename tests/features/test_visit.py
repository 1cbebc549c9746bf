"""Visit-trace features: regions, locality, keyword and page categories, the feature dict."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from yuyue.data.contract import DEVICES, ENGINES, Page, Visit
from yuyue.features.visit import (
    KEYWORD_CATEGORIES,
    LOCALITIES,
    PAGE_CATEGORIES,
    VISIT_FEATURE_NAMES,
    keyword_category,
    locality,
    page_category,
    parse_region,
    visit_features,
)

HOSPITAL = {"hospital_name": "杭州美莱医院", "hospital_city": "杭州市", "hospital_province": "浙江省"}
TZ = timezone(timedelta(hours=8))

REGIONS = [
    ("浙江省杭州市 西湖区", ("浙江省", "杭州市")),
    ("浙江杭州", ("浙江省", "杭州市")),
    ("浙江 宁波", ("浙江省", "宁波市")),
    ("中国 浙江 温州", ("浙江省", "温州市")),
    ("浙江省杭州市(电信)", ("浙江省", "杭州市")),
    ("浙江省", ("浙江省", None)),
    ("杭州", ("浙江省", "杭州市")),
    ("上海市", ("上海市", "上海市")),
    ("上海", ("上海市", "上海市")),
    ("北京市朝阳区", ("北京市", "北京市")),
    ("重庆市渝北区", ("重庆市", "重庆市")),
    ("广东省深圳市", ("广东省", "深圳市")),
    ("内蒙古自治区呼和浩特市", ("内蒙古自治区", "呼和浩特市")),
    ("新疆乌鲁木齐", ("新疆维吾尔自治区", "乌鲁木齐市")),
    ("广西南宁", ("广西壮族自治区", "南宁市")),
    ("宁夏银川", ("宁夏回族自治区", "银川市")),
    ("吉林", ("吉林省", None)),
    ("吉林省吉林市", ("吉林省", "吉林市")),
    ("辽宁朝阳", ("辽宁省", "朝阳市")),
    ("海南", ("海南省", None)),
    ("青海海南州", ("青海省", "海南藏族自治州")),
    ("延边", ("吉林省", "延边朝鲜族自治州")),
    ("云南西双版纳", ("云南省", "西双版纳傣族自治州")),
    ("湖北仙桃", ("湖北省", "仙桃市")),
    ("香港", ("香港特别行政区", "香港特别行政区")),
    ("澳门特别行政区", ("澳门特别行政区", "澳门特别行政区")),
    ("台湾台北", ("台湾省", "台北市")),
    ("美国", ("美国", None)),
    ("日本东京", ("日本", None)),
    ("未知", (None, None)),
    ("局域网", (None, None)),
    ("   ", (None, None)),
    ("", (None, None)),
    (None, (None, None)),
]


@pytest.mark.parametrize(("region", "expected"), REGIONS)
def test_parse_region(region: str | None, expected: tuple[str | None, str | None]) -> None:
    assert parse_region(region) == expected


def test_region_data_covers_all_provinces() -> None:
    from importlib import resources

    rows = [
        line.split("\t")
        for line in resources.files("yuyue.features.lexicon")
        .joinpath("regions.tsv")
        .read_text(encoding="utf-8")
        .splitlines()
        if line and not line.startswith("#")
    ]
    provinces = [r[1] for r in rows if r[0] == "province"]
    cities = [r for r in rows if r[0] == "city"]
    assert len(provinces) == 34 == len(set(provinces))
    assert len(cities) > 330
    assert {r[2] for r in cities} == set(provinces)
    # every city name parses back to itself
    for _, name, province, *_ in cities:
        assert parse_region(province + name) == (province, name)


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("浙江省杭州市 西湖区", "local"),
        ("杭州", "local"),
        ("浙江宁波", "province"),
        ("浙江", "province"),
        ("上海市", "remote"),
        ("美国", "remote"),
        ("江苏苏州", "remote"),
        ("未知", "unknown"),
        (None, "unknown"),
    ],
)
def test_locality(region: str | None, expected: str) -> None:
    assert locality(region, "杭州市", "浙江省") == expected


def test_locality_in_a_municipality() -> None:
    assert locality("上海市浦东新区", "上海市", "上海市") == "local"
    assert locality("上海", "上海", "上海") == "local"
    assert locality("浙江杭州", "上海市", "上海市") == "remote"


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        ("杭州美莱医院", "brand"),
        ("美莱", "brand"),
        ("美莱医院怎么样", "brand"),
        ("杭州隆鼻", "city_project"),
        ("杭州哪家医院做双眼皮好", "city_project"),
        ("隆鼻多少钱", "price"),
        ("杭州双眼皮价格", "price"),
        ("鼻子歪了怎么办", "symptom"),
        ("尿频是怎么回事", "symptom"),
        ("隆鼻后遗症", "risk"),
        ("假体隆鼻失败", "risk"),
        ("隆鼻", "project"),
        ("双眼皮", "project"),
        ("今天天气", "other"),
        ("", "none"),
        (None, "none"),
    ],
)
def test_keyword_category(keyword: str | None, expected: str) -> None:
    assert keyword_category(keyword, "杭州美莱医院") == expected
    assert expected in KEYWORD_CATEGORIES


def test_keyword_category_without_a_configured_name() -> None:
    assert keyword_category("美莱", "本院") == "other"


@pytest.mark.parametrize(
    ("url", "title", "expected"),
    [
        ("https://www.example.com/anli/123.html", None, "case"),
        ("https://m.example.com/a/1.html", "隆鼻案例_某医院", "case"),
        ("https://m.example.com/zhuanjia/li.html", None, "expert"),
        ("https://www.example.com/doctor/2", None, "expert"),
        ("https://www.example.com/jiage/", None, "price"),
        ("https://www.example.com/a/9.html", "双眼皮价格表", "price"),
        ("https://www.example.com/luxian.html", None, "route"),
        ("https://www.example.com/contact", None, "route"),
        ("https://www.example.com/xiangmu/longbi.html", None, "project"),
        ("https://www.example.com/a/123.html", "假体隆鼻_某医院", "project"),
        ("https://www.example.com/", "某医院", "home"),
        ("https://www.example.com/index.html?bdjj=abc", None, "home"),
        ("https://www.example.com/news/5.html", "院内新闻", "other"),
        ("not a url", None, "other"),
        ("", None, "home"),
    ],
)
def test_page_category(url: str, title: str | None, expected: str) -> None:
    assert page_category(url, title) == expected
    assert expected in PAGE_CATEGORIES


def _full_visit(start: datetime) -> Visit:
    return Visit(
        visitor_id="v1",
        engine="baidu",
        keyword="杭州隆鼻多少钱",
        landing_url="https://m.example.com/anli/12.html?bdjj=xyz",
        referrer="https://www.baidu.com/s?wd=x",
        pages=[
            Page(url="https://m.example.com/anli/12.html", at=start - timedelta(seconds=300), dwell_s=120),
            Page(url="https://m.example.com/zhuanjia/li.html", at=start - timedelta(seconds=180)),
            Page(
                url="https://m.example.com/jiage/", title="价格", at=start - timedelta(seconds=60), dwell_s=40
            ),
        ],
        region="浙江省杭州市 西湖区",
        device="mobile",
        visits_before=3,
    )


def test_visit_features_on_a_full_visit() -> None:
    start = datetime(2024, 5, 6, 18, 30, tzinfo=TZ)  # a Monday
    f = visit_features(_full_visit(start), start, **HOSPITAL)
    assert set(f) <= set(VISIT_FEATURE_NAMES)
    assert f["visit.has_trace"] == 1.0
    assert f["visit.engine=baidu"] == 1.0
    assert f["visit.kw=price"] == 1.0
    assert f["visit.landing=case"] == 1.0
    assert f["visit.ad_click"] == 1.0
    assert f["visit.pages_n"] == 3.0
    assert f["visit.pages.case"] == f["visit.pages.expert"] == f["visit.pages.price"] == 1.0
    assert f["visit.pages.route"] == 0.0
    # 120 + (gap to the next page: 120) + 40
    assert f["visit.dwell_total_log1p"] == pytest.approx(math.log1p(280))
    assert f["visit.dwell_max_log1p"] == pytest.approx(math.log1p(120))
    assert f["visit.browse_before_chat_log1p"] == pytest.approx(math.log1p(300))
    assert f["visit.visits_before"] == 3.0 and f["visit.returning"] == 1.0
    assert f["visit.local=local"] == 1.0
    assert f["visit.device=mobile"] == 1.0
    assert f["visit.weekday=0"] == 1.0
    assert f["visit.hour_sin"] ** 2 + f["visit.hour_cos"] ** 2 == pytest.approx(1.0)
    assert f["visit.hour_cos"] > 0.0 > f["visit.hour_sin"]  # 18:30 is in the evening quadrant


@pytest.mark.parametrize("visit", [None, Visit()])
def test_visit_features_without_a_trace(visit: Visit | None) -> None:
    start = datetime(2024, 5, 12, 9, 0, tzinfo=TZ)  # a Sunday
    f = visit_features(visit, start, **HOSPITAL)
    assert set(f) <= set(VISIT_FEATURE_NAMES)
    assert f["visit.has_trace"] == 0.0
    assert f["visit.engine=unknown"] == 1.0
    assert f["visit.kw=none"] == 1.0
    assert f["visit.landing=none"] == 1.0
    assert f["visit.local=unknown"] == 1.0
    assert f["visit.device=unknown"] == 1.0
    assert f["visit.pages_n"] == 0.0 and f["visit.dwell_total_log1p"] == 0.0
    assert f["visit.weekday=6"] == 1.0


def test_visit_features_on_odd_values() -> None:
    start = datetime(2024, 5, 6, 0, 0, tzinfo=UTC)
    visit = Visit(
        keyword=" ",
        landing_url="::::",
        pages=[Page(url=""), Page(url="https://x.com/a", at=start + timedelta(hours=1))],
        region="火星",
        visits_before=500,
    )
    f = visit_features(visit, start, **HOSPITAL)
    assert set(f) <= set(VISIT_FEATURE_NAMES)
    assert f["visit.kw=none"] == 1.0
    assert f["visit.local=unknown"] == 1.0
    assert f["visit.visits_before"] == 10.0
    assert f["visit.browse_before_chat_log1p"] == 0.0  # page after the chat start


def test_feature_names_are_fixed_and_unique() -> None:
    assert len(VISIT_FEATURE_NAMES) == len(set(VISIT_FEATURE_NAMES))
    for e in ENGINES:
        assert f"visit.engine={e}" in VISIT_FEATURE_NAMES
    for d in DEVICES:
        assert f"visit.device={d}" in VISIT_FEATURE_NAMES
    for x in LOCALITIES:
        assert f"visit.local={x}" in VISIT_FEATURE_NAMES
    for k in KEYWORD_CATEGORIES:
        assert f"visit.kw={k}" in VISIT_FEATURE_NAMES


@pytest.mark.parametrize(
    ("url", "paid"),
    [
        ("https://m.example.com/anli/12.html?bdjj=xyz", True),  # Baidu 竞价
        ("https://m.example.com/anli/12.html?sgjj=xyz", True),  # Sogou 竞价 (the reference desk's ?sgjj)
        ("https://m.example.com/anli/12.html?from=sgjjx", False),  # only the parameter name counts
        ("https://m.example.com/anli/12.html", False),
    ],
)
def test_paid_clicks_are_read_from_the_landing_parameters(url, paid) -> None:
    start = datetime(2024, 5, 6, 18, 30, tzinfo=TZ)
    visit = Visit(engine="sogou", landing_url=url)
    assert visit_features(visit, start, **HOSPITAL).get("visit.ad_click", 0.0) == (1.0 if paid else 0.0)
