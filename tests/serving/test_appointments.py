"""Appointments (issue 16) through the API, on SQLite and PostgreSQL: booked from a chat with the time
agreed in it as the default, listed by day / department / doctor, rescheduled (the reminder moves),
cancelled, marked arrived or no-show (by hand, or automatically after the grace); every invalid move a
409 naming it; who may do what."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.serving.test_api import _chat, _open

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2025, 3, 5, 14, 30, tzinfo=TZ)  # the chats are on 2025-03-05 around 14:03
AGREED = [
    ("visitor", "你好，隆鼻大概多少钱？"),
    ("consultant", "您好，费用要看方案，您明天下午3点方便过来面诊吗？"),
    ("visitor", "可以，明天下午3点过来"),
]


def set_now(api, when: datetime) -> None:
    api.app.state.yuyue.desk.clock = lambda: when


def booked_chat(api, who="c01", messages=AGREED):
    cid = _open(api, who=who)
    _chat(api, cid, messages, who=who)
    return cid


def book(api, cid, who="c01", **body):
    r = api.post("/v1/appointments", json={"conversation_id": cid, **body}, headers=api.keys[who])
    assert r.status_code == 201, r.text
    return r.json()


def tasks(api, who="sup", **params):
    r = api.get("/v1/tasks", params=params, headers=api.keys[who])
    assert r.status_code == 200, r.text
    return r.json()["items"]


@pytest.fixture
def desk(api):
    set_now(api, NOW)
    return api


def test_the_time_agreed_in_the_chat_is_the_default(desk):
    api = desk
    cid = booked_chat(api)
    r = api.get("/v1/appointments/proposal", params={"conversation_id": cid}, headers=api.keys["c01"])
    assert r.status_code == 200 and r.json()["text"] == "明天下午3点" and r.json()["message"] == 2
    appt = book(api, cid, doctor="张医生")
    assert datetime.fromisoformat(appt["time"]) == datetime(2025, 3, 6, 15, tzinfo=TZ)
    assert appt["time_source"] == "chat" and appt["day"] == "2025-03-06" and appt["status"] == "booked"
    assert appt["department"] == "整形美容" and appt["project"] == "隆鼻"
    # booking records the chat's booking outcome
    chat = api.get(f"/v1/conversations/{cid}", headers=api.keys["sup"]).json()["conversation"]
    assert chat["booked"] is True
    # a chat without an agreed time needs one
    other = _open(api)
    _chat(api, other, [("visitor", "你好，隆鼻多少钱")])
    r = api.post("/v1/appointments", json={"conversation_id": other}, headers=api.keys["c01"])
    assert r.status_code == 422 and "time" in r.json()["detail"]
    assert book(api, other, time="2025-03-07T09:30:00+08:00")["time_source"] == "given"
    r = api.post(
        "/v1/appointments",
        json={"conversation_id": other, "time": "2025-03-07T09:30:00"},
        headers=api.keys["c01"],
    )
    assert r.status_code == 422  # no offset


def test_listed_by_day_department_and_doctor(desk):
    api = desk
    a = book(api, booked_chat(api), doctor="张医生")
    b = book(api, booked_chat(api), doctor="李医生", time="2025-03-06T09:00:00+08:00")
    c = book(api, booked_chat(api), doctor="李医生", time="2025-03-07T09:00:00+08:00", department="口腔科")

    def ids(**params):
        r = api.get("/v1/appointments", params=params, headers=api.keys["sup"])
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]

    assert ids(date="2025-03-06") == [b["id"], a["id"]]  # in time order
    assert ids(doctor="李医生") == [b["id"], c["id"]]
    assert ids(department="口腔科") == [c["id"]]
    r = api.get("/v1/appointments", params={"date": "2025-13-01"}, headers=api.keys["sup"])
    assert r.status_code == 422 and "date" in r.text


def test_moves_and_the_moves_refused(desk):
    api = desk
    sup = api.keys["sup"]
    a = book(api, booked_chat(api))
    reminder = tasks(api, kind="reminder")
    assert [t["appointment_id"] for t in reminder] == [a["id"]]
    # reschedule: the reminder moves with it (due 10:00 the day before)
    r = api.patch(f"/v1/appointments/{a['id']}", json={"time": "2025-03-09T10:00:00+08:00"}, headers=sup)
    assert r.status_code == 200 and r.json()["day"] == "2025-03-09"
    (t,) = tasks(api, kind="reminder")
    assert datetime.fromisoformat(t["due_at"]) == datetime(2025, 3, 8, 10, tzinfo=TZ)
    assert api.patch(f"/v1/appointments/{a['id']}", json={}, headers=sup).status_code == 422
    # arrived: the chat's outcome, the reminder ends, after-care tasks follow (days 1, 3, 5)
    r = api.post(f"/v1/appointments/{a['id']}/arrived", headers=sup)
    assert r.status_code == 200 and r.json()["status"] == "arrived"
    assert tasks(api, kind="reminder") == []
    after = tasks(api, kind="aftercare")
    assert sorted(t["detail"] for t in after) == ["day 1", "day 3", "day 5"]
    chat = api.get(f"/v1/conversations/{a['conversation_id']}", headers=sup).json()["conversation"]
    assert chat["arrived"] is True
    # no move out of arrived, no reschedule
    for action in ("no-show", "cancel", "arrived"):
        r = api.post(f"/v1/appointments/{a['id']}/{action}", headers=sup)
        assert r.status_code == 409 and "is arrived" in r.json()["detail"], (action, r.text)
    r = api.patch(f"/v1/appointments/{a['id']}", json={"doctor": "王医生"}, headers=sup)
    assert r.status_code == 409 and "only a booked appointment" in r.json()["detail"]
    # cancelled ends its reminder; nothing moves out of cancelled
    b = book(api, booked_chat(api))
    assert api.post(f"/v1/appointments/{b['id']}/cancel", headers=sup).json()["status"] == "cancelled"
    assert [t for t in tasks(api, kind="reminder") if t["appointment_id"] == b["id"]] == []
    r = api.post(f"/v1/appointments/{b['id']}/arrived", headers=sup)
    assert r.status_code == 409 and "is cancelled: it cannot be marked arrived" in r.json()["detail"]
    assert api.post("/v1/appointments/ffff/arrived", headers=sup).status_code == 404


def test_no_show_after_the_grace_and_a_late_arrival(desk):
    api = desk
    a = book(api, booked_chat(api), time="2025-03-06T15:00:00+08:00")
    grace = api.app.state.yuyue.settings.no_show_grace_minutes
    due = datetime(2025, 3, 6, 15, tzinfo=TZ) + timedelta(minutes=grace)
    set_now(api, due - timedelta(minutes=1))
    (got,) = api.get("/v1/appointments", params={"date": "2025-03-06"}, headers=api.keys["sup"]).json()[
        "items"
    ]
    assert got["status"] == "booked"  # still within the grace
    set_now(api, due + timedelta(minutes=1))
    (got,) = api.get("/v1/appointments", params={"date": "2025-03-06"}, headers=api.keys["sup"]).json()[
        "items"
    ]
    assert got["status"] == "no_show" and got["auto_no_show"] is True
    (cb,) = tasks(api, kind="no_show_callback")
    assert cb["appointment_id"] == a["id"] and cb["state"] == "open"
    chat = api.get(f"/v1/conversations/{a['conversation_id']}", headers=api.keys["sup"]).json()[
        "conversation"
    ]
    assert chat["arrived"] is False
    # the patient did come, late: an automatic no-show may be corrected, and its callback ends
    r = api.post(f"/v1/appointments/{a['id']}/arrived", headers=api.keys["sup"])
    assert r.status_code == 200 and r.json()["status"] == "arrived"
    assert tasks(api, kind="no_show_callback") == []


def test_who_may_do_what_with_appointments(desk):
    api = desk
    mine = booked_chat(api, who="c01")
    r = api.post("/v1/appointments", json={"conversation_id": mine}, headers=api.keys["c02"])
    assert r.status_code == 403
    r = api.post("/v1/appointments", json={"conversation_id": mine}, headers=api.keys["ana"])
    assert r.status_code == 403
    a = book(api, mine, who="c01")
    assert api.post(f"/v1/appointments/{a['id']}/arrived", headers=api.keys["ana"]).status_code == 403
    assert api.post(f"/v1/appointments/{a['id']}/cancel", headers=api.keys["c02"]).status_code == 403
    # analysts read everything; a consultant lists only its own chats' appointments
    assert api.get("/v1/appointments", headers=api.keys["ana"]).json()["total"] == 1
    assert api.get("/v1/appointments", headers=api.keys["c02"]).json()["total"] == 0
    assert api.get(f"/v1/appointments/{a['id']}", headers=api.keys["c02"]).status_code == 403
    assert api.get(f"/v1/appointments/{a['id']}", headers=api.keys["c01"]).status_code == 200
    assert api.get("/v1/appointments").status_code == 401


@pytest.mark.parametrize("bad", ["a\x00b", "a b", "x" * 129])
def test_proposal_validates_the_conversation_id(desk, bad):
    """The query parameter carries the id's pattern and length (a NUL reached PostgreSQL: a 500)."""
    api = desk
    r = api.get("/v1/appointments/proposal", params={"conversation_id": bad}, headers=api.keys["c01"])
    assert r.status_code == 422, r.text
    assert "conversation_id" in r.text
