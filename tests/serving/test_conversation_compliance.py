"""GET /v1/conversations/{id} returns the compliance verdict stored with each consultant message, to every
role that may read the chat (raw or masked), on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import json
import uuid

T0 = "2025-03-05T14:02:11+08:00"
PROMISE = "放心，我们保证效果，今天特价只要三千，电话13812345678"
HONEST = "效果因人而异，需要医生面诊后判断，费用面诊后会详细说明。"


def _open(api) -> str:
    body = {
        "conversation_id": "cc-" + uuid.uuid4().hex[:10],
        "started_at": T0,
        "department": "整形美容",
        "project": "隆鼻",
        "consultant_id": "c01",
    }
    r = api.post("/v1/conversations", json=body, headers=api.keys["c01"])
    assert r.status_code == 201, r.text
    return r.json()["conversation_id"]


def _send(api, cid: str, role: str, text: str, minute: int) -> dict:
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": role, "text": text, "at": f"2025-03-05T14:{minute:02d}:00+08:00"},
        headers=api.keys["c01"],
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_stored_verdicts_come_back_with_the_chat_for_every_reader(api):
    cid = _open(api)
    _send(api, cid, "visitor", "隆鼻多少钱，效果好吗", 3)
    honest = _send(api, cid, "consultant", HONEST, 4)["compliance"]
    bad = _send(api, cid, "consultant", PROMISE, 5)["compliance"]
    assert honest["allowed"] is True and bad["allowed"] is False

    for who in ("c01", "sup"):
        r = api.get(f"/v1/conversations/{cid}", headers=api.keys[who])
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["masked"] is (who != "c01")
        by_seq = {m["seq"]: m for m in body["messages"]}
        assert [m["role"] for m in body["messages"]] == ["visitor", "consultant", "consultant"]
        visitor, ok, flagged = (by_seq[s] for s in sorted(by_seq))
        assert visitor["compliance"] is None  # only what consultants type is checked
        assert ok["compliance"] == {"allowed": True, "rules": []}
        # the answer's verdict, as stored: the same rules, without the alternative (looked up live)
        assert flagged["compliance"]["allowed"] is False
        assert flagged["compliance"]["rules"] == [
            {k: hit[k] for k in ("id", "category", "citation", "source")} for hit in bad["rules"]
        ]
        assert {"promise_result", "price_bait"} <= {h["category"] for h in flagged["compliance"]["rules"]}
        assert all(h["citation"] for h in flagged["compliance"]["rules"])
        assert "alternative" not in flagged["compliance"]
    # the verdict carries no message text: the supervisor's masked view still hides the phone number
    sup = api.get(f"/v1/conversations/{cid}", headers=api.keys["sup"]).json()
    assert "13812345678" not in json.dumps(sup, ensure_ascii=False)
    # a consultant who may not read the chat gets no verdicts either
    other = api.get(f"/v1/conversations/{cid}", headers=api.keys["c02"])
    assert other.status_code == 403 and "compliance" not in other.text


def test_the_verdict_is_documented_in_openapi(api):
    spec = api.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    prop = schemas["StoredMessage"]["properties"]["compliance"]
    refs = [s.get("$ref", "") for s in prop.get("anyOf", [prop])]
    assert "#/components/schemas/StoredCompliance" in refs
    stored = schemas["StoredCompliance"]
    assert set(stored["required"]) == {"allowed", "rules"} and stored["description"]
    hit = schemas["ComplianceHit"]["properties"]
    assert {"id", "category", "citation", "source"} <= set(hit)
    assert hit["source"]["enum"] == ["rule", "classifier"]
