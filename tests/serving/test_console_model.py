"""The console's 模型 tab (issue 18, ``serving/static/page_model.js``) in a real headless Chromium against a
real server: simulated chats with outcomes are replayed through the HTTP API (a challenger scoring in the
shadow, some suggestion feedback), then an analyst opens the tab and every number and plot point shown
is checked against ``GET /v1/model/health``; a consultant and a supervisor get the endpoint's 403 as a
clear message. Skips without Chromium (``scripts/ensure_browser.sh``); a screenshot is written to
``$TMPDIR/yuyue-console-model.png``."""

# ruff: noqa: F811  (fixtures come from test_console_browser)
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.test_console_browser import (  # noqa: F401
    _connect,
    _shot,
    browser_page,
    chromium,
    running,
)
from tests.serving.test_model_health import challenger_of
from yuyue.config import Settings
from yuyue.data.io import read_conversations

pytestmark = pytest.mark.integration

N_CHATS = 60


@pytest.fixture(scope="module")
def sims(tmp_path_factory) -> Path:
    from yuyue.data.simulator import generate_file

    path = tmp_path_factory.mktemp("model-tab") / "sims.jsonl"
    generate_file(path, n=N_CHATS, seed=515, workers=1)
    return path


@pytest.fixture(scope="module")
def server(model, sims, tmp_path_factory) -> Iterator[dict]:
    """A real uvicorn server (a challenger in the shadow) with the simulated chats replayed over HTTP."""
    from yuyue.serving.app import create_app
    from yuyue.serving.shadow import shadow_of

    settings = Settings(
        var_dir=tmp_path_factory.mktemp("model-tab-var"),
        model_poll_seconds=0,
        health_refresh_seconds=0,
        hospital_name="杭州美悦医院",
        database_url=None,
        redis_url=None,
        rate_per_minute=1_000_000,
        monitor_min_chats=20,
    )
    app = create_app(settings, model, "t1")
    keys = app.state.yuyue.keys
    raw = {
        role: keys.create(f"model-tab-{role}", role, consultant_id="c01" if role == "consultant" else None)[1]
        for role in ("analyst", "admin", "supervisor", "consultant")
    }
    shadow_of(app.state.yuyue.service).set(challenger_of(model), "t2")
    with running(app, "model-tab-uvicorn") as base:
        _replay(base, raw["supervisor"], sims)
        yield {"url": base, "keys": raw}


def _replay(base: str, key: str, path: Path) -> None:
    """Every chat with its messages and its outcome; feedback on the first suggestions shown."""
    h = {"X-API-Key": key}
    shown: list[str] = []
    with httpx.Client(base_url=base, headers=h, timeout=30) as api:
        for conv in read_conversations(path):
            body = {
                "conversation_id": conv.conversation_id,
                "started_at": conv.started_at.isoformat(),
                "department": conv.department,
                "project": conv.project,
                "consultant_id": conv.consultant_id,
            }
            if conv.visit is not None:
                body["visit"] = conv.visit.model_dump(mode="json", exclude_none=True)
            r = api.post("/v1/conversations", json={k: v for k, v in body.items() if v is not None})
            assert r.status_code == 201, r.text
            for m in conv.messages:
                r = api.post(
                    f"/v1/conversations/{conv.conversation_id}/messages",
                    json={
                        "role": str(getattr(m.role, "value", m.role)),
                        "text": m.text,
                        "at": m.at.isoformat(),
                    },
                )
                assert r.status_code == 200, r.text
                shown += [s["id"] for s in r.json().get("suggestions") or []]
            out = conv.outcome
            if out is not None and out.booked is not None:
                values = {"booked": out.booked, "close": True}
                if out.booked and out.arrived is not None:
                    values["arrived"] = out.arrived
                r = api.post(f"/v1/conversations/{conv.conversation_id}/outcome", json=values)
                assert r.status_code == 200, r.text
        for sid, action in zip(shown[:4], ["used", "dismissed", "used", "dismissed"], strict=False):
            assert api.post(f"/v1/suggestions/{sid}/feedback", json={"action": action}).status_code == 200


def _f3(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def test_model_tab_shows_the_health_report(server, browser_page) -> None:
    from playwright.sync_api import expect

    page, base, keys = browser_page, server["url"], server["keys"]
    r = httpx.get(base + "/v1/model/health", headers={"X-API-Key": keys["analyst"]}, timeout=60)
    assert r.status_code == 200, r.text
    report = r.json()
    champ = next(v for v in report["versions"] if v["role"] == "champion")
    assert champ["live"]["booked"]["n"] > 20 and report["shadow"]

    page.goto(base + "/")
    _connect(page, keys["analyst"], "分析师")
    page.click("#tab-model")
    expect(page.locator("#view-model")).to_be_visible()
    expect(page.locator("#m-champion")).to_have_text("冠军模型：vt1")
    expect(page.locator("#m-challenger")).to_contain_text("vt2")

    # the versions table: live next to offline, for each version and target
    for v in report["versions"]:
        for t in ("booked", "arrived"):
            row = page.locator(f'#m-versions tbody tr[data-version="{v["version"]}"][data-target="{t}"]')
            expect(row).to_have_count(1)
            live, off = v["live"][t], (v["offline"] or {}).get(t) or {}
            expect(row.locator('td[data-k="n"]')).to_have_text(str(live["n"]))
            expect(row.locator('td[data-k="auc"]')).to_have_text(_f3(live["auc"]))
            expect(row.locator('td[data-k="ece"]')).to_have_text(_f3(live["ece"]))
            expect(row.locator('td[data-k="brier"]')).to_have_text(_f3(live["brier"]))
            expect(row.locator('td[data-k="offline_auc"]')).to_have_text(_f3(off.get("auc")))
    expect(page.locator('#m-versions [data-basis="closed"]')).to_have_count(1)
    # every metric is explained: a tooltip on its column and a caption line
    assert "AUC" in page.locator("#m-versions th", has_text="AUC").first.get_attribute("title")
    expect(page.locator("#m-versions .caption").last).to_contain_text("ECE：")

    # the reliability plot: one point per bin of the champion, at its mean score and observed rate
    for t in ("booked", "arrived"):
        bins = champ["live"][t]["reliability"]
        plot = page.locator(f'#m-reliability svg[data-target="{t}"]')
        expect(plot.locator("line.diagonal")).to_have_count(1)
        points = plot.locator('circle[data-version="t1"]')
        expect(points).to_have_count(len(bins))
        drawn = [
            (int(points.nth(i).get_attribute("data-n")), float(points.nth(i).get_attribute("data-observed")))
            for i in range(len(bins))
        ]
        assert drawn == [(b["n"], b["observed"]) for b in bins]
        assert sum(n for n, _ in drawn) == champ["live"][t]["n"]
        labels = plot.locator('text.bin-n[data-version="t1"]').all_text_contents()
        assert labels == [str(b["n"]) for b in bins]

    # AUC by week on shared axes: the champion's weeks and the challenger's (scored in the shadow)
    chart = page.locator("#m-auc-week svg")
    weeks = [g for g in champ["groups"] if g["booked"]["auc"] is not None]
    dots = chart.locator('circle[data-series="t1"]')
    expect(dots).to_have_count(len(weeks))
    assert [
        (dots.nth(i).get_attribute("data-week"), float(dots.nth(i).get_attribute("data-auc")))
        for i in range(len(weeks))
    ] == [(g["group"], g["booked"]["auc"]) for g in weeks]
    shadow_weeks = [w for w in report["shadow"][0]["weeks"] if w["booked"]["challenger"]["auc"] is not None]
    expect(chart.locator('circle[data-series="t2@shadow"]')).to_have_count(len(shadow_weeks))
    expect(chart.locator("polyline")).to_have_count(2)

    # drift: every feature with its PSI, the thresholds, warn / flag rows marked
    drift = report["drift"]
    expect(page.locator("#m-drift-status")).to_have_attribute("data-status", drift["status"])
    expect(page.locator("#m-drift-thresholds")).to_contain_text(str(drift["flag_above"]))
    assert drift["features"], drift["detail"]
    expect(page.locator("#m-drift tbody tr")).to_have_count(len(drift["features"]))
    for f in drift["features"]:
        row = page.locator(f'#m-drift tbody tr[data-feature="{f["feature"]}"]')
        expect(row.locator('td[data-k="psi"]')).to_have_text(_f3(f["psi"]))
        expect(row).to_have_attribute("data-level", f["level"])
        if f["level"] != "ok":
            expect(row).to_have_class(f["level"])

    # outcome coverage and delay; suggestion acceptance; the shadow comparison
    o = report["outcomes"]
    expect(page.locator("#m-o-chats")).to_have_text(str(o["chats"]))
    expect(page.locator("#m-o-booked")).to_contain_text(
        f"{o['booked_known']}（{o['booked_coverage'] * 100:.1f}%）"
    )
    s = report["suggestions"]
    expect(page.locator("#m-s-overall")).to_contain_text(f"共展示 {s['overall']['shown']} 条")
    for x in s["by_source"]:
        row = page.locator(f'#m-suggestions table[data-dim="source"] tr[data-key="{x["source"]}"]')
        expect(row.locator('td[data-k="shown"]')).to_have_text(str(x["shown"]))
        expect(row.locator('td[data-k="used"]')).to_have_text(str(x["used"]))
    assert sum(x["used"] for x in s["by_version"]) == 2
    shadow_row = page.locator('#m-shadow tr[data-challenger="t2"][data-target="booked"]')
    expect(shadow_row.locator('td[data-k="challenger_auc"]')).to_have_text(
        _f3(report["shadow"][0]["booked"]["challenger"]["auc"])
    )

    # slices by department: a second request, the table follows it
    by_dept = httpx.get(
        base + "/v1/model/health",
        params={"by": "department", "drift": "false"},
        headers={"X-API-Key": keys["analyst"]},
        timeout=60,
    ).json()
    page.select_option("#m-by", "department")
    groups = next(v for v in by_dept["versions"] if v["role"] == "champion")["groups"]
    rows = page.locator('#m-slices-body div[data-version="t1"] tbody tr')
    expect(rows).to_have_count(len(groups))
    for g in groups:
        cell = page.locator(
            f'#m-slices-body div[data-version="t1"] tr[data-group="{g["group"]}"] td[data-k="auc"]'
        )
        expect(cell).to_have_text(_f3(g["booked"]["auc"]))
    _shot(page, "model")
    assert page.problems == []


def test_model_tab_refuses_consultants_and_supervisors_clearly(server, browser_page) -> None:
    from playwright.sync_api import expect

    page, base, keys = browser_page, server["url"], server["keys"]
    for role, text in (("consultant", "咨询师"), ("supervisor", "主管")):
        page.goto(base + "/")
        _connect(page, keys[role], text)
        page.click("#tab-model")
        expect(page.locator("#m-denied")).to_contain_text("仅对分析师和管理员开放")
        expect(page.locator("#m-denied")).to_contain_text("403")
        expect(page.locator("#m-versions")).to_have_count(0)
    # an admin sees the report
    page.goto(base + "/")
    _connect(page, keys["admin"], "管理员")
    page.click("#tab-model")
    expect(page.locator("#m-versions tbody tr").first).to_be_visible()
    assert page.problems == []
