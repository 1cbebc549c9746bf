"""The console's list of a consultant's open chats (issue 16, 接一待二招呼三) in a real headless Chromium
against a real server: the chats as ``GET /v1/conversations`` ranks them (waiting longest first), the
unanswered visitor messages, how long the visitor has waited and a nudge past the set seconds; switching
between chats keeps each one's unsent draft; a reply clears the count and a new visitor message shows up
without reloading. Skips without Chromium (see ``test_console_browser.py``); a screenshot is written to
``$TMPDIR/yuyue-console-chats.png``."""

# ruff: noqa: F811  (fixtures come from test_console_browser)
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.serving.test_console_browser import _connect, _shot, browser_page, chromium, server  # noqa: F401

pytestmark = pytest.mark.integration


def _chat(base: str, key: str, messages: list[tuple[str, str, datetime]], started: datetime) -> str:
    h = {"X-API-Key": key}
    cid = "mc-" + uuid.uuid4().hex[:8]
    r = httpx.post(
        base + "/v1/conversations",
        headers=h,
        json={
            "conversation_id": cid,
            "department": "整形美容",
            "project": "隆鼻",
            "started_at": started.isoformat(),
        },
    )
    assert r.status_code == 201, r.text
    for role, text, at in messages:
        r = httpx.post(
            base + f"/v1/conversations/{cid}/messages",
            headers=h,
            json={"role": role, "text": text, "at": at.isoformat()},
        )
        assert r.status_code == 200, r.text
    return cid


def test_consultant_switches_between_open_chats_keeping_drafts(server, browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    base, keys = server["url"], server["keys"]
    c01 = {"X-API-Key": keys["c01"]}
    now = datetime.now(UTC)
    ago = lambda s: now - timedelta(seconds=s)  # noqa: E731
    waits_long = _chat(
        base,
        keys["c01"],
        [
            ("consultant", "您好，请问有什么可以帮您？", ago(700)),
            ("visitor", "隆鼻多少钱", ago(600)),
            ("visitor", "在吗", ago(590)),
        ],
        ago(900),
    )
    waits_short = _chat(base, keys["c01"], [("visitor", "疼不疼", ago(2))], ago(30))
    answered = _chat(
        base, keys["c01"], [("visitor", "你好", ago(100)), ("consultant", "您好", ago(90))], ago(120)
    )
    _chat(base, keys["c02"], [("visitor", "别人的访客", ago(50))], ago(60))  # not c01's
    listed = httpx.get(base + "/v1/conversations", headers=c01).json()
    assert [x["conversation_id"] for x in listed["items"]] == [waits_long, waits_short, answered]

    page.goto(base + "/")
    _connect(page, keys["c01"], "咨询师")
    items = page.locator("#my-chats li[data-id]")
    expect(items).to_have_count(3)
    assert [items.nth(i).get_attribute("data-id") for i in range(3)] == [waits_long, waits_short, answered]
    long_li, short_li = (page.locator(f'#my-chats li[data-id="{c}"]') for c in (waits_long, waits_short))
    answered_li = page.locator(f'#my-chats li[data-id="{answered}"]')
    expect(long_li.locator(".mc-unread")).to_have_text("2")
    expect(long_li.locator(".mc-wait")).to_contain_text("等待 10分")
    expect(long_li).to_have_class("nudge")  # past the 60 s default
    expect(short_li.locator(".mc-unread")).to_have_text("1")
    assert "nudge" not in (short_li.get_attribute("class") or "")
    expect(answered_li.locator(".mc-unread")).to_have_count(0)
    expect(answered_li.locator(".mc-wait")).to_have_count(0)

    # open the longest-waiting chat from the list; write a draft; switch; come back: the draft is there
    long_li.click()
    expect(page.locator("#chat-title")).to_contain_text(waits_long)
    expect(page.locator("#transcript .msg.visitor")).to_have_count(2)
    expect(long_li).to_have_class("active nudge")
    page.fill("#msg-input", "您好，隆鼻价格要看方案")
    page.click('label[title="Alt+2"]')
    short_li.click()
    expect(page.locator("#chat-title")).to_contain_text(waits_short)
    expect(page.locator("#msg-input")).to_have_value("")
    expect(long_li.locator(".mc-draft")).to_have_text("草稿")
    page.fill("#msg-input", "访客草稿")
    page.click('label[title="Alt+1"]')
    long_li.click()
    expect(page.locator("#chat-title")).to_contain_text(waits_long)
    expect(page.locator("#msg-input")).to_have_value("您好，隆鼻价格要看方案")
    assert page.is_checked("#sender-consultant")
    expect(short_li.locator(".mc-draft")).to_have_text("草稿")
    short_li.click()
    expect(page.locator("#msg-input")).to_have_value("访客草稿")
    assert page.is_checked("#sender-visitor")
    long_li.click()

    # send the reply: the chat no longer waits
    page.click("#send")
    expect(page.locator("#transcript .msg.consultant")).to_have_count(2)
    expect(long_li.locator(".mc-unread")).to_have_count(0)
    expect(long_li.locator(".mc-wait")).to_have_count(0)
    expect(long_li.locator(".mc-draft")).to_have_count(0)
    got = {
        x["conversation_id"]: x for x in httpx.get(base + "/v1/conversations", headers=c01).json()["items"]
    }
    assert got[waits_long]["unanswered"] == 0 and got[waits_short]["unanswered"] == 1

    # a visitor writes in the answered chat (from the chat tool): it shows up without reloading
    r = httpx.post(
        base + f"/v1/conversations/{answered}/messages",
        headers=c01,
        json={"role": "visitor", "text": "那周六可以吗", "at": datetime.now(UTC).isoformat()},
    )
    assert r.status_code == 200, r.text
    expect(answered_li.locator(".mc-unread")).to_have_text("1", timeout=12_000)
    # a shorter nudge: the short wait is nudged too
    page.fill("#mc-nudge", "5")
    page.locator("#mc-nudge").dispatch_event("change")
    expect(short_li).to_have_class("nudge", timeout=8_000)
    _shot(page, "chats")
    assert page.problems == []
