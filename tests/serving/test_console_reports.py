"""The console's 报表 tab (issue 17) in a real headless Chromium against a real server: a supervisor sees
the consultant and source reports as the API answers them, with the inline-SVG chart (no CDN: the
console works air-gapped) and CSV downloads named by the server; a consultant sees only their own rows.
Skips without Chromium (see ``test_console_browser.py``); a screenshot is written to
``$TMPDIR/yuyue-console-reports.png``."""

# ruff: noqa: F811  (fixtures come from test_console_browser)
from __future__ import annotations

import csv
import io
import uuid

import httpx
import pytest

from tests.serving.test_console_browser import (  # noqa: F401
    _connect,
    _shot,
    browser_page,
    chromium,
    server,
)

pytestmark = pytest.mark.integration


def _chat(base: str, key: str, texts: list[tuple[str, str]], **outcome: bool) -> str:
    h = {"X-API-Key": key}
    cid = "rep-" + uuid.uuid4().hex[:10]
    r = httpx.post(
        base + "/v1/conversations", json={"conversation_id": cid, "department": "整形美容"}, headers=h
    )
    assert r.status_code == 201, r.text
    for role, text in texts:
        r = httpx.post(
            base + f"/v1/conversations/{cid}/messages", json={"role": role, "text": text}, headers=h
        )
        assert r.status_code == 200, r.text
    if outcome:
        r = httpx.post(base + f"/v1/conversations/{cid}/outcome", json=outcome, headers=h)
        assert r.status_code == 200, r.text
    return cid


def test_reports_tab(server, browser_page) -> None:
    from playwright.sync_api import expect

    page, base, keys = browser_page, server["url"], server["keys"]
    _chat(base, keys["c01"], [("visitor", "隆鼻多少钱"), ("consultant", "费用要看方案")], booked=True)
    _chat(base, keys["c02"], [("visitor", "疼不疼")])
    sup = {"X-API-Key": keys["supervisor"]}
    api = httpx.get(base + "/v1/reports/consultants", params={"period": "month"}, headers=sup).json()
    want = {r["consultant_id"]: r for r in api["rows"]}
    assert {"c01", "c02"} <= set(want)

    page.goto(base + "/")
    _connect(page, keys["supervisor"], "主管")
    page.click("#tab-reports")
    expect(page.locator("#view-reports")).to_be_visible()
    row = page.locator('#r-consultants tbody tr[data-consultant="c01"]')
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(2)).to_have_text(str(want["c01"]["chats"]))
    adjusted = want["c01"]["booked_rate_adjusted"]
    expect(row.locator('td[data-k="booked_rate_adjusted"]')).to_have_text(
        f"{'+' if adjusted > 0 else ''}{adjusted * 100:.1f}"
    )
    expect(page.locator("#r-chart svg rect[data-k='booked_rate']")).to_have_count(len(want))
    expect(page.locator("#r-sources tbody tr").first).not_to_contain_text("暂无数据")
    with page.expect_download() as info:
        page.click("#r-csv-consultants")
    download = info.value
    assert download.suggested_filename.startswith("yuyue-consultants-month-")
    with open(download.path(), encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(io.StringIO(fh.read())))
    assert {r["consultant_id"]: int(r["chats"]) for r in rows} == {k: v["chats"] for k, v in want.items()}
    # another source dimension
    page.select_option("#r-by", "paid")
    expect(page.locator('#r-sources tbody tr[data-source="unknown"]')).to_have_count(1)
    _shot(page, "reports")

    # a consultant sees their own row only
    page.goto(base + "/")
    _connect(page, keys["c02"], "咨询师")
    page.click("#tab-reports")
    expect(page.locator('#r-consultants tbody tr[data-consultant="c02"]')).to_have_count(1)
    expect(page.locator('#r-consultants tbody tr[data-consultant="c01"]')).to_have_count(0)
