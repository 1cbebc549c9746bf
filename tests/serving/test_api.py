"""The HTTP API against real stores: SQLite with the in-process cache, PostgreSQL with Redis.

A chat goes through the per-message endpoint; outcomes feed the follow-up queue and
the funnel; the export is masked contract JSONL; bad input gets a 4xx naming the
problem and changes nothing; a second worker (fresh cache) continues a chat with the
same numbers.
"""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient

from yuyue.data.contract import Conversation
from yuyue.serving.app import create_app

PHONE = "13812345678"
T0 = "2025-03-05T14:02:11+08:00"


def _at(minute: int) -> str:
    return f"2025-03-05T14:{minute:02d}:00+08:00"


CHAT = [
    ("visitor", "你好，隆鼻大概多少钱？疼不疼"),
    ("consultant", "您好，请问怎么称呼您？"),
    ("visitor", f"我姓王，电话{PHONE[:3]} {PHONE[3:7]} {PHONE[7:]}"),
    ("consultant", "王女士您好，费用要看方案，医生面诊后会给您详细说明。"),
    ("visitor", "地址在哪里，周六可以去吗"),
]


def _open(api, cid=None, who="c01", **extra):
    body = {
        "conversation_id": cid or "t-" + uuid.uuid4().hex[:10],
        "started_at": T0,
        "department": "整形美容",
        "project": "隆鼻",
        "visit": {
            "engine": "baidu",
            "keyword": "杭州隆鼻多少钱",
            "region": "浙江省杭州市",
            "device": "mobile",
        },
        **extra,
    }
    r = api.post("/v1/conversations", json=body, headers=api.keys[who])
    assert r.status_code == 201, r.text
    return r.json()["conversation_id"]


def _chat(api, cid, messages=CHAT, start=3, who="c01"):
    out = []
    for i, (role, text) in enumerate(messages):
        r = api.post(
            f"/v1/conversations/{cid}/messages",
            json={"role": role, "text": text, "at": _at(start + i)},
            headers=api.keys[who],
        )
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def test_a_chat_message_by_message(api):
    cid = _open(api)
    replies = _chat(api, cid)
    assert [r["seq"] for r in replies] == list(range(len(CHAT)))
    for r in replies:
        for target in ("booked", "arrived"):
            s = r["scores"][target]
            assert 0 < s["probability"] < 1 and target in r["changes"]
            assert all(reason["text"] for reason in s["reasons"])
        assert r["band"] in ("A", "B", "C")
    # consultant messages get a stage, visitor messages suggestions with ids
    assert replies[1]["stage"] and replies[3]["stage"]
    assert replies[0]["suggestions"] and all(len(s["id"]) == 32 for s in replies[0]["suggestions"])
    assert replies[1]["suggestions"] == []
    # the chat's own consultant sees what the visitor revealed, raw
    ents = replies[2]["entities"]
    assert ents["surname"] == "王" and {"type": "phone", "value": PHONE, "message": 2} in ents["contacts"]
    assert "price" in ents["concerns"] and replies[2]["masked"] is False
    # leaving a phone number raises the booking score
    assert replies[2]["changes"]["booked"] > 0


def test_a_form_of_address_with_an_older_surname_is_masked_too(api):
    """叫我小曹 then 我姓王: the stored form (小曹) holds a surname that is no longer the chat's surname."""
    cid = _open(api)
    _chat(api, cid, messages=[("visitor", "叫我小曹就行"), ("visitor", "我姓王")])

    def visitor_says(text, who, minute):
        r = api.post(
            f"/v1/conversations/{cid}/messages",
            json={"role": "visitor", "text": text, "at": _at(minute)},
            headers=api.keys[who],
        )
        assert r.status_code == 200, r.text
        return r.json()

    own = visitor_says("你好", "c01", 20)  # the consultant's own live view: raw
    assert (own["entities"]["surname"], own["entities"]["address_form"]) == ("王", "小曹")
    assert any("小曹" in s["text"] for s in own["suggestions"]), own["suggestions"]  # a reply greets 小曹
    seen = visitor_says("你好", "sup", 21)  # anyone else: masked, in the replies too
    assert (seen["entities"]["surname"], seen["entities"]["address_form"]) == ("*", "小*")
    assert any("小*" in s["text"] for s in seen["suggestions"]), seen["suggestions"]
    assert "曹" not in json.dumps(seen, ensure_ascii=False)


def test_stored_messages_are_masked_with_todays_detector_too():
    """A message stored when only its phone number was detected: the greeting by surname is masked now."""
    from yuyue.serving.service import masked_text

    old = {"text": "顾姐您好，电话13812345678", "pii": [["phone", 7, 18]]}
    assert masked_text(old) == "*姐您好，电话138****5678"
    # a span only the chat's context could find (a bare surname answering 怎么称呼) is kept
    assert masked_text({"text": "邓", "pii": [["surname", 0, 1]]}) == "*"
    assert masked_text({"text": "没有个人信息", "pii": []}) == "没有个人信息"


def test_personal_data_is_masked_for_everyone_but_the_chats_consultant(api):
    cid = _open(api)
    _chat(api, cid)
    own = api.get(f"/v1/conversations/{cid}", headers=api.keys["c01"]).json()
    assert PHONE[7:] in own["messages"][2]["text"] and own["masked"] is False
    sup = api.get(f"/v1/conversations/{cid}", headers=api.keys["sup"]).json()
    assert sup["masked"] is True
    text = json.dumps(sup, ensure_ascii=False)
    assert PHONE not in text.replace(" ", "") and "王女士" not in text
    other = api.get(f"/v1/conversations/{cid}", headers=api.keys["c02"])
    assert other.status_code == 403 and "another consultant" in other.json()["detail"]


def test_outcomes_feed_the_followup_queue_and_the_funnel(api):
    lead, booking, cold = _open(api), _open(api), _open(api)
    _chat(api, lead)
    _chat(api, booking)
    _chat(api, cold, messages=[("visitor", "随便看看"), ("consultant", "好的，有需要随时问我")])
    assert (
        api.post(
            f"/v1/conversations/{booking}/outcome",
            json={"booked": True, "close": True},
            headers=api.keys["c01"],
        ).status_code
        == 200
    )
    q = api.get("/v1/followups", headers=api.keys["sup"]).json()
    kinds = {item["conversation_id"]: item["kind"] for item in q["items"]}
    assert kinds == {lead: "lead_not_booked", booking: "booking_at_risk"}
    assert [i["priority"] for i in q["items"]] == sorted((i["priority"] for i in q["items"]), reverse=True)
    assert all(i["reasons"] and i["summary"] for i in q["items"])
    page = api.get("/v1/followups?limit=1&offset=1", headers=api.keys["sup"]).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0] == q["items"][1]
    assert api.get("/v1/followups?department=男科", headers=api.keys["sup"]).json()["total"] == 0
    funnel = api.get("/v1/stats/funnel", headers=api.keys["sup"]).json()["groups"]
    assert [(g["visits"], g["chats"], g["contact"], g["booked"], g["arrived"]) for g in funnel] == [
        (3, 3, 2, 1, 0)
    ]
    by_engine = api.get("/v1/stats/funnel?group_by=engine", headers=api.keys["sup"]).json()["groups"]
    assert by_engine[0]["group"] == "baidu"
    bad = api.get("/v1/stats/funnel?group_by=weather", headers=api.keys["sup"])
    assert bad.status_code == 422 and "group_by" in bad.json()["detail"]


def test_suggestion_feedback_is_stored_and_reported(api):
    cid = _open(api)
    first = _chat(api, cid, messages=CHAT[:1])[0]
    ids = [s["id"] for s in first["suggestions"]]
    assert len(ids) >= 2
    h = api.keys["c01"]
    assert (
        api.post(f"/v1/suggestions/{ids[0]}/feedback", json={"action": "used"}, headers=h).status_code == 200
    )
    r = api.post(f"/v1/suggestions/{ids[1]}/feedback", json={"action": "edited"}, headers=h)
    assert r.status_code == 422 and "final_text" in r.json()["detail"]
    assert (
        api.post(
            f"/v1/suggestions/{ids[1]}/feedback", json={"action": "edited", "final_text": "您好"}, headers=h
        ).status_code
        == 200
    )
    assert api.post("/v1/suggestions/nope/feedback", json={"action": "used"}, headers=h).status_code == 404
    acc = api.get("/v1/stats/funnel", headers=api.keys["sup"]).json()["suggestions"]
    assert acc["used"] == 1 and acc["edited"] == 1 and acc["acceptance_rate"] == 1.0
    assert 'yuyue_suggestion_feedback_total{action="used"} 1.0' in api.get("/metrics").text


def test_export_is_masked_contract_jsonl(api):
    cid = _open(api)
    _chat(api, cid)
    api.post(f"/v1/conversations/{cid}/outcome", json={"booked": True}, headers=api.keys["c01"])
    assert api.get("/v1/export", headers=api.keys["sup"]).status_code == 403
    r = api.get("/v1/export", headers=api.keys["ana"])
    assert r.status_code == 200
    records = [json.loads(line) for line in r.text.splitlines()]
    assert [rec["conversation_id"] for rec in records] == [cid]
    conv = Conversation.model_validate(records[0])
    assert len(conv.messages) == len(CHAT) and conv.outcome.booked is True and conv.outcome.contact is True
    assert PHONE not in r.text.replace(" ", "") and "王" not in r.text


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"role": "visitor", "text": "x" * 10_001}, 422, "text: String should have at most 10000 characters"),
        ({"role": "visitor", "text": 5}, 422, "text: Input should be a valid string"),
        ({"role": "bot", "text": "hi"}, 422, "role: Input should be 'visitor', 'consultant' or 'system'"),
        ({"role": "visitor", "text": "   "}, 422, "text is empty"),
        (
            {"role": "visitor", "text": "早", "at": "2025-03-05T14:00:00+08:00"},
            422,
            "before the chat's last message",
        ),
        (
            {"role": "visitor", "text": "早", "at": "2025-03-05T15:00:00"},
            422,
            "at: Input should have timezone info",
        ),
        ({"role": "visitor", "text": "hi", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_messages_get_a_4xx_and_change_nothing(api, body, status, words):
    cid = _open(api)
    _chat(api, cid, messages=CHAT[:2])
    before = api.get(f"/v1/conversations/{cid}", headers=api.keys["c01"]).json()
    r = api.post(f"/v1/conversations/{cid}/messages", json=body, headers=api.keys["c01"])
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert api.get(f"/v1/conversations/{cid}", headers=api.keys["c01"]).json() == before
    # and the chat goes on where it was
    assert _chat(api, cid, messages=CHAT[2:3], start=20)[0]["seq"] == 2


def test_other_bad_requests_name_the_problem(api):
    h = api.keys["c01"]
    cid = _open(api)
    cases = [
        (
            api.post("/v1/conversations/nope/messages", json={"role": "visitor", "text": "hi"}, headers=h),
            404,
            "no conversation 'nope'",
        ),
        (
            api.post("/v1/conversations", json={"conversation_id": cid, "started_at": T0}, headers=h),
            409,
            "already exists",
        ),
        (api.post("/v1/conversations", json={"visit": {"engine": "yahoo"}}, headers=h), 422, "visit.engine"),
        (
            api.post("/v1/conversations", json={"consultant_id": "c02"}, headers=h),
            403,
            "cannot open a chat for 'c02'",
        ),
        (
            api.post(f"/v1/conversations/{cid}/messages", json={"role": "visitor", "text": "hi"}),
            401,
            "missing API key",
        ),
        (
            api.post(
                f"/v1/conversations/{cid}/messages",
                json={"role": "visitor", "text": "hi"},
                headers={"X-API-Key": "yy_bad_key"},
            ),
            401,
            "invalid or revoked",
        ),
        (
            api.post(
                f"/v1/conversations/{cid}/messages",
                json={"role": "visitor", "text": "hi"},
                headers=api.keys["c02"],
            ),
            403,
            "may not write",
        ),
        (api.post(f"/v1/conversations/{cid}/outcome", json={}, headers=h), 422, "nothing to record"),
        (
            api.post(f"/v1/conversations/{cid}/outcome", json={"booked": "yes"}, headers=h),
            422,
            "booked: Input should be a valid boolean",
        ),
        (
            api.get("/v1/followups?since=2025-03-01T00:00:00", headers=api.keys["sup"]),
            422,
            "since must carry a timezone",
        ),
        (api.post("/v1/admin/reload", headers=h), 403, "role 'consultant' cannot do this"),
    ]
    for r, status, words in cases:
        assert r.status_code == status and words in r.json()["detail"], (status, words, r.status_code, r.text)
    assert api.post(f"/v1/conversations/{cid}/outcome", json={"close": True}, headers=h).status_code == 200
    r = api.post(f"/v1/conversations/{cid}/messages", json={"role": "visitor", "text": "还在吗"}, headers=h)
    assert r.status_code == 409 and "is closed" in r.json()["detail"]


def test_a_second_worker_continues_a_chat_from_the_event_store(api, backend, model):
    """A fresh app (another worker or a restart: empty in-process cache) gets the same numbers."""
    cid = _open(api)
    _chat(api, cid, messages=CHAT[:3])
    nxt = {"role": "consultant", "text": CHAT[3][1], "at": _at(30)}
    other = create_app(backend, model, "t1")
    with TestClient(other) as client:
        r2 = client.post(f"/v1/conversations/{cid}/messages", json=nxt, headers=api.keys["c01"])
    assert r2.status_code == 200, r2.text
    service = other.state.yuyue.service
    if backend.redis_url:  # the session came from Redis, not from a replay
        assert service.cache_misses == 0
    else:
        assert service.cache_misses == 1
    # the same message through the first worker (its cached session is now stale: it must notice)
    r3 = api.post(f"/v1/conversations/{cid}/messages", json={**nxt, "at": _at(31)}, headers=api.keys["c01"])
    assert r2.json()["seq"] == 3 and r3.json()["seq"] == 4
    # replaying the stored chat gives the same probabilities the live session gave
    chat = service.store.conversation(cid)
    rebuilt = service.rebuild(chat, model)
    assert rebuilt.n_messages == 5
    live_p = r3.json()["scores"]["booked"]["probability"]
    assert model.score(rebuilt.session.state)["booked"].probability == pytest.approx(live_p, abs=1e-4)


def test_two_workers_taking_turns_on_one_chat_stay_consistent(api, backend, model):
    """Every message goes to the other worker: each must notice its own copy is behind and catch up."""
    if not backend.redis_url:
        pytest.skip("workers share sessions through Redis")
    cid = _open(api)
    other = create_app(backend, model, "t1")
    with TestClient(other) as second:
        workers = [api, second]
        for i, (role, text) in enumerate(CHAT * 2):
            r = workers[i % 2].post(
                f"/v1/conversations/{cid}/messages",
                json={"role": role, "text": text, "at": _at(3 + i)},
                headers=api.keys["c01"],
            )
            assert r.status_code == 200 and r.json()["seq"] == i, r.text
    # each picked the newer session up from Redis: nothing was replayed from the store
    assert api.app.state.yuyue.service.cache_misses == 0
    assert other.state.yuyue.service.cache_misses == 0
    rebuilt = api.app.state.yuyue.service.rebuild(api.app.state.yuyue.service.store.conversation(cid), model)
    assert rebuilt.n_messages == 2 * len(CHAT)
    assert model.score(rebuilt.session.state)["booked"].probability == pytest.approx(
        r.json()["scores"]["booked"]["probability"], abs=1e-4
    )


def test_the_same_instants_in_another_offset_give_the_same_scores(api):
    """Times reach the model in the desk's zone: a client sending UTC gets what one sending +08:00 gets."""
    local, utc = _open(api), _open(api, started_at="2025-03-05T06:02:11Z")
    a = _chat(api, local, messages=CHAT[:3])
    b = []
    for i, (role, text) in enumerate(CHAT[:3]):
        r = api.post(
            f"/v1/conversations/{utc}/messages",
            json={"role": role, "text": text, "at": f"2025-03-05T06:{3 + i:02d}:00Z"},
            headers=api.keys["c01"],
        )
        assert r.status_code == 200, r.text
        b.append(r.json())
    for x, y in zip(a, b, strict=True):
        assert x["scores"]["booked"]["probability"] == y["scores"]["booked"]["probability"]
        assert x["scores"]["booked"]["reasons"] == y["scores"]["booked"]["reasons"]


def test_a_chat_closed_by_another_worker_takes_no_more_messages(api, backend, model):
    """The first worker still holds the session in its cache; the store's conditional write refuses."""
    h = api.keys["c01"]
    cid = _open(api)
    _chat(api, cid, messages=CHAT[:2])
    with TestClient(create_app(backend, model, "t1")) as other:
        assert (
            other.post(f"/v1/conversations/{cid}/outcome", json={"close": True}, headers=h).status_code == 200
        )
    before = api.get(f"/v1/conversations/{cid}", headers=h).json()
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": "visitor", "text": "还在吗", "at": _at(40)},
        headers=h,
    )
    assert r.status_code == 409 and "is closed" in r.json()["detail"], r.text
    assert api.get(f"/v1/conversations/{cid}", headers=h).json() == before


def test_a_dropped_database_connection_is_a_503_and_stores_nothing(api, backend):
    """PostgreSQL ends the worker's pooled connections (a restart, a failover): 503 naming it, then a retry works."""
    if not backend.database_url:
        pytest.skip("needs PostgreSQL")
    import sqlalchemy as sa

    h = api.keys["c01"]
    cid = _open(api)
    _chat(api, cid, messages=CHAT[:2])
    killer = sa.create_engine(backend.database_url, poolclass=sa.pool.NullPool)
    try:  # end every other backend on this database: all of the worker's pooled connections
        with killer.connect() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
    finally:
        killer.dispose()
    assert killed >= 1
    nxt = {"role": CHAT[2][0], "text": CHAT[2][1], "at": _at(10)}
    r = api.post(f"/v1/conversations/{cid}/messages", json=nxt, headers=h)
    assert r.status_code == 503, r.text
    assert "database" in r.json()["detail"] and r.headers["Retry-After"] == "1"
    assert len(api.get(f"/v1/conversations/{cid}", headers=h).json()["messages"]) == 2  # nothing half-written
    r = api.post(f"/v1/conversations/{cid}/messages", json=nxt, headers=h)
    assert r.status_code == 200 and r.json()["seq"] == 2, r.text


def test_a_resent_message_with_its_seq_is_not_stored_twice(api, backend, model):
    """The answer to message 2 was lost; the console resends it with seq 2: 409, still 3 messages."""
    h = api.keys["c01"]
    cid = _open(api)
    _chat(api, cid, messages=CHAT[:2])
    url = f"/v1/conversations/{cid}/messages"
    body = {"role": CHAT[2][0], "text": CHAT[2][1], "at": _at(10), "seq": 2}
    assert api.post(url, json=body, headers=h).json()["seq"] == 2
    again = api.post(url, json=body, headers=h)
    assert again.status_code == 409 and "already holds message 2" in again.json()["detail"], again.text
    gap = api.post(url, json={**body, "seq": 5}, headers=h)
    assert gap.status_code == 409 and "would leave a gap" in gap.json()["detail"], gap.text
    # another worker (its own cache) took message 3: this worker's copy is behind, and seq 4 is still right
    with TestClient(create_app(backend, model, "t1")) as other:
        r = other.post(url, json={**body, "text": "好的", "at": _at(11), "seq": 3}, headers=h)
        assert r.status_code == 200 and r.json()["seq"] == 3, r.text
    r = api.post(url, json={**body, "text": "周六可以吗", "at": _at(12), "seq": 4}, headers=h)
    assert r.status_code == 200 and r.json()["seq"] == 4, r.text
    assert len(api.get(f"/v1/conversations/{cid}", headers=h).json()["messages"]) == 5


def test_rate_limit_answers_429_with_retry_after(api):
    key = api.app.state.yuyue.keys.create("slow", "supervisor", rate_per_minute=3)[1]
    codes = [api.get("/v1/model", headers={"X-API-Key": key}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = api.get("/v1/model", headers={"X-API-Key": key})
    assert int(r.headers["Retry-After"]) >= 1 and "rate limit of 3/min" in r.json()["detail"]


def test_health_readiness_metrics_and_openapi(api):
    health = api.get("/healthz")
    assert health.json() == {"status": "ok"}
    assert float(health.headers["server-timing"].split("dur=")[1]) >= 0
    ready = api.get("/readyz").json()
    assert ready["ready"] is True and ready["model_version"] == "t1"
    cid = _open(api)
    _chat(api, cid, messages=CHAT[:1])
    metrics = api.get("/metrics").text
    assert 'yuyue_request_seconds_bucket{endpoint="/v1/conversations/{conversation_id}/messages"' in metrics
    assert 'yuyue_model_info{version="t1"} 1.0' in metrics
    spec = api.get("/openapi.json").json()
    for path in (
        "/v1/conversations",
        "/v1/conversations/{conversation_id}/messages",
        "/v1/followups",
        "/v1/stats/funnel",
    ):
        assert path in spec["paths"]
    assert spec["components"]["schemas"]["NewMessage"]["examples"]


def test_concurrent_messages_are_all_stored_once_in_order(api):
    # requests for several chats in flight at once; two racing messages of one chat both land,
    # one after the other
    from concurrent.futures import ThreadPoolExecutor

    cids = [_open(api) for _ in range(4)]

    def one_chat(cid):
        return [r["seq"] for r in _chat(api, cid)]

    def post(cid, text):
        r = api.post(
            f"/v1/conversations/{cid}/messages",
            json={"role": "visitor", "text": text},
            headers=api.keys["c01"],
        )
        assert r.status_code == 200, r.text
        return r.json()["seq"]

    with ThreadPoolExecutor(6) as pool:
        chats = [pool.submit(one_chat, c) for c in cids[:3]]
        racing = [pool.submit(post, cids[3], t) for t in ("在吗", "想问一下价格")]
        assert all(f.result() == list(range(len(CHAT))) for f in chats)
        assert sorted(f.result() for f in racing) == [0, 1]
    for cid in cids[:3]:
        stored = api.get(f"/v1/conversations/{cid}", headers=api.keys["c01"]).json()["messages"]
        assert [m["text"] for m in stored] == [t for _, t in CHAT]
    stored = api.get(f"/v1/conversations/{cids[3]}", headers=api.keys["c01"]).json()["messages"]
    assert sorted(m["text"] for m in stored) == sorted(["在吗", "想问一下价格"])
