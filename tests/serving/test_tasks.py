# ruff: noqa: F811  (the desk fixture comes from test_appointments)
"""The work list (issue 16) through the API, on SQLite and PostgreSQL: each state move and each refused
move (409 naming it), call results, snooze, lead tasks ended by a booking or a refusal, ranking by the
model's expected value, filters, and who may see and do what."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.serving.test_api import CHAT, PHONE, _chat, _open
from tests.serving.test_appointments import NOW, book, booked_chat, desk, set_now, tasks  # noqa: F401


def _post(api, path, who="sup", body=None):
    return api.post(path, json=body if body is not None else {}, headers=api.keys[who])


def lead(api, who="c01"):
    """A chat that left a phone number without booking, with its lead task (outcome contact=true)."""
    cid = _open(api, who=who)
    _chat(api, cid, CHAT, who=who)
    r = _post(api, f"/v1/conversations/{cid}/outcome", who, {"contact": True})
    assert r.status_code == 200, r.text
    (t,) = [t for t in tasks(api, kind="lead_call") if t["conversation_id"] == cid]
    return cid, t


def test_states_and_the_moves_refused(desk):
    api = desk
    cid, t = lead(api)
    tid = t["id"]
    assert t["state"] == "open" and t["attempts"] == 0 and 0 < t["priority"] < 1 and t["reasons"]
    # a call needs an assignee; closing needs a call
    r = _post(api, f"/v1/tasks/{tid}/attempts", body={"result": "reached"})
    assert r.status_code == 409 and "is open: cannot record a call" in r.json()["detail"]
    r = _post(api, f"/v1/tasks/{tid}/done")
    assert r.status_code == 409 and "is open: cannot close it" in r.json()["detail"]
    r = _post(api, f"/v1/tasks/{tid}/attempts", "c01", {"result": "reached"})
    assert r.status_code == 409 and "claim it" in r.json()["detail"]
    # open -> assigned (self-claim) -> attempted -> done
    r = _post(api, f"/v1/tasks/{tid}/claim", "c01")
    assert r.status_code == 200 and r.json()["state"] == "assigned" and r.json()["assignee"] == "c01"
    r = _post(api, f"/v1/tasks/{tid}/claim", "c01")
    assert r.status_code == 409 and "is assigned: cannot claim" in r.json()["detail"]
    r = _post(api, f"/v1/tasks/{tid}/attempts", "c01", {"result": "no_answer", "note": "关机"})
    assert r.status_code == 200 and r.json()["state"] == "attempted" and r.json()["attempts"] == 1
    r = _post(api, f"/v1/tasks/{tid}/attempts", "c01", {"result": "reached", "note": "在考虑"})
    assert r.json()["state"] == "attempted" and r.json()["last_result"] == "reached"
    log = r.json()["attempt_log"]
    assert [(a["actor"], a["result"], a["note"]) for a in log] == [
        ("wang", "no_answer", "关机"),
        ("wang", "reached", "在考虑"),
    ]
    r = _post(api, f"/v1/tasks/{tid}/done", "c01")
    assert r.status_code == 200 and r.json()["state"] == "done" and r.json()["closed_reason"] == "done"
    for path, body in (
        ("attempts", {"result": "reached"}),
        ("snooze", {"until": "2025-03-06T10:00:00+08:00"}),
        ("assign", {"assignee": "c02"}),
        ("done", {}),
    ):
        r = _post(api, f"/v1/tasks/{tid}/{path}", body=body)
        assert r.status_code == 409 and "is done" in r.json()["detail"], (path, r.text)
    # done tasks leave the list, and show under state=done
    assert tid not in [x["id"] for x in tasks(api)]
    assert tid in [x["id"] for x in tasks(api, state="done")]
    # bad input is named
    _, t2 = lead(api)
    r = _post(api, f"/v1/tasks/{t2['id']}/assign", body={"assignee": "c01"})
    assert r.status_code == 200
    r = _post(api, f"/v1/tasks/{t2['id']}/attempts", body={"result": "maybe"})
    assert r.status_code == 422 and "result" in r.json()["detail"]
    r = _post(api, f"/v1/tasks/{t2['id']}/attempts", body={"result": "rebooked"})
    assert r.status_code == 422 and "time" in r.json()["detail"]
    r = _post(api, f"/v1/tasks/{t2['id']}/snooze", body={"until": "2025-03-05T09:00:00+08:00"})
    assert r.status_code == 422 and "future" in r.json()["detail"]
    assert _post(api, "/v1/tasks/abc123/claim", "c01").status_code == 404


def test_refusal_or_booking_ends_the_lead_and_wrong_numbers_end_too(desk):
    api = desk
    _, t = lead(api)
    _post(api, f"/v1/tasks/{t['id']}/assign", body={"assignee": "c01"})
    r = _post(api, f"/v1/tasks/{t['id']}/attempts", "c01", {"result": "refused"})
    assert r.json()["state"] == "done" and r.json()["closed_reason"] == "refused"
    cid, t = lead(api)
    r = _post(api, f"/v1/conversations/{cid}/outcome", "c01", {"booked": True})
    assert r.status_code == 200
    (done,) = [x for x in tasks(api, state="done") if x["id"] == t["id"]]
    assert done["closed_reason"] == "booked"
    # a lead's rebooking is its booking: a new appointment, the chat booked
    cid, t = lead(api)
    _post(api, f"/v1/tasks/{t['id']}/claim", "c01")
    r = _post(
        api,
        f"/v1/tasks/{t['id']}/attempts",
        "c01",
        {"result": "rebooked", "time": "2025-03-08T10:00:00+08:00", "doctor": "张医生"},
    )
    assert r.status_code == 200 and r.json()["state"] == "done"
    appt = r.json()["appointment"]
    assert appt["conversation_id"] == cid and appt["doctor"] == "张医生" and appt["day"] == "2025-03-08"
    assert (
        api.get(f"/v1/conversations/{cid}", headers=api.keys["sup"]).json()["conversation"]["booked"] is True
    )


def test_snooze_hides_until_its_time(desk):
    api = desk
    _, t = lead(api)
    until = NOW + timedelta(hours=2)
    r = _post(api, f"/v1/tasks/{t['id']}/snooze", body={"until": until.isoformat()})
    assert r.status_code == 200 and r.json()["state"] == "snoozed"
    assert t["id"] not in [x["id"] for x in tasks(api, due="today", state="open")]
    set_now(api, until + timedelta(minutes=1))
    (back,) = [x for x in tasks(api) if x["id"] == t["id"]]
    assert back["state"] == "open" and datetime.fromisoformat(back["due_at"]) == until and back["overdue"]


def test_sweep_opens_leads_for_contact_seen_in_messages(desk):
    api = desk
    cid = _open(api)
    _chat(api, cid, CHAT)  # the phone number is in a message; no outcome recorded
    assert [t for t in tasks(api, kind="lead_call") if t["conversation_id"] == cid] == []
    assert _post(api, "/v1/tasks/sweep", "c01").status_code == 403
    r = _post(api, "/v1/tasks/sweep")
    assert r.status_code == 200 and r.json()["leads"] == 1
    assert _post(api, "/v1/tasks/sweep").json()["leads"] == 0  # once per chat
    assert [t["conversation_id"] for t in tasks(api, kind="lead_call")] == [cid]


def test_ranked_by_expected_value_with_filters(desk):
    api = desk
    for _ in range(2):
        lead(api)
    for _ in range(2):
        book(api, booked_chat(api))
    items = tasks(api)
    assert {t["kind"] for t in items} == {"lead_call", "reminder"}
    assert [t["priority"] for t in items] == sorted((t["priority"] for t in items), reverse=True)
    for t in items:
        if t["kind"] == "lead_call":
            assert t["priority"] == round(t["p_booked"], 4)
        else:
            assert abs(t["priority"] - (1 - min(1.0, t["p_arrived"] / t["p_booked"]))) < 1e-3
    # ranked in the database: pages are slices of the one ranking, total counts them all
    r = api.get("/v1/tasks", params={"limit": 2, "offset": 2}, headers=api.keys["sup"]).json()
    assert r["total"] == 4 and [t["id"] for t in r["items"]] == [t["id"] for t in items[2:4]]
    assert {t["kind"] for t in tasks(api, kind="reminder")} == {"reminder"}
    assert tasks(api, department="口腔科") == []
    first = items[0]["id"]
    _post(api, f"/v1/tasks/{first}/assign", body={"assignee": "c02"})
    assert [t["id"] for t in tasks(api, assignee="c02")] == [first]
    assert len(tasks(api, due="today")) == 4 and tasks(api, due="overdue") == []
    set_now(api, NOW + timedelta(days=1))
    assert len(tasks(api, due="overdue")) == 4
    r = api.get("/v1/tasks", params={"due": "soon"}, headers=api.keys["sup"])
    assert r.status_code == 422 and "due" in r.text


def test_who_sees_and_does_what(desk):
    api = desk
    _, mine = lead(api, "c01")
    _, theirs = lead(api, "c02")
    assert {t["id"] for t in tasks(api, "c01")} == {mine["id"]}
    assert {t["id"] for t in tasks(api, "ana")} == {mine["id"], theirs["id"]}
    assert api.get(f"/v1/tasks/{theirs['id']}", headers=api.keys["c01"]).status_code == 403
    assert _post(api, f"/v1/tasks/{theirs['id']}/claim", "c01").status_code == 403
    # only supervisors assign; analysts only read
    assert _post(api, f"/v1/tasks/{mine['id']}/assign", "c01", {"assignee": "c01"}).status_code == 403
    assert _post(api, f"/v1/tasks/{mine['id']}/assign", "ana", {"assignee": "c01"}).status_code == 403
    assert _post(api, f"/v1/tasks/{mine['id']}/claim", "ana").status_code == 403
    assert _post(api, f"/v1/tasks/{mine['id']}/claim", "sup").status_code == 403
    # a task assigned to another consultant is theirs to see and act on
    _post(api, f"/v1/tasks/{theirs['id']}/assign", body={"assignee": "c01"})
    assert {t["id"] for t in tasks(api, "c01")} == {mine["id"], theirs["id"]}
    assert tasks(api, "c02") == []
    r = _post(api, f"/v1/tasks/{theirs['id']}/attempts", "c02", {"result": "reached"})
    assert r.status_code == 403
    r = _post(api, f"/v1/tasks/{theirs['id']}/attempts", "c01", {"result": "reached"})
    assert r.status_code == 200
    # supervisors act on any task; no view carries the phone number (the detail shows it masked)
    r = _post(api, f"/v1/tasks/{theirs['id']}/attempts", body={"result": "no_answer"})
    assert r.status_code == 200 and PHONE not in r.text and "138****5678" in r.text
    listed = api.get("/v1/tasks", headers=api.keys["sup"]).text
    assert PHONE not in listed and "138****" not in listed  # lists carry no contact at all
    assert api.get("/v1/tasks").status_code == 401
