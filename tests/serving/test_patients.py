# ruff: noqa: F811  (the desk fixture comes from test_appointments)
"""Patients (issue 16) through the API, on SQLite and PostgreSQL: a returning visitor's chats linked by
the same phone (however typed), WeChat id or visitor id, stored only as a keyed hash; two patients
merged when one chat shows they are one person; history with outcomes, appointments, calls and
no-shows; the flag after repeated no-shows (or a complaint), which asks for confirmation before booking
and never refuses it; who reads a patient and what is masked; links that survive an erasure; the sweep
linking chats nobody looked at."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import orjson
import sqlalchemy as sa

from tests.serving.test_api import PHONE, _open
from tests.serving.test_appointments import NOW, book, desk, set_now, tasks  # noqa: F401

OTHER_PHONE = "13998765432"


def say(api, cid, *texts, who="c01", start=3):
    """Visitor messages (and a consultant greeting first) in chat ``cid``."""
    msgs = [("consultant", "您好，请问有什么可以帮您？"), *(("visitor", t) for t in texts)]
    for i, (role, text) in enumerate(msgs):
        r = api.post(
            f"/v1/conversations/{cid}/messages",
            json={"role": role, "text": text, "at": f"2025-03-05T14:{start + i:02d}:00+08:00"},
            headers=api.keys[who],
        )
        assert r.status_code == 200, r.text


def chat(api, *texts, who="c01", visitor_id=None):
    extra = {}
    if visitor_id is not None:
        extra["visit"] = {"engine": "baidu", "keyword": "隆鼻", "device": "mobile", "visitor_id": visitor_id}
    cid = _open(api, who=who, **extra)
    if texts:
        say(api, cid, *texts, who=who)
    return cid


def patient_of(api, cid, who="sup"):
    r = api.get("/v1/patients", params={"conversation_id": cid}, headers=api.keys[who])
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    return items[0] if items else None


def history(api, pid, who="sup"):
    r = api.get(f"/v1/patients/{pid}", headers=api.keys[who])
    assert r.status_code == 200, r.text
    return r.json()


def rows(api, table):
    engine = api.state.service.store.engine
    with engine.connect() as cx:
        return [dict(r) for r in cx.execute(sa.text(f"SELECT * FROM {table}")).mappings()]


def test_linked_by_phone_wechat_and_visitor_id_through_a_keyed_hash(desk):
    api = desk
    a = chat(api, f"我的电话是{PHONE}")
    b = chat(api, f"电话 +86 {PHONE[:3]}-{PHONE[3:7]}-{PHONE[7:]}，微信 yy_Patient01", who="c02")
    c = chat(api, "加我微信：YY_patient01")
    d = chat(api, f"我电话{OTHER_PHONE}")
    e = chat(api, "隆鼻多少钱")  # nothing to link it by
    pa, pb, pc, pd = (patient_of(api, x)["id"] for x in (a, b, c, d))
    assert pa == pb == pc != pd
    assert patient_of(api, e) is None
    assert patient_of(api, c)["chats"] == 3 and patient_of(api, c)["returning"] is True
    assert patient_of(api, d)["returning"] is False
    # visitor ids link chats that left no contact
    v1, v2 = chat(api, "你好", visitor_id="vis-42"), chat(api, "在吗", visitor_id="vis-42")
    assert patient_of(api, v1)["id"] == patient_of(api, v2)["id"]
    # only keyed hashes are stored: no raw number, no WeChat id, anywhere in the patient tables
    stored = orjson.dumps([rows(api, t) for t in ("patients", "patient_keys", "patient_chats")], default=str)
    for raw in (PHONE, OTHER_PHONE, "patient01", "vis-42"):
        assert raw.encode() not in stored.lower()
    key = api.state.desk.patients._key  # the key in var/secrets/patient.key
    assert key and (api.state.settings.var_dir / "secrets" / "patient.key").stat().st_mode & 0o077 == 0
    hashes = {r["key_hash"]: r["kind"] for r in rows(api, "patient_keys")}
    assert hashes[hmac.new(key, f"phone:{PHONE}".encode(), hashlib.sha256).hexdigest()] == "phone"
    assert hashes[hmac.new(key, b"wechat:yy_patient01", hashlib.sha256).hexdigest()] == "wechat"
    assert hashlib.sha256(f"phone:{PHONE}".encode()).hexdigest() not in hashes  # keyed, not a plain hash


def test_one_chat_showing_two_patients_are_one_merges_them(desk):
    api = desk
    by_phone = chat(api, f"电话{PHONE}")
    by_wechat = chat(api, "微信 merge_me_88")
    x, y = patient_of(api, by_phone)["id"], patient_of(api, by_wechat)["id"]
    assert x != y
    both = chat(api, f"电话{PHONE}", "微信 merge_me_88")
    z = patient_of(api, both)["id"]
    assert z in (x, y)
    gone = y if z == x else x
    # the merged patient answers as the one it became, with all three chats
    h = history(api, gone)
    assert h["id"] == z and {ch["conversation_id"] for ch in h["chats"]} == {by_phone, by_wechat, both}
    assert patient_of(api, by_wechat)["id"] == patient_of(api, by_phone)["id"] == z


def test_history_no_shows_and_the_flag_that_asks_for_confirmation(desk):
    api = desk
    sup = api.keys["sup"]
    first = chat(api, f"电话{PHONE}，明天下午3点过来")
    a1 = book(api, first, time="2025-03-06T15:00:00+08:00", doctor="张医生")
    assert api.post(f"/v1/appointments/{a1['id']}/no-show", headers=sup).json()["status"] == "no_show"
    second = chat(api, f"我是之前咨询过的，电话{PHONE}")
    a2 = book(api, second, time="2025-03-07T15:00:00+08:00")
    pid = patient_of(api, second)["id"]
    assert patient_of(api, second)["flagged"] is False  # one no-show: not yet
    assert api.post(f"/v1/appointments/{a2['id']}/no-show", headers=sup).status_code == 200
    summary = patient_of(api, second)
    assert (
        summary["flagged"] is True and summary["no_shows"] == 2 and "2 no-shows" in summary["flag_reasons"][0]
    )
    # the proposal a consultant sees before booking carries the flag
    third = chat(api, f"还是我，电话{PHONE}，下周一上午10点可以吗")
    r = api.get("/v1/appointments/proposal", params={"conversation_id": third}, headers=api.keys["c01"])
    assert r.json()["patient"]["flagged"] is True
    # booking a flagged patient asks for confirmation, and never refuses it
    body = {"conversation_id": third, "time": "2025-03-10T10:00:00+08:00"}
    r = api.post("/v1/appointments", json=body, headers=api.keys["c01"])
    assert (
        r.status_code == 409 and "2 no-shows" in r.json()["detail"] and "confirmed=true" in r.json()["detail"]
    )
    assert api.get("/v1/appointments", params={"conversation_id": third}, headers=sup).json()["total"] == 0
    a3 = api.post("/v1/appointments", json={**body, "confirmed": True}, headers=api.keys["c01"]).json()
    assert a3["status"] == "booked" and "2 no-shows" in a3["flag_ack"]
    # a call's rebooking of a flagged patient too: nothing is recorded without the confirmation
    (callback,) = [t for t in tasks(api, kind="no_show_callback") if t["appointment_id"] == a2["id"]]
    api.post(f"/v1/tasks/{callback['id']}/assign", json={"assignee": "c01"}, headers=sup)
    rebook = {"result": "rebooked", "time": "2025-03-12T10:00:00+08:00"}
    r = api.post(f"/v1/tasks/{callback['id']}/attempts", json=rebook, headers=api.keys["c01"])
    assert r.status_code == 409 and "flagged" in r.json()["detail"]
    assert api.get(f"/v1/tasks/{callback['id']}", headers=sup).json()["attempts"] == 0
    r = api.post(
        f"/v1/tasks/{callback['id']}/attempts", json={**rebook, "confirmed": True}, headers=api.keys["c01"]
    )
    assert r.status_code == 200 and r.json()["appointment"]["flag_ack"]
    # the history shows it all
    h = history(api, pid)
    assert {ch["conversation_id"] for ch in h["chats"]} == {first, second, third}  # all opened at T0
    assert h["counts"]["no_shows"] == 2 and h["counts"]["appointments"] == 4 and h["counts"]["calls"] == 1
    assert h["flag"]["flagged"] and h["flag"]["reasons"][0]["kind"] == "no_show"
    assert [c["result"] for t in h["tasks"] for c in t["calls"]] == ["rebooked"]
    assert all(ch["booked"] for ch in h["chats"])
    # a supervisor clears the flag (with the reason); the counts start again from then
    assert api.post(f"/v1/patients/{pid}/clear-flag", json={"note": ""}, headers=sup).status_code == 422
    assert (
        api.post(f"/v1/patients/{pid}/clear-flag", json={"note": "x"}, headers=api.keys["c01"]).status_code
        == 403
    )
    r = api.post(f"/v1/patients/{pid}/clear-flag", json={"note": "患者解释了原因"}, headers=sup)
    assert r.status_code == 200 and r.json()["flagged"] is False and r.json()["no_shows"] == 2
    assert api.post(f"/v1/patients/{pid}/clear-flag", json={"note": "again"}, headers=sup).status_code == 409
    assert history(api, pid)["flag"]["cleared_note"] == "患者解释了原因"
    # a complaint flags at once (patient_flag_after: complaint 1)
    set_now(api, NOW + timedelta(minutes=5))
    r = api.post(
        f"/v1/patients/{pid}/incidents",
        json={"kind": "complaint", "note": "投诉服务态度", "conversation_id": first},
        headers=sup,
    )
    assert r.status_code == 201 and r.json()["flagged"] is True
    assert "complaints" in r.json()["flag_reasons"][0]
    r = api.post(
        f"/v1/patients/{pid}/incidents", json={"kind": "unpaid", "conversation_id": "t-nope"}, headers=sup
    )
    assert r.status_code == 422 and "conversation_id" in r.json()["detail"]
    r = api.post(f"/v1/patients/{pid}/incidents", json={"kind": "rude"}, headers=sup)
    assert r.status_code == 422 and "kind" in r.text
    # the flagged list
    r = api.get("/v1/patients", params={"flagged": "true"}, headers=sup)
    assert [p["id"] for p in r.json()["items"]] == [pid]
    assert api.get("/v1/patients", params={"flagged": "true"}, headers=api.keys["c01"]).status_code == 403


def test_who_reads_a_patient_and_what_is_masked(desk):
    api = desk
    mine = chat(api, f"电话{PHONE}，我姓王", who="c01")
    theirs = chat(api, f"微信 wang_88 电话{PHONE}", who="c02")
    pid = patient_of(api, mine)["id"]
    assert patient_of(api, theirs)["id"] == pid  # linked when looked up (or by the sweep)
    # the consultant of a chat sees its own chat's contacts raw (audited), the other chat's masked
    h = history(api, pid, "c01")
    raw = {(c["conversation_id"], c["type"]): c["value"] for c in h["contacts"]}
    assert raw[(mine, "phone")] == PHONE
    assert raw[(theirs, "phone")] == "138****5678" and raw[(theirs, "wechat")] == "wa****"
    assert h["masked"] is True
    audit = api.get("/v1/audit", params={"action": "read_raw"}, headers=api.keys["adm"]).json()["items"]
    assert [(x["actor"], x["conversation_id"]) for x in audit] == [("wang", mine)]
    assert orjson.loads(audit[0]["detail"]) == {"via": "patient", "patient_id": pid}
    # supervisors see everything masked (nothing audited)
    h = history(api, pid, "sup")
    assert PHONE not in orjson.dumps(h).decode() and h["masked"] is True
    assert (
        len(api.get("/v1/audit", params={"action": "read_raw"}, headers=api.keys["adm"]).json()["items"]) == 1
    )
    # a consultant with no chat and no task of the patient reads nothing of it
    alone = chat(api, f"电话{OTHER_PHONE}", who="c02")
    other = patient_of(api, alone)["id"]
    r = api.get(f"/v1/patients/{other}", headers=api.keys["c01"])
    assert r.status_code == 403 and "serves none of its chats" in r.json()["detail"]
    assert (
        api.get("/v1/patients", params={"conversation_id": alone}, headers=api.keys["c01"]).status_code == 403
    )
    # analysts read aggregates, not patients
    assert api.get(f"/v1/patients/{pid}", headers=api.keys["ana"]).status_code == 403
    assert api.get(f"/v1/patients/{pid}").status_code == 401
    # bad input is named
    r = api.get("/v1/patients", headers=api.keys["sup"])
    assert r.status_code == 422 and "conversation_id" in r.json()["detail"]
    r = api.get("/v1/patients", params={"conversation_id": mine, "flagged": "true"}, headers=api.keys["sup"])
    assert r.status_code == 422 and "not both" in r.json()["detail"]
    assert api.get("/v1/patients/XYZ", headers=api.keys["sup"]).status_code == 422
    assert api.get("/v1/patients/abc123", headers=api.keys["sup"]).status_code == 404
    assert (
        api.get("/v1/patients", params={"conversation_id": "t-none"}, headers=api.keys["sup"]).status_code
        == 404
    )


def test_links_survive_the_erasure_of_a_chat(desk):
    api = desk
    first = chat(api, f"电话{PHONE}")
    pid = patient_of(api, first)["id"]
    r = api.delete(f"/v1/conversations/{first}/personal-data", headers=api.keys["sup"])
    assert r.status_code == 200, r.text
    later = chat(api, f"我又来了，电话{PHONE}")
    assert patient_of(api, later)["id"] == pid
    h = history(api, pid)
    assert {ch["conversation_id"] for ch in h["chats"]} == {first, later}
    assert {c["conversation_id"] for c in h["contacts"]} == {later}  # the erased chat holds no contact now


def test_the_sweep_links_chats_and_relinks_those_that_grew(desk):
    api = desk
    sup = api.keys["sup"]
    cid = chat(api, f"电话{PHONE}")
    assert [r for r in rows(api, "patient_chats") if r["conversation_id"] == cid] == []
    r = api.post("/v1/tasks/sweep", headers=sup)
    assert r.status_code == 200 and r.json()["linked"] >= 1
    (link,) = [r for r in rows(api, "patient_chats") if r["conversation_id"] == cid]
    assert link["patient_id"] and link["kinds"] == "phone"
    assert api.post("/v1/tasks/sweep", headers=sup).json()["linked"] == 0  # nothing new
    say(api, cid, "我的微信是 sweep_wx_1", start=20)
    assert api.post("/v1/tasks/sweep", headers=sup).json()["linked"] == 1  # it grew: read again
    (link,) = [r for r in rows(api, "patient_chats") if r["conversation_id"] == cid]
    assert link["kinds"] == "phone,wechat"
