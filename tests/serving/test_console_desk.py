"""The console's 工作台 tab (issue 16) in a real headless Chromium against a real server: a supervisor
sees the work list as the API ranks it, assigns a lead's call, reveals the number (the API keeps it
masked), records a call result and snoozes a task; sees tomorrow's arrivals, marks one arrived, and
opens a patient's history (flag, counts, masked contacts). Every change is checked through the API.
Skips without Chromium (see ``test_console_browser.py``; ``scripts/ensure_browser.sh`` installs it);
a screenshot of the tab is written to ``$TMPDIR/yuyue-console-desk.png``."""

# ruff: noqa: F811  (fixtures come from test_console_browser)
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.serving.test_console_browser import (  # noqa: F401
    MASKED_PHONE,
    PHONE_TEXT,
    RAW_PHONE,
    _connect,
    _shot,
    browser_page,
    chromium,
    server,
)

pytestmark = pytest.mark.integration
TZ = ZoneInfo("Asia/Shanghai")


def _chat(base: str, key: str, text: str | None) -> str:
    h = {"X-API-Key": key}
    cid = "desk-" + uuid.uuid4().hex[:10]
    r = httpx.post(
        base + "/v1/conversations",
        json={"conversation_id": cid, "department": "整形美容", "project": "隆鼻"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    if text:
        r = httpx.post(
            base + f"/v1/conversations/{cid}/messages", json={"role": "visitor", "text": text}, headers=h
        )
        assert r.status_code == 200, r.text
    return cid


def test_supervisor_runs_the_day_in_the_desk_tab(server, browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    base, keys = server["url"], server["keys"]
    sup, c01 = {"X-API-Key": keys["supervisor"]}, {"X-API-Key": keys["c01"]}
    # a lead who left a phone number, and a booking for tomorrow 15:00 (Beijing time)
    lead = _chat(base, keys["c01"], PHONE_TEXT)
    assert (
        httpx.post(
            base + f"/v1/conversations/{lead}/outcome", json={"contact": True}, headers=c01
        ).status_code
        == 200
    )
    booked = _chat(base, keys["c01"], "明天下午可以过来面诊吗")
    tomorrow = (datetime.now(TZ) + timedelta(days=1)).date()
    when = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 15, tzinfo=TZ)
    r = httpx.post(
        base + "/v1/appointments",
        json={"conversation_id": booked, "time": when.isoformat(), "doctor": "张医生"},
        headers=c01,
    )
    assert r.status_code == 201, r.text
    appt = r.json()
    listed = httpx.get(base + "/v1/tasks", params={"limit": 100}, headers=sup).json()
    (lead_task,) = [t for t in listed["items"] if t["conversation_id"] == lead and t["kind"] == "lead_call"]

    page.goto(base + "/")
    _connect(page, keys["supervisor"], "主管")
    page.click("#tab-desk")
    expect(page.locator("#view-desk")).to_be_visible()
    rows = page.locator("#worklist tbody tr[data-id]")
    expect(rows).to_have_count(listed["total"])
    assert [rows.nth(i).get_attribute("data-id") for i in range(rows.count())] == [
        t["id"] for t in listed["items"]
    ]
    row = page.locator(f'#worklist tbody tr[data-id="{lead_task["id"]}"]')
    expect(row.locator(".wk-kind")).to_have_text("留联回访")

    # assign the lead's call to c01
    row.locator(".wk-assignee").fill("c01")
    row.locator(".wk-assign").click()
    expect(row.locator(".wk-who")).to_have_text("c01")
    got = httpx.get(base + f"/v1/tasks/{lead_task['id']}", headers=sup).json()
    assert got["assignee"] == "c01" and got["state"] == "assigned"
    assert [c["value"] for c in got["contacts"]] == [MASKED_PHONE]
    # dial: the number shows in the row (an audited reveal), nowhere else
    row.locator(".wk-reveal").click()
    expect(row.locator(".wk-phone")).to_contain_text(RAW_PHONE)
    # a call result, then a snooze until tomorrow 09:00
    row.locator(".wk-result").select_option("no_answer")
    row.locator(".wk-record").click()
    expect(row.locator(".wk-state")).to_contain_text("已联系")
    got = httpx.get(base + f"/v1/tasks/{lead_task['id']}", headers=sup).json()
    assert got["attempts"] == 1 and got["attempt_log"][0]["result"] == "no_answer"
    assert got["attempt_log"][0]["actor"] == "console-supervisor"
    row.locator(".wk-until").fill(f"{tomorrow.isoformat()}T09:00")
    row.locator(".wk-snooze").click()
    expect(row.locator(".wk-state")).to_contain_text("暂缓")
    got = httpx.get(base + f"/v1/tasks/{lead_task['id']}", headers=sup).json()
    assert got["state"] == "snoozed" and datetime.fromisoformat(got["snoozed_until"]) == datetime(
        tomorrow.year, tomorrow.month, tomorrow.day, 9, tzinfo=TZ
    )

    # the patient's history, from the task: masked for a supervisor
    row.locator(".wk-patient").click()
    expect(page.locator("#patient .pt-contacts")).to_contain_text(MASKED_PHONE)
    expect(page.locator("#patient .pt-counts")).to_contain_text("对话 1")
    expect(page.locator("#pt-flag")).to_have_text("未标记")
    assert RAW_PHONE not in page.locator("#patient").inner_text()

    # tomorrow's arrivals: the date defaults to tomorrow; mark the booking arrived
    expect(page.locator("#ap-date")).to_have_value(tomorrow.isoformat())
    day = httpx.get(base + "/v1/appointments", params={"date": tomorrow.isoformat()}, headers=sup).json()
    arows = page.locator("#appointments tbody tr[data-id]")
    expect(arows).to_have_count(day["total"])
    arow = page.locator(f'#appointments tbody tr[data-id="{appt["id"]}"]')
    expect(arow).to_contain_text("张医生")
    expect(arow).to_contain_text("15:00")
    _shot(page, "desk")
    arow.locator(".ap-arrived").click()
    expect(arow.locator(".ap-status")).to_have_text("已到诊")
    assert httpx.get(base + f"/v1/appointments/{appt['id']}", headers=sup).json()["status"] == "arrived"
    # its reminder is done and after-care calls joined the list
    kinds = {
        t["kind"] for t in httpx.get(base + "/v1/tasks", params={"limit": 100}, headers=sup).json()["items"]
    }
    assert "aftercare" in kinds
    expect(page.locator("#worklist .wk-kind", has_text="术后回访").first).to_be_visible()
    _shot(page, "desk-after")
    assert not page.problems, page.problems
