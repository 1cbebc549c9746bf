"""The console's 医院资料 tab (page_knowledge.js) in a real headless Chromium against a real server: a
supervisor sees the knowledge the API holds, read-only; an admin edits a doctor's leave and a project's
price and saves (the API then holds them, one revision later); an activity whose wording breaks the
compliance guard is refused with the rule shown and nothing stored; the day check lists who is on duty.
Skips without Chromium (see ``test_console_browser.py``); a screenshot is written to
``$TMPDIR/yuyue-console-knowledge.png``."""

# ruff: noqa: F811  (fixtures come from test_console_browser)
from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import httpx
import pytest

from tests.serving.test_console_browser import (  # noqa: F401
    _connect,
    _shot,
    browser_page,
    chromium,
    running,
)
from yuyue.config import Settings

pytestmark = pytest.mark.integration

MONDAY = date(2027, 3, 1)
DOC = {
    "hospital": {"address": "示例路1号", "directions": "地铁2号线示例站3号口出"},
    "departments": [
        {
            "name": "皮肤科",
            "projects": [{"name": "痤疮治疗", "aliases": ["痘痘"], "price_low": 200, "price_high": 2000}],
        },
        {"name": "眼科", "projects": [{"name": "近视手术"}]},
    ],
    "doctors": [
        {
            "name": "孙一",
            "title": "主任医师",
            "department": "皮肤科",
            "specialties": ["痤疮治疗"],
            "duty": [{"weekday": 1}],
        },
        {
            "name": "郑二",
            "title": "副主任医师",
            "department": "眼科",
            "duty": [{"weekday": 2, "start": "08:30", "end": "12:00"}],
        },
        # two ranges a day, given once for every duty day
        {
            "name": "钱三",
            "title": "主治医师",
            "department": "眼科",
            "hours": "09:00-12:00,14:00-17:30",
            "duty": [{"weekday": 1}],
        },
    ],
    "activities": [
        {
            "id": "spring",
            "title": "皮肤检查预约",
            "wording": "首次到院的皮肤检查可以提前预约时段",
            "valid_from": "2027-01-01",
            "valid_to": "2027-12-31",
            "departments": ["皮肤科"],
        }
    ],
}


@pytest.fixture(scope="module")
def kserver(model, tmp_path_factory) -> Iterator[dict]:
    """A real uvicorn server with a supervisor and an admin key."""
    from yuyue.serving.app import create_app

    var = tmp_path_factory.mktemp("knowledge-var")
    settings = Settings(var_dir=var, model_poll_seconds=0, database_url=None, redis_url=None)
    app = create_app(settings, model, "test")
    keys = app.state.yuyue.keys
    raw = {
        "supervisor": keys.create("k-supervisor", "supervisor")[1],
        "admin": keys.create("k-admin", "admin")[1],
        "h1-admin": keys.create("k-h1-admin", "admin", hospitals=["Hosp-1"])[1],
    }
    with running(app, "knowledge-uvicorn") as url:
        yield {"url": url, "keys": raw}


def test_knowledge_tab(kserver, browser_page) -> None:
    from playwright.sync_api import expect

    page, base, keys = browser_page, kserver["url"], kserver["keys"]
    adm, sup = {"X-API-Key": keys["admin"]}, {"X-API-Key": keys["supervisor"]}
    assert httpx.put(base + "/v1/knowledge", json=DOC, headers=adm).status_code == 200

    # ---- a supervisor reads it ------------------------------------------------------------------
    page.goto(base + "/")
    _connect(page, keys["supervisor"], "主管")
    page.click("#tab-knowledge")
    expect(page.locator("#view-knowledge")).to_be_visible()
    expect(page.locator("#k-readonly")).to_be_visible()
    expect(page.locator("#k-save")).to_have_count(0)
    row = page.locator('#k-doctors tbody tr[data-name="孙一"]')
    expect(row.locator('[data-k="duty"]')).to_have_text("周一 08:00-17:00")
    split = page.locator('#k-doctors tbody tr[data-name="钱三"] [data-k="duty"]')
    expect(split).to_have_text("周一 09:00-12:00,14:00-17:30")
    expect(row.locator('[data-k="department"]')).to_have_text("皮肤科")
    expect(page.locator('#k-projects tbody tr[data-name="痤疮治疗"] [data-k="price_high"]')).to_have_text(
        "2000"
    )
    today = date.today().isoformat()
    validity = "未开始" if today < "2027-01-01" else "已过期" if today > "2027-12-31" else "有效"
    expect(page.locator('#k-activities tbody tr[data-id="spring"] .k-valid')).to_have_text(validity)
    # the day check: the server's answer for a Monday
    page.fill("#k-day-date", MONDAY.isoformat())
    page.click("#k-day-go")
    expect(page.locator('#k-day-result [data-k="on"]')).to_contain_text("孙一")
    expect(page.locator('#k-day-result [data-k="on"]')).to_contain_text(
        "钱三主治医师（眼科 09:00-12:00,14:00-17:30）"
    )
    expect(page.locator('#k-day-result [data-k="off"]')).to_contain_text("郑二（当天无排班）")
    # all departments: the activity limited to 皮肤科 is not listed
    expect(page.locator('#k-day-result [data-k="activities"]')).to_have_text("有效活动：无")
    page.select_option("#k-day-dept", "皮肤科")
    page.click("#k-day-go")
    expect(page.locator('#k-day-result [data-k="activities"]')).to_have_text("有效活动：皮肤检查预约")

    # ---- an admin edits and saves ---------------------------------------------------------------
    page.goto(base + "/")
    _connect(page, keys["admin"], "管理员")
    page.click("#tab-knowledge")
    expect(page.locator("#k-save")).to_be_visible()
    row = page.locator('#k-doctors tbody tr[data-name="孙一"]')
    leave_day = MONDAY + timedelta(days=7)
    row.locator('[data-k="leave"]').fill(f"{leave_day.isoformat()}")
    page.locator('#k-projects tbody tr[data-name="痤疮治疗"] [data-k="price_high"]').fill("2500")
    page.click("#k-save")
    expect(page.locator("#k-status")).to_contain_text("已保存（版本 2）")
    got = httpx.get(base + "/v1/knowledge", headers=sup).json()
    assert got["rev"] == 2
    sun = next(d for d in got["knowledge"]["doctors"] if d["name"] == "孙一")
    assert sun["leave"] == [{"first_day": leave_day.isoformat(), "last_day": leave_day.isoformat()}]
    # a duty without hours keeps the older 08:00-17:00 written out (``hours``, unset, is null)
    assert sun["duty"] == [{"weekday": 1, "start": "08:00", "end": "17:00", "hours": None}]
    # the doctor's hours come back on its duty day: the same hours, written per day
    qian = next(d for d in got["knowledge"]["doctors"] if d["name"] == "钱三")
    assert qian["hours"] is None
    assert qian["duty"] == [{"weekday": 1, "start": None, "end": None, "hours": "09:00-12:00,14:00-17:30"}]
    assert got["knowledge"]["departments"][0]["projects"][0]["price_high"] == 2500
    day = httpx.get(base + "/v1/knowledge/day", params={"date": leave_day.isoformat()}, headers=sup).json()
    assert [d["name"] for d in day["on_duty"]] == ["钱三"]  # 孙一 on leave that Monday
    assert {"name": "孙一", "department": "皮肤科", "why": "leave"} in day["off"]

    # ---- wording that breaks the guard: refused, the rule shown, nothing stored ----------------------
    page.locator('#k-activities tbody tr[data-id="spring"] [data-k="wording"]').fill("保证治愈，无效全额退款")
    page.click("#k-save")
    expect(page.locator("#k-status")).to_contain_text("activities.0.wording")
    expect(page.locator("#error-bar")).to_contain_text("compliance rule")
    assert httpx.get(base + "/v1/knowledge", headers=sup).json()["rev"] == 2
    # a duty typed wrongly is caught before sending
    row.locator('[data-k="duty"]').fill("礼拜八 9点")
    page.click("#k-save")
    expect(page.locator("#k-status")).to_contain_text("出诊时间格式不对")
    _shot(page, "knowledge")
    assert not page.problems, page.problems


def test_knowledge_tab_picks_a_hospital(kserver, browser_page) -> None:
    """A key scoped to one hospital sees a picker of the default document and its own: its own first
    (editable, empty: the chats use the default), the default read-only; saving writes its own only."""
    from playwright.sync_api import expect

    page, base, keys = browser_page, kserver["url"], kserver["keys"]
    adm = {"X-API-Key": keys["admin"]}
    assert httpx.put(base + "/v1/knowledge", json=DOC, headers=adm).status_code == 200
    default = httpx.get(base + "/v1/knowledge", headers=adm).json()
    page.goto(base + "/")
    _connect(page, keys["h1-admin"], "管理员")
    page.click("#tab-knowledge")
    pick = page.locator("#k-hospital-pick")
    expect(pick).to_have_value("Hosp-1")
    expect(pick.locator("option")).to_have_count(2)
    expect(page.locator("#k-uses-default")).to_be_visible()
    expect(page.locator("#k-save")).to_be_visible()
    pick.select_option(default["hospital_id"])
    expect(page.locator("#k-readonly")).to_be_visible()
    expect(page.locator('#k-doctors tbody tr[data-name="孙一"]')).to_have_count(1)
    pick.select_option("Hosp-1")
    expect(page.locator("#k-save")).to_be_visible()
    page.locator('#k-hospital [data-k="name"]').fill("东城示例医院")
    page.click("#k-save")
    expect(page.locator("#k-status")).to_contain_text("已保存（版本 1）")
    own = httpx.get(base + "/v1/knowledge", params={"hospital": "Hosp-1"}, headers=adm).json()
    assert own["rev"] == 1 and own["knowledge"]["hospital"]["name"] == "东城示例医院"
    assert httpx.get(base + "/v1/knowledge", headers=adm).json()["rev"] == default["rev"]
    assert not page.problems, page.problems
