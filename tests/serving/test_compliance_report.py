"""GET /v1/stats/compliance: consultant messages checked and flagged per consultant, category and
day, on SQLite and PostgreSQL; who sees what; examples masked; messages stored before verdicts were
kept are checked again."""

from __future__ import annotations

import uuid
from collections import Counter

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from yuyue.serving.app import create_app
from yuyue.serving.store import events

DAY1 = "2025-03-05"
DAY2 = "2025-03-06"
PHONE = "13966012847"
COMPLIANT = "效果因人而异，需要医生面诊后判断，费用面诊后会详细说明。"
PROMISE = "放心，我们保证效果，今天特价只要三千"
WITH_PHONE = f"好的，您的电话{PHONE}我记下了，我们保证效果，百分之百满意"
FEAR = "您要是一直不管它，以后连孩子都要不上了，到时候哭都没地方哭"


@pytest.fixture
def api(tmp_path, test_settings, model, db_url):
    settings = test_settings.model_copy(
        update={"var_dir": tmp_path / "var", "model_poll_seconds": 0, "database_url": db_url}
    )
    app = create_app(settings, model, "t1")
    keys = app.state.yuyue.keys
    raw = {
        "c01": keys.create("wang", "consultant", consultant_id="c01")[1],
        "c02": keys.create("li", "consultant", consultant_id="c02")[1],
        "supervisor": keys.create("boss", "supervisor")[1],
        "analyst": keys.create("ana", "analyst")[1],
        "admin": keys.create("root", "admin")[1],
    }
    with TestClient(app) as client:
        client.keys = {k: {"X-API-Key": v} for k, v in raw.items()}
        client.engine = app.state.yuyue.engine
        yield client


def _chat(api, who: str, day: str, department: str = "整形美容") -> str:
    body = {
        "conversation_id": "cr-" + uuid.uuid4().hex[:10],
        "started_at": f"{day}T14:00:00+08:00",
        "department": department,
        "project": "隆鼻",
    }
    r = api.post("/v1/conversations", json=body, headers=api.keys[who])
    assert r.status_code == 201, r.text
    return r.json()["conversation_id"]


def _send(api, who, cid, role, text, day, minute):
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": role, "text": text, "at": f"{day}T14:{minute:02d}:00+08:00"},
        headers=api.keys[who],
    )
    assert r.status_code == 200, r.text
    return r.json()


def _seed(api) -> dict[str, list[dict]]:
    """Two consultants' chats over two days; returns each consultant's message answers' compliance."""
    told: dict[str, list[dict]] = {"c01": [], "c02": []}
    a = _chat(api, "c01", DAY1)
    _send(api, "c01", a, "visitor", "隆鼻多少钱，效果好吗", DAY1, 1)
    for minute, text in ((2, COMPLIANT), (3, PROMISE), (4, WITH_PHONE)):
        told["c01"].append(_send(api, "c01", a, "consultant", text, DAY1, minute)["compliance"])
    b = _chat(api, "c02", DAY2, department="妇科")
    _send(api, "c02", b, "visitor", "我这个不治会怎样", DAY2, 1)
    for minute, text in ((2, COMPLIANT), (3, FEAR)):
        told["c02"].append(_send(api, "c02", b, "consultant", text, DAY2, minute)["compliance"])
    return told


def _report(api, who="supervisor", **params):
    r = api.get("/v1/stats/compliance", params=params, headers=api.keys[who])
    assert r.status_code == 200, r.text
    return r.json()


def _categories(told: list[dict]) -> Counter:
    out: Counter = Counter()
    for c in told:
        out.update(set(r["category"] for r in c["rules"]))
    return out


def test_report_counts_match_what_consultants_were_told(api):
    told = _seed(api)
    flagged = {who: sum(not c["allowed"] for c in cs) for who, cs in told.items()}
    assert flagged == {"c01": 2, "c02": 1}  # the seed's premise: compliant texts pass, the others do not
    report = _report(api, group_by="consultant")
    assert (report["checked"], report["flagged"]) == (5, 3)  # visitor messages are not counted
    assert report["flagged_rate"] == pytest.approx(3 / 5, abs=1e-4)
    assert report["by_category"] == dict(_categories(told["c01"] + told["c02"]))
    groups = {g["group"]: g for g in report["groups"]}
    assert set(groups) == {"c01", "c02"}
    for who in ("c01", "c02"):
        g = groups[who]
        assert (g["checked"], g["flagged"]) == (len(told[who]), flagged[who])
        assert g["by_category"] == dict(_categories(told[who]))
        assert len(g["examples"]) == flagged[who]
        assert all(e["consultant_id"] == who and e["rules"] for e in g["examples"])
        assert all(r["citation"] for e in g["examples"] for r in e["rules"])
    assert report["groups"][0]["group"] == "c01"  # most flagged first
    # latest first; the compliant message is never an example
    assert [e["seq"] for e in groups["c01"]["examples"]] == [3, 2]
    assert all(COMPLIANT != e["text"] for g in report["groups"] for e in g["examples"])

    by_day = _report(api, group_by="day")
    assert [(g["group"], g["checked"], g["flagged"]) for g in by_day["groups"]] == [
        (DAY1, 3, 2),
        (DAY2, 2, 1),
    ]

    by_cat = _report(api, group_by="category")
    assert {g["group"]: g["flagged"] for g in by_cat["groups"]} == report["by_category"]
    assert all(g["checked"] is None for g in by_cat["groups"])

    overall = _report(api)
    assert [(g["group"], g["checked"], g["flagged"]) for g in overall["groups"]] == [("all", 5, 3)]


def test_filters_select_messages_by_time_department_and_consultant(api):
    _seed(api)
    day1 = _report(api, since=f"{DAY1}T00:00:00+08:00", until=f"{DAY2}T00:00:00+08:00")
    assert (day1["checked"], day1["flagged"]) == (3, 2)
    # by the message's own time, not the chat's start: only the last two of c01's messages
    late = _report(api, since=f"{DAY1}T14:03:00+08:00", until=f"{DAY1}T15:00:00+08:00")
    assert (late["checked"], late["flagged"]) == (2, 2)
    dep = _report(api, department="妇科")
    assert (dep["checked"], dep["flagged"]) == (2, 1)
    one = _report(api, consultant="c02", group_by="consultant")
    assert [g["group"] for g in one["groups"]] == ["c02"]
    r = api.get("/v1/stats/compliance", params={"since": f"{DAY1}T00:00:00"}, headers=api.keys["supervisor"])
    assert r.status_code == 422 and "timezone" in r.text
    r = api.get("/v1/stats/compliance", params={"group_by": "hospital"}, headers=api.keys["supervisor"])
    assert r.status_code == 422 and "group_by" in r.text


def test_roles_see_all_or_only_their_own(api):
    _seed(api)
    for who in ("supervisor", "analyst", "admin"):
        assert {g["group"] for g in _report(api, who, group_by="consultant")["groups"]} == {"c01", "c02"}, who
    for who in ("c01", "c02"):
        own = _report(api, who, group_by="consultant")
        assert [g["group"] for g in own["groups"]] == [who]
        # asking for another consultant still shows only their own
        other = "c02" if who == "c01" else "c01"
        asked = _report(api, who, group_by="consultant", consultant=other)
        assert [g["group"] for g in asked["groups"]] == [who]
        assert all(e["consultant_id"] == who for g in asked["groups"] for e in g["examples"])
    assert api.get("/v1/stats/compliance").status_code == 401
    bad = api.get("/v1/stats/compliance", headers={"X-API-Key": "yy_nope_nope"})
    assert bad.status_code == 401


def test_examples_are_masked_for_every_role(api):
    _seed(api)
    for who in ("supervisor", "analyst", "admin", "c01"):
        report = _report(api, who, group_by="consultant")
        texts = [e["text"] for g in report["groups"] for e in g["examples"]]
        assert texts, who
        assert not any(PHONE in t for t in texts), who
        phone_example = [t for t in texts if "我记下了" in t]
        assert len(phone_example) == 1 and "保证效果" in phone_example[0], who  # the claim itself stays


def test_messages_without_a_kept_verdict_are_checked_again(api):
    told = _seed(api)
    before = _report(api, group_by="consultant")
    with api.engine.begin() as cx:  # as stored before verdicts were kept with the message
        rows = cx.execute(sa.select(events.c.id, events.c.payload).where(events.c.kind == "message")).all()
        dropped = 0
        for id_, payload in rows:
            message = orjson.loads(payload)
            if message.pop("compliance", None) is not None:
                dropped += 1
                cx.execute(
                    events.update().where(events.c.id == id_).values(payload=orjson.dumps(message).decode())
                )
    assert dropped == sum(len(v) for v in told.values())
    after = _report(api, group_by="consultant")
    assert after == before
