# ruff: noqa: F811  (the desk fixture comes from test_appointments)
"""What calls and arrivals learn reaches the training export (issue 16), on SQLite and PostgreSQL: a
lead who refused on the phone is exported ``booked=false``, a rebooking ``booked=true`` with its time,
an arrival ``arrived=true``, a no-show ``arrived=false`` (then ``true`` once the rebooked visit
happens). They are labels only: the exported messages and visit do not change, no call note reaches
the export, and ``yuyue train``'s reader takes them as the chats' labels."""

from __future__ import annotations

from datetime import timedelta

import orjson

from tests.serving.test_api import CHAT, PHONE, _chat, _open
from tests.serving.test_appointments import NOW, book, booked_chat, desk, set_now, tasks  # noqa: F401
from yuyue.training.dataset import scan

NOTE = f"患者说考虑一下，别的号码{PHONE[:3]}0000{PHONE[7:]}"


def _post(api, path, who="sup", body=None):
    r = api.post(path, json=body if body is not None else {}, headers=api.keys[who])
    assert r.status_code in (200, 201), r.text
    return r.json()


def export(api) -> dict[str, dict]:
    r = api.get("/v1/export", headers=api.keys["ana"])
    assert r.status_code == 200, r.text
    return {rec["conversation_id"]: rec for rec in map(orjson.loads, r.content.splitlines())}


def lead(api):
    cid = _open(api)
    _chat(api, cid, CHAT)
    _post(api, f"/v1/conversations/{cid}/outcome", "c01", {"contact": True})
    (t,) = [t for t in tasks(api, kind="lead_call") if t["conversation_id"] == cid]
    _post(api, f"/v1/tasks/{t['id']}/assign", "sup", {"assignee": "c01"})
    return cid, t


def call(api, task, result, **body):
    return _post(api, f"/v1/tasks/{task['id']}/attempts", "c01", {"result": result, "note": NOTE, **body})


def test_call_results_and_arrivals_become_exported_labels(desk, tmp_path):
    api = desk
    sup = api.keys["sup"]
    refused, t_refused = lead(api)
    rebooked, t_rebooked = lead(api)
    arrives = booked_chat(api)
    a_arrives = book(api, arrives, time="2025-03-06T15:00:00+08:00")
    missed = booked_chat(api)
    a_missed = book(api, missed, time="2025-03-06T16:00:00+08:00")
    before = export(api)
    assert "booked" not in before[refused]["outcome"] and "booked" not in before[rebooked]["outcome"]
    assert before[arrives]["outcome"]["booked"] is True and "arrived" not in before[arrives]["outcome"]

    # the calls and the day
    call(api, t_refused, "no_answer")
    assert "booked" not in export(api)[refused]["outcome"]  # no answer: nothing learned
    call(api, t_refused, "refused")
    out = call(api, t_rebooked, "rebooked", time="2025-03-08T10:00:00+08:00")
    assert out["appointment"]["rebooked_from"] is None
    set_now(api, NOW + timedelta(days=1, hours=2))
    _post(api, f"/v1/appointments/{a_arrives['id']}/arrived")
    r = api.post(f"/v1/appointments/{a_missed['id']}/no-show", headers=sup)
    assert r.status_code == 200, r.text
    after = export(api)
    assert after[refused]["outcome"] == {"contact": True, "booked": False}
    assert after[rebooked]["outcome"]["booked"] is True and after[rebooked]["outcome"]["booked_at"]
    assert "arrived" not in after[rebooked]["outcome"]  # not known yet
    assert after[arrives]["outcome"]["arrived"] is True and after[arrives]["outcome"]["arrived_at"]
    assert after[missed]["outcome"]["booked"] is True and after[missed]["outcome"]["arrived"] is False

    # the no-show's callback rebooks, and the patient comes: arrived after all
    (cb,) = [t for t in tasks(api, kind="no_show_callback") if t["appointment_id"] == a_missed["id"]]
    _post(api, f"/v1/tasks/{cb['id']}/assign", "sup", {"assignee": "c01"})
    new = call(api, cb, "rebooked", time="2025-03-09T10:00:00+08:00")["appointment"]
    assert (
        export(api)[missed]["outcome"]["arrived"] is False
    )  # the first visit was missed; the new one pending
    set_now(api, NOW + timedelta(days=4))
    _post(api, f"/v1/appointments/{new['id']}/arrived")
    final = export(api)
    assert final[missed]["outcome"]["arrived"] is True

    # labels only: everything else of each record is as it was, and no call note is exported
    for cid in (refused, rebooked, arrives, missed):
        assert {k: v for k, v in final[cid].items() if k != "outcome"} == {
            k: v for k, v in before[cid].items() if k != "outcome"
        }
    assert NOTE[:5] not in orjson.dumps(final).decode()
    # a refusal never overrides a recorded booking
    assert _post(api, f"/v1/conversations/{rebooked}/outcome", "c01", {"booked": True})["booked"] is True

    # yuyue train's reader takes them as the chats' labels
    path = tmp_path / "export.jsonl"
    path.write_bytes(api.get("/v1/export", headers=api.keys["ana"]).content)
    labels = {m.conversation_id: (m.booked, m.arrived) for m in scan(path).metas}
    assert labels[refused] == (False, False)
    assert labels[rebooked] == (True, None)
    assert labels[arrives] == (True, True)
    assert labels[missed] == (True, True)


def test_a_booking_after_a_refusal_wins(desk):
    api = desk
    cid, t = lead(api)
    call(api, t, "refused")
    assert export(api)[cid]["outcome"]["booked"] is False
    appt = book(api, cid, time="2025-03-07T09:30:00+08:00")  # the visitor wrote back and booked after all
    assert appt["status"] == "booked" and export(api)[cid]["outcome"]["booked"] is True
