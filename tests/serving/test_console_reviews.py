"""The console's 回复审核 tab (issue 14 §4) in a real headless Chromium against a real server: a
supervisor lists the replies and blocks one; the API then lists it as blocked and the very next
suggestion of the running server no longer offers it. Skips without Chromium (see
``test_console_browser.py``; ``scripts/ensure_browser.sh`` installs it)."""

# ruff: noqa: F811  (fixtures come from test_console_browser)
from __future__ import annotations

import httpx
import pytest

from tests.serving.test_console_browser import _connect, browser_page, chromium, server  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _detach(model):
    yield
    if model.suggester is not None:
        model.suggester.reviews = None


def test_supervisor_blocks_a_reply_in_the_review_tab(server, browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    base, keys = server["url"], server["keys"]
    sup = {"X-API-Key": keys["supervisor"]}
    page.goto(base + "/")
    _connect(page, keys["supervisor"], "主管")
    page.click("#tab-review")
    expect(page.locator("#view-review")).to_be_visible()
    rows = page.locator("#reviews tbody tr[data-id]")
    expect(rows.first).to_be_visible()
    listed = httpx.get(base + "/v1/replies", params={"status": "unreviewed", "limit": 50}, headers=sup).json()
    assert rows.count() == len(listed["items"])
    first = rows.first
    rid = first.get_attribute("data-id")
    assert rid == listed["items"][0]["id"]
    first.locator(".rv-block").click()
    # the list reloads (status filter 未审核): the blocked reply is gone from it
    expect(page.locator(f'#reviews tbody tr[data-id="{rid}"]')).to_have_count(0)
    blocked = httpx.get(base + "/v1/replies", params={"status": "blocked"}, headers=sup).json()
    assert [i["id"] for i in blocked["items"]] == [rid] and blocked["items"][0][
        "reviewed_by"
    ] == "console-supervisor"
    page.select_option("#rv-status", "blocked")
    expect(page.locator(f'#reviews tbody tr[data-id="{rid}"] .rv-status')).to_have_text("已屏蔽")
    assert not page.problems, page.problems
