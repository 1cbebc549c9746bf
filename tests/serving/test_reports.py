"""Desk reports (issue 17): ``GET /v1/reports/consultants`` and ``/v1/reports/sources`` on chats stored
through the API with known timings, on SQLite and PostgreSQL (+ Redis): first-response and response
times, durations, rates and the rates adjusted for the leads (actual − the lead scores stored at open:
the opening scored without the consultant, see test_reports_lead.py), concerns,
compliance warnings, suggestion acceptance, consultant scoping, CSV = JSON, bad parameters."""

from __future__ import annotations

import csv
import io

import orjson
import pytest
import sqlalchemy as sa

from tests.serving.test_reports_reference import concerns_of
from yuyue.serving.reports import DayRange, ReportError, period_of

DAY = "2025-03-05"


def _open(api, cid, at, who="c01", **visit):
    body = {
        "conversation_id": cid,
        "started_at": f"{DAY}T{at}+08:00",
        "department": "整形美容",
        "project": "隆鼻",
        "visit": {"engine": "baidu", "keyword": "杭州隆鼻多少钱", "region": "浙江省杭州市", **visit},
    }
    r = api.post("/v1/conversations", json=body, headers=api.keys[who])
    assert r.status_code == 201, r.text
    return r.json()["scores"]


def _say(api, cid, role, text, at, who="c01"):
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": role, "text": text, "at": f"{DAY}T{at}+08:00"},
        headers=api.keys[who],
    )
    assert r.status_code == 200, r.text
    return r.json()


def _outcome(api, cid, who="c01", **values):
    r = api.post(f"/v1/conversations/{cid}/outcome", json=values, headers=api.keys[who])
    assert r.status_code == 200, r.text


def _report(api, who="sup", path="consultants", **params):
    r = api.get(f"/v1/reports/{path}", params={"from": DAY, "to": DAY, **params}, headers=api.keys[who])
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def desk(api):
    """Four chats of c01 and c02 with known times; returns their stored lead booking and arrival scores."""
    scores = {}
    # A (c01): first reply after 40 s, then two visitor messages answered after 90 s from the first;
    # a consultant message that answers nothing; 10 minutes from start to the last message
    scores["a"] = _open(api, "rep-a", "14:00:00", landing_url="https://m.example.com/longbi/?bdjj=7")
    shown = _say(api, "rep-a", "visitor", "隆鼻多少钱", "14:00:30")["suggestions"]
    _say(api, "rep-a", "consultant", "费用要看方案，面诊后医生给您具体报价", "14:01:10")
    _say(api, "rep-a", "visitor", "做完疼不疼", "14:02:00")
    _say(api, "rep-a", "visitor", "会不会很疼啊", "14:02:30")
    _say(api, "rep-a", "consultant", "保证百分之百成功，绝对没有风险", "14:03:30")
    _say(api, "rep-a", "consultant", "您方便留个电话吗？", "14:10:00")
    _outcome(api, "rep-a", booked=True, arrived=True)
    for s, action in zip(shown[:2], ("used", "dismissed"), strict=True):
        r = api.post(f"/v1/suggestions/{s['id']}/feedback", json={"action": action}, headers=api.keys["c01"])
        assert r.status_code == 200, r.text
    # B (c01): a greeting before the visitor writes does not count; first reply after 20 s; 80 s long
    scores["b"] = _open(api, "rep-b", "14:05:00")
    _say(api, "rep-b", "consultant", "您好，请问有什么可以帮您？", "14:05:10")
    _say(api, "rep-b", "visitor", "我想了解一下", "14:06:00")
    _say(api, "rep-b", "consultant", "好的，您想了解哪方面呢？", "14:06:20")
    _outcome(api, "rep-b", contact=True)
    # C (c02): first reply after 5 minutes
    scores["c"] = _open(api, "rep-c", "14:20:00", who="c02")
    _say(api, "rep-c", "visitor", "你好", "14:20:00", who="c02")
    _say(api, "rep-c", "consultant", "您好", "14:25:00", who="c02")
    # D (c01): opened, the visitor never wrote
    scores["d"] = _open(api, "rep-d", "15:00:00")
    return {k: _lead(api, f"rep-{k}") for k in scores}


def _lead(api, cid):
    """The lead scores kept with chat ``cid``'s open event (the report's expected values)."""
    engine = api.state.service.store.engine
    with engine.connect() as cx:
        raw = cx.execute(
            sa.text("SELECT payload FROM events WHERE conversation_id = :c AND kind = 'open'"), {"c": cid}
        ).scalar_one()
    payload = orjson.loads(raw)
    return {t: payload[f"p_{t}_lead"] for t in ("booked", "arrived")}


def test_consultant_report_numbers(api, desk):
    out = _report(api, period="day")
    assert out["from"] == DAY and out["period"] == "day" and out["truncated"] == 0
    rows = {r["consultant_id"]: r for r in out["rows"]}
    assert set(rows) == {"c01", "c02"} and {r["period"] for r in out["rows"]} == {DAY}
    c01, c02 = rows["c01"], rows["c02"]
    assert (c01["visits"], c01["chats"], c01["chat_rate"]) == (3, 2, round(2 / 3, 4))
    assert c01["first_response_median_s"] == pytest.approx(30.0)  # median of 40 and 20
    assert c01["first_response_mean_s"] == pytest.approx(30.0)
    assert c01["replies"] == 3 and c01["response_median_s"] == pytest.approx(40.0)  # 40, 90, 20
    assert c01["duration_median_s"] == pytest.approx(340.0)  # 600 and 80
    assert c01["duration_5_30_share"] == 0.5
    assert (c01["contact"], c01["booked"], c01["arrived"]) == (2, 1, 1)
    assert (c01["booked_rate"], c01["arrived_rate"], c01["arrived_of_booked"]) == (0.5, 0.5, 1.0)
    assert c02["first_response_median_s"] == pytest.approx(300.0) and c02["duration_median_s"] == 300.0
    assert c02["booked"] == 0 and c02["booked_rate"] == 0.0
    # adjusted = actual − the lead scores of the chats (the visitor never wrote in D: not a chat)
    exp_b = desk["a"]["booked"] + desk["b"]["booked"]
    exp_a = desk["a"]["arrived"] + desk["b"]["arrived"]
    assert c01["scored_chats"] == 2
    assert c01["expected_booked"] == pytest.approx(exp_b, abs=1e-3)
    assert c01["booked_rate_adjusted"] == pytest.approx((1 - exp_b) / 2, abs=1e-3)
    assert c01["arrived_rate_adjusted"] == pytest.approx((1 - exp_a) / 2, abs=1e-3)
    assert c02["booked_rate_adjusted"] == pytest.approx(-desk["c"]["booked"], abs=1e-3)
    # concerns: price answered (费用 …), pain raised and not answered
    concerns = c01["concerns"]
    assert c01["concern_chats"] == 2
    assert concerns["price"]["raised"] == 1 and concerns["price"]["answered_rate"] == 1.0
    assert concerns["pain"]["raised"] == 1 and concerns["pain"]["answered"] == 0
    assert concerns["price"]["share"] == 0.5 and concerns["safety"]["raised"] == 0
    # compliance: the same count as the compliance report; suggestions: 1 used of 2 with feedback
    compliance = api.get("/v1/stats/compliance", params={"consultant": "c01"}, headers=api.keys["sup"]).json()
    assert c01["consultant_messages"] == compliance["checked"] == 5
    assert c01["compliance_flagged"] == compliance["flagged"] == 1
    assert (c01["suggestions_with_feedback"], c01["suggestions_used"], c01["suggestion_acceptance"]) == (
        2,
        1,
        0.5,
    )
    assert c01["suggestions_shown"] >= 2
    assert out["total"]["chats"] == 3 and out["total"]["visits"] == 4 and out["total"]["replies"] == 4
    # weeks start on Monday, months are YYYY-MM
    assert {r["period"] for r in _report(api, period="week")["rows"]} == {"2025-03-03"}
    month = _report(api, period="month")["rows"]
    assert {r["period"] for r in month} == {"2025-03"}
    assert {r["consultant_id"]: r["chats"] for r in month} == {"c01": 2, "c02": 1}
    # a change after a report is seen by the next
    _outcome(api, "rep-b", booked=True)
    again = {r["consultant_id"]: r for r in _report(api)["rows"]}["c01"]
    assert again["booked"] == 2 and again["booked_rate"] == 1.0
    # another day: nothing
    empty = _report(api, **{"from": "2025-03-06", "to": "2025-03-07"})
    assert empty["rows"] == [] and empty["total"]["visits"] == 0


def test_source_report(api, desk):
    paid = {r["source"]: r for r in _report(api, path="sources", by="paid")["rows"]}
    assert set(paid) == {"paid", "unknown"}
    assert (paid["paid"]["visits"], paid["paid"]["booked"], paid["paid"]["booked_rate"]) == (1, 1, 1.0)
    assert paid["unknown"]["visits"] == 3 and paid["unknown"]["chats"] == 2
    assert paid["unknown"]["arrived_of_visits"] == 0.0
    engine = _report(api, path="sources", by="engine")
    assert [(r["source"], r["visits"], r["chats"]) for r in engine["rows"]] == [("baidu", 4, 3)]
    row = engine["rows"][0]
    assert row["chat_rate"] == 0.75 and row["booked_rate"] == round(1 / 3, 4)
    daily = _report(api, path="sources", by="keyword_category", period="day")["rows"]
    assert {r["period"] for r in daily} == {DAY} and sum(r["visits"] for r in daily) == 4


def test_consultants_see_only_their_own(api, desk):
    mine = _report(api, who="c01")
    assert {r["consultant_id"] for r in mine["rows"]} == {"c01"} and mine["total"]["visits"] == 3
    assert {r["consultant_id"] for r in _report(api, who="c01", consultant="c01")["rows"]} == {"c01"}
    r = api.get("/v1/reports/consultants", params={"consultant": "c02"}, headers=api.keys["c01"])
    assert r.status_code == 403 and "c02" in r.json()["detail"]
    assert _report(api, who="c02", path="sources", by="engine")["rows"][0]["visits"] == 1
    assert {r["consultant_id"] for r in _report(api, who="ana")["rows"]} == {"c01", "c02"}
    assert {r["consultant_id"] for r in _report(api, consultant="c02")["rows"]} == {"c02"}
    assert api.get("/v1/reports/consultants").status_code == 401


def test_csv_matches_json(api, desk):
    for path, params in (("consultants", {"period": "day"}), ("sources", {"by": "paid"})):
        data = _report(api, path=path, **params)
        r = api.get(
            f"/v1/reports/{path}",
            params={"from": DAY, "to": DAY, "format": "csv", **params},
            headers=api.keys["sup"],
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert (
            r.headers["content-disposition"].startswith("attachment; filename=")
            and DAY in r.headers["content-disposition"]
        )
        rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert len(rows) == len(data["rows"])
        for got, want in zip(rows, data["rows"], strict=True):
            for key, value in want.items():
                if key == "concerns":
                    for c, v in value.items():
                        assert got[f"concern_{c}_raised"] == str(v["raised"])
                        assert got[f"concern_{c}_share"] == ("" if v["share"] is None else str(v["share"]))
                    continue
                if key == "grades":
                    for g, share in value.items():
                        assert got[f"grade_{g}_share"] == ("" if share is None else str(share))
                    continue
                assert got[key] == ("" if value is None else str(value)), key


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"from": "2025-03-06", "to": "2025-03-05"}, "before"),
        ({"from": "2024-01-01", "to": "2025-03-05"}, "366"),
        ({"period": "year"}, "period"),
        ({"from": "yesterday"}, "from"),
        ({"limit": 0}, "limit"),
        ({"format": "xls"}, "format"),
    ],
)
def test_bad_parameters_are_422_naming_them(api, params, words):
    r = api.get("/v1/reports/consultants", params=params, headers=api.keys["sup"])
    assert r.status_code == 422 and words in r.text, r.text
    r = api.get("/v1/reports/sources", params={"by": "keyword"}, headers=api.keys["sup"])
    assert r.status_code == 422 and "by" in r.text


def test_units():
    assert period_of("2025-03-05", "week") == "2025-03-03" and period_of("2025-03-02", "week") == "2025-02-24"
    assert period_of("2025-03-05", "month") == "2025-03" and period_of("2025-03-05", "day") == "2025-03-05"
    with pytest.raises(ReportError, match="366"):
        DayRange.checked(__import__("datetime").date(2024, 1, 1), __import__("datetime").date(2025, 1, 2))
    raised, answered = concerns_of(
        [
            ("visitor", "多少钱"),
            ("consultant", "收费要看方案"),  # answers the price
            ("consultant", "做的时候有麻药"),  # nothing open about pain yet: not an answer
            ("visitor", "疼不疼"),
            ("system", "访客已离开"),
        ]
    )
    assert raised == {"price", "pain"} and answered == {"price"}


def test_imported_grades_are_counted_where_present(api):
    """对话等级 kept with a chat's open event (as an import writes it) reaches the report; chats without
    one are not graded."""
    from yuyue.serving.report_summary import open_row, rebuild
    from yuyue.serving.store import events

    for cid, at in (("g-1", "10:00"), ("g-2", "10:10"), ("g-3", "10:20")):
        _open(api, cid, f"{at}:00")
        _say(api, cid, "visitor", "你好", f"{at}:30")
    engine = api.state.service.store.engine
    with engine.begin() as cx:
        for cid, grade in (("g-1", "极佳"), ("g-2", "一般")):
            where = sa.and_(events.c.conversation_id == cid, events.c.kind == "open")
            payload = orjson.loads(cx.execute(sa.select(events.c.payload).where(where)).scalar_one())
            cx.execute(
                events.update()
                .where(where)
                .values(payload=orjson.dumps({**payload, "grade": grade}).decode())
            )
        rebuild(cx, ["g-1", "g-2"])
    row = {r["consultant_id"]: r for r in _report(api)["rows"]}["c01"]
    assert row["graded_chats"] == 2 and row["chats"] == 3
    assert row["grades"] == {"极佳": 0.5, "较好": 0.0, "一般": 0.5}
    assert open_row({"id": "x", "visit": None}, {"grade": "较好"})["grade"] == "较好"  # the live open's row
    csv_text = api.get(
        "/v1/reports/consultants", params={"from": DAY, "to": DAY, "format": "csv"}, headers=api.keys["sup"]
    ).content.decode("utf-8-sig")
    assert "grade_极佳_share" in csv_text.splitlines()[0]
