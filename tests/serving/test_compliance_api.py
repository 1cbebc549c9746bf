"""Consultant messages carry a compliance check in the message answer; nothing is blocked or altered."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from yuyue.serving.app import create_app

T0 = "2025-03-05T14:02:11+08:00"


@pytest.fixture
def api(tmp_path, test_settings, model):
    settings = test_settings.model_copy(update={"var_dir": tmp_path / "var", "model_poll_seconds": 0})
    app = create_app(settings, model, "t1")
    keys = app.state.yuyue.keys
    raw = {"c01": keys.create("wang", "consultant", consultant_id="c01")[1]}
    with TestClient(app) as client:
        client.keys = {k: {"X-API-Key": v} for k, v in raw.items()}
        yield client


def _open(api) -> str:
    body = {
        "conversation_id": "t-" + uuid.uuid4().hex[:10],
        "started_at": T0,
        "department": "整形美容",
        "project": "隆鼻",
    }
    r = api.post("/v1/conversations", json=body, headers=api.keys["c01"])
    assert r.status_code == 201, r.text
    return r.json()["conversation_id"]


def _send(api, cid, role, text, minute):
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": role, "text": text, "at": f"2025-03-05T14:{minute:02d}:00+08:00"},
        headers=api.keys["c01"],
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_consultant_messages_carry_compliance_and_are_stored_as_typed(api):
    cid = _open(api)
    visitor = _send(api, cid, "visitor", "隆鼻多少钱，效果好吗", 3)
    assert "compliance" not in visitor  # only what consultants type is checked
    ok = _send(api, cid, "consultant", "效果因人而异，需要医生面诊后判断，费用面诊后会详细说明。", 4)
    assert ok["compliance"] == {"allowed": True, "rules": [], "alternative": None}
    bad = _send(api, cid, "consultant", "放心，我们保证效果，今天特价只要三千", 5)
    comp = bad["compliance"]
    assert comp["allowed"] is False
    categories = {r["category"] for r in comp["rules"]}
    assert {"promise_result", "price_bait"} <= categories
    assert all(r["id"] and r["citation"] and r["source"] in ("rule", "classifier") for r in comp["rules"])
    assert comp["alternative"] and "保证效果" not in comp["alternative"]
    # a claim the rules do not know, caught by the classifier, still names a category and its article
    fear = _send(api, cid, "consultant", "您要是一直不管它，以后连孩子都要不上了，到时候哭都没地方哭", 6)
    assert fear["compliance"]["allowed"] is False
    assert all(r["citation"] for r in fear["compliance"]["rules"])
    # Yuyue never blocks or alters the message: it is stored exactly as typed
    r = api.get(f"/v1/conversations/{cid}", headers=api.keys["c01"])
    assert r.status_code == 200, r.text
    texts = [m["text"] for m in r.json()["messages"]]
    assert "放心，我们保证效果，今天特价只要三千" in texts
