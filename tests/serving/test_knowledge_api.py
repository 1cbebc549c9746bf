"""``/v1/knowledge`` and the suggestions it fills, on SQLite and PostgreSQL + Redis (the ``api`` fixture).

Everyone reads; admins write whole documents, checked first (422 naming the field or the compliance
rule, nothing stored; 409 on a stale revision). A chat's suggestions then quote the project's price
range with the caveat, name only a doctor on duty on the visit day, and a department beyond the four
(皮肤科) gets Chinese suggestions from its data alone."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

from yuyue.serving import knowledge as kb

CJK = re.compile(r"[\u4e00-\u9fff]")


def _doc(tomorrow_weekday: int) -> dict:
    """皮肤科 with 甲 on duty tomorrow, 乙 on duty tomorrow too but on leave, 丙 off tomorrow's weekday."""
    other = tomorrow_weekday % 7 + 1
    tomorrow = (datetime.now(kb.LOCAL_TZ) + timedelta(days=1)).date().isoformat()
    return {
        "hospital": {"address": "示例路1号", "directions": "地铁2号线示例站3号口出，步行5分钟"},
        "departments": [
            {
                "name": "皮肤科",
                "projects": [
                    {"name": "痤疮治疗", "aliases": ["痘痘", "祛痘"], "price_low": 200, "price_high": 2000}
                ],
            }
        ],
        "doctors": [
            {
                "name": "甲一",
                "title": "主任医师",
                "department": "皮肤科",
                "duty": [{"weekday": tomorrow_weekday}],
            },
            {
                "name": "乙二",
                "title": "主任医师",
                "department": "皮肤科",
                "specialties": ["痤疮治疗"],
                "duty": [{"weekday": tomorrow_weekday}],
                "leave": [{"first_day": tomorrow, "last_day": tomorrow}],
            },
            {
                "name": "丙三",
                "title": "主任医师",
                "department": "皮肤科",
                "specialties": ["痘痘"],
                "duty": [{"weekday": other}],
            },
        ],
    }


def _tomorrow_weekday() -> int:
    return (datetime.now(kb.LOCAL_TZ) + timedelta(days=1)).isoweekday()


def test_everyone_reads_admins_write(api) -> None:
    r = api.get("/v1/knowledge", headers=api.keys["c01"])
    assert r.status_code == 200
    assert r.json()["rev"] == 0 and r.json()["editable"] is False
    doc = _doc(_tomorrow_weekday())
    for who in ("c01", "sup", "ana"):
        assert api.put("/v1/knowledge", json=doc, headers=api.keys[who]).status_code == 403
    r = api.put("/v1/knowledge", json=doc, headers=api.keys["adm"])
    assert r.status_code == 200, r.text
    assert r.json()["rev"] == 1 and r.json()["updated_by"] == "root" and r.json()["editable"] is True
    got = api.get("/v1/knowledge", headers=api.keys["sup"]).json()
    assert got["rev"] == 1 and got["knowledge"]["doctors"][0]["name"] == "甲一"
    # the day view: who works, who is off and why
    day = (datetime.now(kb.LOCAL_TZ) + timedelta(days=1)).date().isoformat()
    r = api.get(
        "/v1/knowledge/day",
        params={"date": day, "department": "皮肤科", "project": "痘痘"},
        headers=api.keys["c01"],
    )
    assert r.status_code == 200, r.text
    assert [d["name"] for d in r.json()["on_duty"]] == ["甲一"]
    assert {d["name"]: d["why"] for d in r.json()["off"]} == {"乙二": "leave", "丙三": "no duty that weekday"}
    assert r.json()["project"]["name"] == "痤疮治疗"


def test_bad_writes_name_the_field_and_store_nothing(api) -> None:
    adm = api.keys["adm"]
    doc = _doc(_tomorrow_weekday())
    assert api.put("/v1/knowledge", json=doc, headers=adm).status_code == 200
    bad = {**doc, "doctors": [{**doc["doctors"][0], "duty": [{"weekday": 1, "start": "25:00"}]}]}
    r = api.put("/v1/knowledge", json=bad, headers=adm)
    assert r.status_code == 422 and "doctors.0.duty.0.start" in r.json()["detail"]
    activity = {
        "id": "x",
        "title": "活动",
        "wording": "保证治愈，无效全额退款",
        "valid_from": "2027-01-01",
        "valid_to": "2027-12-31",
    }
    r = api.put("/v1/knowledge", json={**doc, "activities": [activity]}, headers=adm)
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "activities", 0, "wording"]
    assert "compliance rule" in r.json()["detail"]
    r = api.put("/v1/knowledge", json={**doc, "doctors": [{"name": "丁", "department": "口腔"}]}, headers=adm)
    assert r.status_code == 422 and "doctors.0.department" in r.json()["detail"]
    r = api.put(
        "/v1/knowledge", json={**doc, "doctors": [{"name": "x" * 65, "department": "皮肤科"}]}, headers=adm
    )
    assert r.status_code == 422 and "doctors.0.name" in r.json()["detail"]
    assert api.get("/v1/knowledge", headers=adm).json()["rev"] == 1  # none of them stored
    # a stale revision
    assert api.put("/v1/knowledge", params={"rev": 0}, json=doc, headers=adm).status_code == 409
    assert api.put("/v1/knowledge", params={"rev": 1}, json=doc, headers=adm).status_code == 200


def _chat(api, department: str, texts: list[str]) -> list[dict]:
    h = api.keys["c01"]
    cid = "kb-" + uuid.uuid4().hex[:10]
    r = api.post("/v1/conversations", json={"conversation_id": cid, "department": department}, headers=h)
    assert r.status_code == 201, r.text
    out = []
    for text in texts:
        r = api.post(
            f"/v1/conversations/{cid}/messages", json={"role": "visitor", "text": text, "k": 5}, headers=h
        )
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def test_a_new_department_gets_its_price_range_with_the_caveat(api) -> None:
    texts = [
        s["text"] for s in _chat(api, "皮肤科", ["脸上长痘痘好久了，祛痘大概多少钱？"])[-1]["suggestions"]
    ]
    assert texts and not any("200到2000元" in t for t in texts)  # no knowledge yet: generic replies
    assert all(CJK.search(t) and "{" not in t for t in texts)
    assert (
        api.put("/v1/knowledge", json=_doc(_tomorrow_weekday()), headers=api.keys["adm"]).status_code == 200
    )
    texts = [
        s["text"] for s in _chat(api, "皮肤科", ["脸上长痘痘好久了，祛痘大概多少钱？"])[-1]["suggestions"]
    ]
    price = [t for t in texts if "200到2000元" in t]
    assert price and "具体费用面诊后确定" in price[0], texts
    assert all(CJK.search(t) and "{" not in t for t in texts)
    texts = [s["text"] for s in _chat(api, "皮肤科", ["医院在哪里，怎么过去？"])[-1]["suggestions"]]
    assert any("示例路1号" in t or "地铁2号线示例站" in t for t in texts), texts


def test_only_a_doctor_on_duty_that_day_is_recommended(api, model) -> None:
    """The suggester itself, at the recommend-expert stage, for a visit tomorrow: 甲一 (on duty), never
    乙二 (on leave) or 丙三 (off that weekday), though both list the project among their specialties."""
    assert (
        api.put("/v1/knowledge", json=_doc(_tomorrow_weekday()), headers=api.keys["adm"]).status_code == 200
    )
    sug = model.suggester
    book = kb.KnowledgeBook(api.state.engine, api.state.settings.hospital_id)
    messages = [
        ("visitor", "脸上长痘痘好几个月了"),
        ("consultant", "您好，方便说说具体情况吗？"),
        ("visitor", "明天能去看医生吗"),
    ]
    facts = {"department": "皮肤科", "next_stage": "recommend_expert", "consultant_spoke": True}
    old = sug.knowledge
    kb.attach(sug, book)
    try:
        with kb.message_time(datetime.now(kb.LOCAL_TZ)):
            texts = [s.text for s in sug.suggest(messages, facts, k=5)]
        plain = [s.text for s in sug.suggest(messages, facts, k=5)]  # outside a served message: as before
    finally:
        sug.knowledge = old
    named = [t for t in texts if "甲一" in t]
    assert named, texts
    assert not any("乙二" in t or "丙三" in t for t in texts)
    assert not any("甲一" in t for t in plain)


def test_hours_on_duty_reach_the_day_view_and_the_suggester(api, model) -> None:
    """Tomorrow 甲一 works mornings (a duty's hours), 丙三 (specialised) afternoons (the doctor's hours):
    a visitor asking for 3 pm gets 丙三, one asking for 10 am 甲一; a bad ``hours`` is a 422 naming the
    doctor and the value."""
    wd = _tomorrow_weekday()
    doc = _doc(wd)
    doc["doctors"][0]["duty"] = [{"weekday": wd, "hours": "09:00-12:00"}]
    doc["doctors"][2] |= {"duty": [{"weekday": wd}], "hours": "14:00-17:30"}
    adm = api.keys["adm"]
    bad = {**doc, "doctors": [{**doc["doctors"][2], "hours": "14:00-13:00"}]}
    r = api.put("/v1/knowledge", json=bad, headers=adm)
    assert r.status_code == 422 and "doctor '丙三'" in r.text and "'14:00-13:00'" in r.text, r.text
    assert api.put("/v1/knowledge", json=doc, headers=adm).status_code == 200
    day = (datetime.now(kb.LOCAL_TZ) + timedelta(days=1)).date().isoformat()
    r = api.get("/v1/knowledge/day", params={"date": day, "department": "皮肤科"}, headers=api.keys["c01"])
    hours = {d["name"]: (d["start"], d["end"], d["hours"]) for d in r.json()["on_duty"]}
    assert hours == {"甲一": ("09:00", "12:00", "09:00-12:00"), "丙三": ("14:00", "17:30", "14:00-17:30")}
    sug = model.suggester
    book = kb.KnowledgeBook(api.state.engine, api.state.settings.hospital_id)
    facts = {"department": "皮肤科", "next_stage": "recommend_expert", "consultant_spoke": True}
    old = sug.knowledge
    kb.attach(sug, book)
    named = {}
    try:
        for when in ("明天下午3点", "明天上午10点", "明天晚上7点"):
            messages = [
                ("visitor", "脸上长痘痘好几个月了"),
                ("consultant", "您好，方便说说具体情况吗？"),
                ("visitor", f"{when}可以去看医生吗"),
            ]
            with kb.message_time(datetime.now(kb.LOCAL_TZ)):
                texts = [s.text for s in sug.suggest(messages, facts, k=5)]
            named[when] = {n for n in ("甲一", "乙二", "丙三") if any(n in t for t in texts)}
    finally:
        sug.knowledge = old
    assert named == {"明天下午3点": {"丙三"}, "明天上午10点": {"甲一"}, "明天晚上7点": set()}, named
