"""The console warns a consultant about a non-compliant message (rule, category, citation and a
compliant alternative that can be put into the input box), says nothing for compliant or visitor
messages, sends nothing by itself; supervisors see the hits per consultant. Real headless Chromium
against a real server (fixtures of test_console_browser)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.serving.test_console_browser import _connect, _shot, browser_page, chromium, server  # noqa: F401
from yuyue.models.replies.guard import check_consultant_message

pytestmark = pytest.mark.integration

VISITOR = "隆鼻效果能保持多久？会不会失败"
COMPLIANT = "效果因人而异，需要医生面诊后判断，费用面诊后会详细说明。"
PROMISE = "放心，我们保证效果，百分之百成功"


def test_console_compliance_warning_and_supervisor_table(server, browser_page) -> None:  # noqa: F811
    from playwright.sync_api import expect

    page, base, keys = browser_page, server["url"], server["keys"]
    api = httpx.Client(base_url=base, timeout=30)
    expected = check_consultant_message(PROMISE)  # what the server answers for it (same check)
    assert not expected["allowed"] and expected["alternative"]

    page.goto(base + "/")
    _connect(page, keys["c02"], "咨询师")
    page.fill("#o-department", "整形美容")
    page.fill("#o-project", "隆鼻")
    page.click("#open-chat")
    expect(page.locator("#send")).to_be_enabled()
    cid = page.locator("#chat-meta .mono").inner_text().strip()

    page.fill("#msg-input", VISITOR)
    page.click("#send")
    expect(page.locator("#transcript .msg.visitor")).to_contain_text(VISITOR)
    page.check("#sender-consultant", force=True)
    page.fill("#msg-input", COMPLIANT)
    page.click("#send")
    expect(page.locator("#transcript .msg.consultant")).to_have_count(1)
    assert page.locator(".msg-warn").count() == 0  # a compliant message and a visitor's get no warning

    page.fill("#msg-input", PROMISE)
    page.click("#send")
    warn = page.locator(".msg-warn")
    expect(warn).to_have_count(1)
    # the warning sits right after the flagged message, before anything else
    order = page.eval_on_selector_all("#transcript > div", "ns => ns.map(n => n.className)")
    assert order[-2:] == ["msg consultant", "msg-warn"], order
    expect(page.locator("#transcript .msg.consultant").last).to_contain_text(PROMISE)  # sent as typed
    for rule in expected["rules"]:
        item = warn.locator(f'li[data-rule="{rule["id"]}"]')
        expect(item).to_contain_text(rule["citation"][:30])
    assert warn.locator("li").count() == len(expected["rules"])
    expect(warn.locator("li").first.locator(".cat")).to_have_text(re.compile(r"\S"))
    expect(warn.locator(".alt-text")).to_have_text(expected["alternative"])
    _shot(page, "compliance-warning")

    # inserting the alternative fills the input box and sends nothing
    warn.locator(".use-alt").click()
    expect(page.locator("#msg-input")).to_have_value(expected["alternative"])
    expect(page.locator("#sender-consultant")).to_be_checked()
    stored = api.get(f"/v1/conversations/{cid}", headers={"X-API-Key": keys["c02"]}).json()["messages"]
    assert [m["text"] for m in stored] == [VISITOR, COMPLIANT, PROMISE]
    page.click("#send")  # sending the alternative: compliant, no new warning
    expect(page.locator("#transcript .msg.consultant")).to_have_count(3)
    assert page.locator(".msg-warn").count() == 1

    # another visitor message: still no new warning
    page.check("#sender-visitor", force=True)
    page.fill("#msg-input", "保证效果吗？百分之百成功吗？")
    page.click("#send")
    expect(page.locator("#transcript .msg.visitor")).to_have_count(2)
    assert page.locator(".msg-warn").count() == 1

    # ---- supervisor: hits per consultant ----------------------------------------------
    report = api.get(
        "/v1/stats/compliance", params={"group_by": "consultant"}, headers={"X-API-Key": keys["supervisor"]}
    ).json()
    mine = next(g for g in report["groups"] if g["group"] == "c02")
    assert (mine["checked"], mine["flagged"]) == (3, 1)
    _connect(page, keys["supervisor"], "主管")
    row = page.locator('#compliance-table tbody tr[data-consultant="c02"]')
    expect(row).to_be_visible()
    cells = row.locator("td")
    expect(cells.nth(1)).to_have_text(str(mine["checked"]))
    expect(cells.nth(2)).to_have_text(str(mine["flagged"]))
    expect(cells.nth(5)).to_contain_text("保证效果")
    _shot(page, "compliance-supervisor")
    assert not page.problems, page.problems
