"""The console page (``GET /``) driven in a real headless Chromium against a real server.

A uvicorn server runs ``create_app`` with the session's trained model in a thread on a free
port; Playwright drives Debian's Chromium (``/usr/bin/chromium``, installed by
``scripts/ensure_browser.sh``; ``YUYUE_CHROMIUM`` points elsewhere). Nothing is mocked: every
number the page shows comes from the API and is checked against it.

The test skips only when no Chromium (or no ``playwright`` package) can be found. A screenshot
of each view is written to ``$TMPDIR/yuyue-console-*.png`` for a human to look at.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from yuyue.config import Settings

pytestmark = pytest.mark.integration

PHONE_TEXT = "我姓王，电话138 1234 5678，隆鼻大概多少钱？会不会很疼"
RAW_PHONE = "13812345678"
MASKED_PHONE = "138****5678"
PCT = re.compile(r"^\d{1,3}\.\d%$")


def find_chromium() -> str | None:
    candidates = [os.environ.get("YUYUE_CHROMIUM"), "/usr/bin/chromium"]
    candidates += [
        shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    ]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip(
            "no Chromium found (/usr/bin/chromium, chromium, google-chrome or $YUYUE_CHROMIUM): "
            "run scripts/ensure_browser.sh (apt-get install chromium)"
        )
    pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip install -e '.[dev]')"
    )
    return path


@contextlib.contextmanager
def running(app, name: str) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on a free port (a thread named ``name``); yields its base URL."""
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(model, tmp_path_factory) -> Iterator[dict]:
    """A real uvicorn server on a free port; yields its base URL and API keys."""

    from yuyue.serving.app import create_app

    var = tmp_path_factory.mktemp("console-var")
    settings = Settings(
        var_dir=var, model_poll_seconds=0, hospital_name="杭州美悦医院", database_url=None, redis_url=None
    )
    app = create_app(settings, model, "test")
    keys = app.state.yuyue.keys
    raw = {
        "c01": keys.create("console-c01", "consultant", consultant_id="c01")[1],
        "c02": keys.create("console-c02", "consultant", consultant_id="c02")[1],
        "supervisor": keys.create("console-supervisor", "supervisor")[1],
    }
    with running(app, "console-uvicorn") as url:
        yield {"url": url, "keys": raw}


@pytest.fixture
def browser_page(chromium) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
        page.on(
            "request",
            lambda req: (
                None
                if req.url.startswith(("http://127.0.0.1", "data:"))
                else problems.append(f"request outside the app: {req.url}")
            ),
        )
        page.problems = problems
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def _shot(page, name: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"yuyue-console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _connect(page, key: str, role_text: str) -> None:
    from playwright.sync_api import expect

    page.fill("#api-key", key)
    page.click("#key-save")
    expect(page.locator("#role")).to_contain_text(role_text)


def test_console_consultant_and_supervisor(server, browser_page) -> None:
    from playwright.sync_api import expect

    page, base, keys = browser_page, server["url"], server["keys"]
    api = httpx.Client(base_url=base, timeout=30)

    def get(path: str, who: str, **params):
        r = api.get(path, headers={"X-API-Key": keys[who]}, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    page.goto(base + "/")
    expect(page).to_have_title(re.compile("悦约"))
    expect(page.locator("#tab-consult")).to_have_text("咨询台")

    # ---- consultant: key (kept in localStorage), role ------------------------------------
    _connect(page, keys["c01"], "咨询师")
    expect(page.locator("#model-version")).to_contain_text("test")
    assert page.evaluate("Object.values(localStorage)").count(keys["c01"]) == 1
    expect(page.locator("#view-consult")).to_be_visible()

    # ---- open a chat ------------------------------------------------------------------
    page.fill("#o-department", "整形美容")
    page.fill("#o-project", "隆鼻")
    page.select_option("#o-engine", "baidu")
    page.fill("#o-keyword", "杭州隆鼻多少钱")
    page.fill("#o-region", "浙江省杭州市")
    page.select_option("#o-device", "mobile")
    page.click("#open-chat")
    expect(page.locator("#send")).to_be_enabled()
    cid = page.locator("#chat-meta .mono").inner_text().strip()
    assert re.fullmatch(r"[0-9a-f]{32}", cid), cid
    chat = get(f"/v1/conversations/{cid}", "c01")["conversation"]
    assert chat["department"] == "整形美容" and chat["project"] == "隆鼻" and chat["consultant_id"] == "c01"
    assert chat["visit"] == {
        "engine": "baidu",
        "keyword": "杭州隆鼻多少钱",
        "region": "浙江省杭州市",
        "device": "mobile",
    }
    expect(page.locator("#score-booked .p")).to_have_text(PCT)
    expect(page.locator("#band")).to_have_text(re.compile("^[ABC]$"))

    # ---- a visitor message with a phone number ---------------------------------------------
    expect(page.locator("#sender-visitor")).to_be_checked()
    page.fill("#msg-input", PHONE_TEXT)
    page.click("#send")
    expect(page.locator("#transcript .msg.visitor")).to_contain_text(PHONE_TEXT)
    expect(page.locator("#entities")).to_contain_text(RAW_PHONE)  # the chat's own consultant sees it raw
    expect(page.locator("#entities")).to_contain_text("王")
    expect(page.locator("#entities")).to_contain_text("隆鼻")
    expect(page.locator("#entities")).to_contain_text("价格")
    chat = get(f"/v1/conversations/{cid}", "c01")["conversation"]
    band = chat["band"]
    for target in ("booked", "arrived"):
        # the console rounds with JavaScript's toFixed(1), which may round a 5 the other way than Python
        v = chat[f"p_{target}"] * 1000
        either = "|".join(re.escape(f"{k / 10:.1f}%") for k in {math.floor(v), math.ceil(v)})
        expect(page.locator(f"#score-{target} .p")).to_have_text(re.compile(f"^(?:{either})$"))
    expect(page.locator("#score-booked .delta")).to_have_text(re.compile(r"^[↑↓→] \d+\.\d$"))
    expect(page.locator("#band")).to_have_text(band)
    reasons = page.locator("#reasons li.reason")
    assert reasons.count() >= 2
    assert reasons.first.inner_text().strip() == chat["reasons"]["booked"][0]["text"]
    expect(page.locator("#stage")).to_contain_text("已到达")
    assert page.locator("#stage .chip").count() == 12
    assert page.locator("#hints li:not(.muted)").count() >= 1
    expect(page.locator("#hints")).to_contain_text("价格")

    # ---- suggestions: pick one (fills the input), dismiss another, send unchanged -------------
    suggestions = page.locator("#suggestions .sugg")
    expect(suggestions.first).to_be_visible()
    n_sugg = suggestions.count()
    assert n_sugg >= 1
    first_text = suggestions.first.locator(".stext").inner_text()
    suggestions.first.locator(".stext").click()
    expect(page.locator("#msg-input")).to_have_value(first_text)
    expect(page.locator("#sender-consultant")).to_be_checked()
    if n_sugg >= 2:
        suggestions.nth(1).locator(".dismiss").click()
        expect(suggestions.nth(1)).to_have_class(re.compile("dismissed"))
    page.click("#send")
    expect(page.locator("#transcript .msg.consultant")).to_contain_text(first_text)
    expect(page.locator("#pending-note")).to_contain_text("直接使用")
    expect(page.locator("#msg-input")).to_have_value("")

    # ---- a second round: edit a suggestion before sending ------------------------------------
    page.click("label:has(#sender-visitor)")
    page.fill("#msg-input", "周六上午可以过去面诊吗")
    page.keyboard.press("Enter")  # Enter sends
    expect(page.locator("#transcript .msg.visitor")).to_have_count(2)
    expect(suggestions.first).to_be_visible()
    suggestions.first.locator(".stext").click()
    page.locator("#msg-input").press("End")
    page.locator("#msg-input").press_sequentially("王女士")
    page.click("#send")
    expect(page.locator("#pending-note")).to_contain_text("修改后使用")
    expect(page.locator("#transcript .msg")).to_have_count(5)  # system line + 4 messages
    acceptance = get("/v1/stats/funnel", "supervisor")["suggestions"]
    assert acceptance["used"] == 1 and acceptance["edited"] == 1
    assert acceptance["dismissed"] == (1 if n_sugg >= 2 else 0)

    # ---- outcome: 已预约 ---------------------------------------------------------------
    page.click("#out-booked")
    expect(page.locator("#chat-status")).to_contain_text("预约✓")
    expect(page.locator("#out-booked")).to_have_class(re.compile("done"))
    chat = get(f"/v1/conversations/{cid}", "c01")["conversation"]
    assert chat["booked"] is True and chat["contact"] is True and not chat["closed"]

    # ---- API errors are shown, not swallowed --------------------------------------------
    expect(page.locator("#error-bar")).to_be_hidden()
    page.fill("#resume-id", "no-such-chat")
    page.click("#resume-chat")
    expect(page.locator("#error-bar")).to_be_visible()
    expect(page.locator("#error-text")).to_contain_text("404")
    expect(page.locator("#error-text")).to_contain_text("no conversation 'no-such-chat'")
    expect(page.locator("#chat-meta .mono")).to_have_text(cid)  # the open chat is untouched
    page.click("#error-close")
    expect(page.locator("#error-bar")).to_be_hidden()
    _shot(page, "consultant")
    assert not page.problems, page.problems

    # ---- more leads (another consultant, another department) for paging and filters -----------
    h02 = {"X-API-Key": keys["c02"]}
    for _ in range(11):
        r = api.post(
            "/v1/conversations",
            json={"department": "口腔", "project": "种植牙", "visit": {"engine": "sogou"}},
            headers=h02,
        )
        assert r.status_code == 201, r.text
        r = api.post(
            f"/v1/conversations/{r.json()['conversation_id']}/outcome", json={"contact": True}, headers=h02
        )
        assert r.status_code == 200, r.text

    # ---- supervisor: follow-up queue, masked chat, funnel, acceptance ------------------------
    _connect(page, keys["supervisor"], "主管")
    expect(page.locator("#view-super")).to_be_visible()
    expect(page.locator("#view-consult")).to_be_hidden()
    rows = page.locator("#followups tbody tr[data-id]")
    expect(page.locator("#fu-total")).to_have_text("共 12 条")
    page.select_option("#fu-limit", "10")
    expect(rows).to_have_count(10)
    expect(page.locator("#fu-page")).to_have_text("第 1–10 条")
    expect(page.locator("#fu-prev")).to_be_disabled()
    page.click("#fu-next")
    expect(rows).to_have_count(2)
    expect(page.locator("#fu-page")).to_have_text("第 11–12 条")
    expect(page.locator("#fu-next")).to_be_disabled()
    page.click("#fu-prev")
    expect(rows).to_have_count(10)

    page.fill("#f-department", "整形美容")
    page.click("#refresh")
    expect(page.locator("#fu-total")).to_have_text("共 1 条")
    row = page.locator(f'#followups tr[data-id="{cid}"]')
    expect(row).to_contain_text("预约未到风险")
    expect(row).to_contain_text("c01")
    queue = get("/v1/followups", "supervisor", department="整形美容")["items"][0]
    expect(row).to_contain_text(queue["summary"])
    row.click()
    viewer = page.locator("#viewer-body")
    expect(viewer).to_contain_text(MASKED_PHONE)
    expect(page.locator("#viewer-masked")).to_contain_text("脱敏")
    assert RAW_PHONE not in page.locator("#view-super").inner_text()
    masked = get(f"/v1/conversations/{cid}", "supervisor")
    assert masked["masked"] is True and MASKED_PHONE in masked["messages"][0]["text"]
    assert RAW_PHONE not in str(masked)

    page.fill("#f-department", "")
    page.fill("#f-consultant", "c02")
    page.click("#refresh")
    expect(page.locator("#fu-total")).to_have_text("共 11 条")
    page.fill("#f-consultant", "")
    page.click("#refresh")

    # funnel overall, then by engine: chart rows and table agree with the API
    expect(page.locator("#funnel-table tbody tr")).to_have_count(1)
    expect(page.locator("#funnel-table tbody tr").first).to_contain_text("全部")
    page.select_option("#funnel-group", "engine")
    expect(page.locator("#funnel-table tbody")).to_contain_text("百度")
    expect(page.locator("#funnel-table tbody")).to_contain_text("搜狗")
    funnel = get("/v1/stats/funnel", "supervisor", group_by="engine")
    assert page.locator("#funnel-chart .funnel-row").count() == len(funnel["groups"])
    sogou = next(g for g in funnel["groups"] if g["group"] == "sogou")
    sogou_row = page.locator("#funnel-table tbody tr", has_text="搜狗")
    assert [c.strip() for c in sogou_row.locator("td").all_inner_texts()[1:6]] == [
        str(sogou[k]) for k in ("visits", "chats", "contact", "booked", "arrived")
    ]
    assert page.locator("#funnel-chart .bar.c-visits").count() == len(funnel["groups"])
    page.select_option("#funnel-group", "department")
    expect(page.locator("#funnel-table tbody")).to_contain_text("口腔")
    expect(page.locator('#acceptance .stat[data-k="used"] b')).to_have_text("1")
    expect(page.locator('#acceptance .stat[data-k="edited"] b')).to_have_text("1")
    expect(page.locator('#acceptance .stat[data-k="acceptance_rate"] b')).to_have_text(PCT)
    expect(page.locator("#error-bar")).to_be_hidden()
    _shot(page, "supervisor")
    assert not page.problems, page.problems
