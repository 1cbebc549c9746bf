"""A consultant's open chats (issue 16, 接一待二招呼三), on SQLite and PostgreSQL: ``GET
/v1/conversations`` lists the chats not closed with the visitor messages not answered yet and since when
the visitor waits, waiting longest first; no message text; consultants list their own only."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from tests.serving.test_api import PHONE, _open


def say(api, cid, role, text, at, who="c01"):
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": role, "text": text, "at": at},
        headers=api.keys[who],
    )
    assert r.status_code == 200, r.text


def listing(api, who="c01", **params):
    r = api.get("/v1/conversations", params=params, headers=api.keys[who])
    assert r.status_code == 200, r.text
    return r.json()


def test_open_chats_with_unanswered_messages_and_waiting_time(api):
    answered, waits_long, waits_short, fresh = (_open(api) for _ in range(4))
    theirs = _open(api, who="c02")
    say(api, answered, "visitor", "隆鼻多少钱", "2025-03-05T14:03:00+08:00")
    say(api, answered, "consultant", "您好，您之前了解过吗？", "2025-03-05T14:04:00+08:00")
    say(api, waits_long, "consultant", "您好，请问有什么可以帮您？", "2025-03-05T14:04:30+08:00")
    say(api, waits_long, "visitor", "你好", "2025-03-05T14:05:00+08:00")
    say(api, waits_long, "visitor", f"我电话{PHONE}", "2025-03-05T14:06:00+08:00")
    say(api, waits_long, "visitor", "在吗？", "2025-03-05T14:07:00+08:00")
    say(api, waits_short, "visitor", "疼不疼", "2025-03-05T14:09:00+08:00")
    say(api, theirs, "visitor", "你好", "2025-03-05T14:03:00+08:00", who="c02")
    closed = _open(api)
    say(api, closed, "visitor", "好的谢谢", "2025-03-05T14:03:00+08:00")
    r = api.post(f"/v1/conversations/{closed}/outcome", json={"close": True}, headers=api.keys["c01"])
    assert r.status_code == 200, r.text

    page = listing(api)
    ids = [x["conversation_id"] for x in page["items"]]
    assert page["total"] == 4 and set(ids) == {answered, waits_long, waits_short, fresh}
    assert ids[:2] == [waits_long, waits_short]  # waiting longest first
    item = {x["conversation_id"]: x for x in page["items"]}
    assert item[waits_long]["unanswered"] == 3 and item[waits_short]["unanswered"] == 1
    assert datetime.fromisoformat(item[waits_long]["waiting_since"]) == datetime(2025, 3, 5, 6, 5, tzinfo=UTC)
    assert datetime.fromisoformat(item[waits_long]["last_visitor_at"]) == datetime(
        2025, 3, 5, 6, 7, tzinfo=UTC
    )
    waited = (datetime.now(UTC) - datetime(2025, 3, 5, 6, 5, tzinfo=UTC)).total_seconds()
    assert abs(item[waits_long]["waiting_s"] - waited) < 60
    assert item[answered]["unanswered"] == 0 and item[answered]["waiting_s"] is None
    assert item[fresh]["n_messages"] == 0 and item[fresh]["unanswered"] == 0
    assert item[waits_long]["p_booked"] is not None and item[waits_long]["band"] in ("A", "B", "C")
    assert PHONE not in orjson.dumps(page).decode() and "在吗" not in orjson.dumps(page).decode()
    # a reply answers them all
    say(api, waits_long, "consultant", "在的，稍后给您回电", "2025-03-05T14:10:00+08:00")
    item = {x["conversation_id"]: x for x in listing(api)["items"]}
    assert item[waits_long]["unanswered"] == 0 and item[waits_long]["waiting_since"] is None
    assert listing(api)["items"][0]["conversation_id"] == waits_short
    # limit: the most recently active
    assert [x["conversation_id"] for x in listing(api, limit=1)["items"]] == [waits_long]
    # the other consultant's, the supervisor's view, and who may not
    assert [x["conversation_id"] for x in listing(api, "c02")["items"]] == [theirs]
    assert listing(api, "sup")["total"] == 5
    assert [x["conversation_id"] for x in listing(api, "sup", consultant="c02")["items"]] == [theirs]
    r = api.get("/v1/conversations", params={"consultant": "c02"}, headers=api.keys["c01"])
    assert r.status_code == 403 and "its own chats" in r.json()["detail"]
    assert api.get("/v1/conversations", headers=api.keys["ana"]).status_code == 403
    assert api.get("/v1/conversations").status_code == 401
    r = api.get("/v1/conversations", params={"state": "closed"}, headers=api.keys["c01"])
    assert r.status_code == 422 and "state" in r.text
    assert api.get("/v1/conversations", params={"limit": 0}, headers=api.keys["c01"]).status_code == 422


def test_a_quoted_role_in_a_message_text_is_not_a_reply(api):
    cid = _open(api)
    say(api, cid, "visitor", '我复制了一段：{"role":"consultant"}', "2025-03-05T14:03:00+08:00")
    (item,) = listing(api)["items"]
    assert item["unanswered"] == 1
