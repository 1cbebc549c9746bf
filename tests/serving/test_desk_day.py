"""A desk's day end to end through the API (issue 16), on SQLite and PostgreSQL: chats -> bookings with
the times agreed in them -> tomorrow's list -> reminder tasks -> one arrival, one no-show (after the
grace) -> the no-show's callback task -> a call result that rebooks -> a new appointment (with its own
reminder) on the list of its day -> the patient's history shows it all (and a returning chat with the
same phone joins it)."""

# ruff: noqa: F811  (the desk fixture comes from test_appointments)
from __future__ import annotations

from datetime import datetime, timedelta

from tests.serving.test_appointments import AGREED, TZ, book, booked_chat, desk, set_now, tasks  # noqa: F401
from tests.serving.test_patients import chat, history, patient_of

LATER = [
    ("visitor", "你好，我想做双眼皮，费用多少"),
    ("consultant", "您好，需要面诊看眼部情况，明天上午10点可以来吗？"),
    ("visitor", "好的，明天上午10点"),
    ("visitor", "我电话13900001111，有事打给我"),
]


def test_a_desk_day(desk):
    api = desk
    sup, c01 = api.keys["sup"], api.keys["c01"]
    # the chats of the 5th: two bookings with the times agreed in them
    first = book(api, booked_chat(api, messages=AGREED), doctor="张医生")
    second = book(api, booked_chat(api, messages=LATER), doctor="李医生")
    assert first["time_source"] == second["time_source"] == "chat"
    # tomorrow's arrivals, in time order
    r = api.get("/v1/appointments", params={"date": "2025-03-06"}, headers=sup)
    assert [a["id"] for a in r.json()["items"]] == [second["id"], first["id"]]
    # the reminder calls of today, one per appointment, in the consultant's list too
    reminders = tasks(api, kind="reminder", due="today")
    assert {t["appointment_id"] for t in reminders} == {first["id"], second["id"]}
    assert {t["id"] for t in tasks(api, "c01", kind="reminder")} == {t["id"] for t in reminders}
    for t in reminders:
        assert api.post(f"/v1/tasks/{t['id']}/claim", headers=c01).json()["state"] == "assigned"
        r = api.post(
            f"/v1/tasks/{t['id']}/attempts", json={"result": "reached", "note": "已提醒"}, headers=c01
        )
        assert r.json()["state"] == "attempted"
        assert api.post(f"/v1/tasks/{t['id']}/done", json={}, headers=c01).json()["state"] == "done"
    # the 6th: the first arrives; the second never comes, and is a no-show once the grace has passed
    set_now(api, datetime(2025, 3, 6, 14, 55, tzinfo=TZ))
    assert api.post(f"/v1/appointments/{first['id']}/arrived", headers=c01).json()["status"] == "arrived"
    grace = api.app.state.yuyue.settings.no_show_grace_minutes
    assert datetime(2025, 3, 6, 10, tzinfo=TZ) + timedelta(minutes=grace) < datetime(
        2025, 3, 6, 14, 55, tzinfo=TZ
    )
    day = {
        a["id"]: a
        for a in api.get("/v1/appointments", params={"date": "2025-03-06"}, headers=sup).json()["items"]
    }
    assert day[first["id"]]["status"] == "arrived"
    assert day[second["id"]]["status"] == "no_show" and day[second["id"]]["auto_no_show"] is True
    # the no-show's callback task heads the work list (the after-care calls have no model score)
    work = tasks(api)
    assert work[0]["kind"] == "no_show_callback" and work[0]["appointment_id"] == second["id"]
    assert {t["kind"] for t in work} == {"no_show_callback", "aftercare"}
    callback = work[0]
    # the supervisor gives it to c01, who calls: no answer, then the patient rebooks for the 8th
    r = api.post(f"/v1/tasks/{callback['id']}/assign", json={"assignee": "c01"}, headers=sup)
    assert r.json()["state"] == "assigned"
    api.post(f"/v1/tasks/{callback['id']}/attempts", json={"result": "no_answer"}, headers=c01)
    r = api.post(
        f"/v1/tasks/{callback['id']}/attempts",
        json={"result": "rebooked", "time": "2025-03-08T10:00:00+08:00", "note": "改约周六"},
        headers=c01,
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["state"] == "done" and done["closed_reason"] == "rebooked"
    assert [a["result"] for a in done["attempt_log"]] == ["no_answer", "rebooked"]
    new = done["appointment"]
    assert new["rebooked_from"] == second["id"] and new["conversation_id"] == second["conversation_id"]
    assert done["attempt_log"][-1]["appointment_id"] == new["id"]
    # the new appointment is on the 8th's list, with a reminder due on the 7th
    r = api.get("/v1/appointments", params={"date": "2025-03-08"}, headers=sup)
    assert [a["id"] for a in r.json()["items"]] == [new["id"]]
    (reminder,) = tasks(api, kind="reminder")
    assert reminder["appointment_id"] == new["id"]
    assert datetime.fromisoformat(reminder["due_at"]) == datetime(2025, 3, 7, 10, tzinfo=TZ)
    # the old appointment stays a no-show; the callback is gone from the list
    assert api.get(f"/v1/appointments/{second['id']}", headers=sup).json()["status"] == "no_show"
    assert "no_show_callback" not in {t["kind"] for t in tasks(api)}
    # the patient's history: the chat, both appointments, the calls; one no-show (not flagged yet)
    patient = patient_of(api, second["conversation_id"])
    assert patient["no_shows"] == 1 and patient["flagged"] is False and patient["returning"] is False
    h = history(api, patient["id"])
    assert [c["conversation_id"] for c in h["chats"]] == [second["conversation_id"]]
    assert h["chats"][0]["booked"] is True and h["chats"][0]["arrived"] is False
    assert [(a["id"], a["status"]) for a in h["appointments"]] == [
        (second["id"], "no_show"),
        (new["id"], "booked"),
    ]
    assert [c["result"] for t in h["tasks"] for c in t["calls"]] == ["reached", "no_answer", "rebooked"]
    assert h["counts"]["no_shows"] == 1 and h["counts"]["calls"] == 3
    assert [(c["type"], c["value"]) for c in h["contacts"]] == [
        ("phone", "139****1111")
    ]  # a supervisor: masked
    # the visitor comes back in a new chat with the same number: one patient, a returning visitor
    again = chat(api, "你好，我上次约过双眼皮，电话139 0000 1111")
    assert patient_of(api, again) == {**patient, "chats": 2, "returning": True}
