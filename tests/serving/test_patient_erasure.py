# ruff: noqa: F811  (the desk fixture comes from test_appointments)
"""Erasure and retention link a chat to its patient before masking it (issue 16), on SQLite and
PostgreSQL: an erased chat nobody had linked yet, and a booked chat whose phone came after the
booking and then did not arrive, still count in the patient's history and no-show count once the
visitor comes back; the raw number is gone from every table all the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from tests.serving.test_api import PHONE
from tests.serving.test_appointments import book, desk  # noqa: F401
from tests.serving.test_patients import chat, history, patient_of, rows, say
from tests.serving.test_privacy_rights import _open as open_at
from yuyue.serving.privacy import purge


def _linked(api, cid):
    return {r["conversation_id"]: r["patient_id"] for r in rows(api, "patient_chats")}.get(cid)


def _no_raw_phone(api, cid):
    events = [r for r in rows(api, "events") if r["conversation_id"] == cid]
    assert events and not any(PHONE in (r["payload"] or "") for r in events)


def test_an_erased_chat_still_counts_in_its_patients_history(desk):
    api = desk
    sup = api.keys["sup"]
    # a chat that left a phone, which nobody looked up (no sweep ran): unlinked until erased
    first = chat(api, f"我电话{PHONE}")
    assert _linked(api, first) is None
    r = api.delete(f"/v1/conversations/{first}/personal-data", headers=sup)
    assert r.status_code == 200, r.text
    assert _linked(api, first) is not None  # linked from the raw text, before it was masked
    _no_raw_phone(api, first)
    # a booked chat: the phone came after the booking, then the visitor did not arrive; erased
    booked = chat(api, "隆鼻多少钱", "明天下午3点过来")
    appt = book(api, booked, time="2025-03-06T15:00:00+08:00")
    assert _linked(api, booked) is None  # nothing to link it by when it was booked
    say(api, booked, f"留个电话{PHONE}", start=20)
    assert api.post(f"/v1/appointments/{appt['id']}/no-show", headers=sup).status_code == 200
    assert api.delete(f"/v1/conversations/{booked}/personal-data", headers=sup).status_code == 200
    _no_raw_phone(api, booked)
    # the visitor comes back with the same phone: both erased chats are theirs, with the no-show
    later = chat(api, f"我是老客户了，电话{PHONE}")
    summary = patient_of(api, later)
    assert summary["chats"] == 3 and summary["returning"] is True and summary["no_shows"] == 1
    h = history(api, summary["id"])
    assert {c["conversation_id"] for c in h["chats"]} == {first, booked, later}
    assert h["counts"]["no_shows"] == 1 and h["counts"]["appointments"] == 1
    assert {c["conversation_id"] for c in h["contacts"]} == {later}  # the erased chats hold no contact now
    assert PHONE not in orjson.dumps(h).decode()


def test_messages_after_an_erasure_link_the_chat_too(desk):
    api = desk
    cid = chat(api, "你好")
    assert api.delete(f"/v1/conversations/{cid}/personal-data", headers=api.keys["sup"]).status_code == 200
    say(api, cid, f"电话{PHONE}", start=30)  # the chat stays usable; this message is raw until masked again
    other = chat(api, f"电话{PHONE}")
    assert patient_of(api, cid)["id"] == patient_of(api, other)["id"]


def test_retention_links_each_chat_before_masking_it(desk):
    api = desk
    now = datetime.now(UTC).replace(microsecond=0)
    old = open_at(api, now - timedelta(days=40))
    r = api.post(
        f"/v1/conversations/{old}/messages",
        headers=api.keys["c01"],
        json={
            "role": "visitor",
            "text": f"电话{PHONE}",
            "at": (now - timedelta(days=40, minutes=-1)).isoformat(),
        },
    )
    assert r.status_code == 200, r.text
    assert _linked(api, old) is None
    out = purge(api.state.service.store, 30, actor="cli:test", role="cli", settings=api.state.settings)
    assert out["conversations"] == 1
    _no_raw_phone(api, old)
    later = chat(api, f"我又来了，电话{PHONE}")
    assert patient_of(api, later)["id"] == _linked(api, old)
    assert patient_of(api, later)["chats"] == 2
