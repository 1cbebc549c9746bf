# ruff: noqa: F811  (the desk fixture comes from test_appointments)
"""Calling permission (issue 16), on SQLite and PostgreSQL: a task shows its phone masked to everyone;
the consultant it is assigned to, or a supervisor, reveals the number through an explicit call, and each
reveal is written to the audit log GET /v1/audit serves; nobody else gets it."""

from __future__ import annotations

import orjson

from tests.serving.test_api import PHONE
from tests.serving.test_appointments import desk  # noqa: F401
from tests.serving.test_tasks import _post, lead


def reveals(api):
    r = api.get("/v1/audit", params={"action": "read_raw"}, headers=api.keys["adm"])
    assert r.status_code == 200, r.text
    return [x for x in r.json()["items"] if x["detail"] and orjson.loads(x["detail"]).get("via") == "task"]


def test_the_assignee_or_a_supervisor_reveals_the_number_and_it_is_audited(desk):
    api = desk
    cid, t = lead(api, "c01")
    tid = t["id"]
    # the task shows the phone masked, to its own consultant too, and no list carries it
    for who in ("sup", "c01", "ana"):
        detail = api.get(f"/v1/tasks/{tid}", headers=api.keys[who]).json()
        assert [(c["type"], c["value"]) for c in detail["contacts"]] == [("phone", "138****5678")], who
        assert PHONE not in orjson.dumps(detail).decode()
    # an open task: its consultant claims it before calling; others may not
    r = _post(api, f"/v1/tasks/{tid}/reveal", "c01")
    assert r.status_code == 409 and "claim it" in r.json()["detail"]
    assert _post(api, f"/v1/tasks/{tid}/reveal", "c02").status_code == 403
    assert _post(api, f"/v1/tasks/{tid}/reveal", "ana").status_code == 403
    assert api.post(f"/v1/tasks/{tid}/reveal").status_code == 401
    assert reveals(api) == []
    # assigned to c01: c01 reveals it, recorded with the task
    assert _post(api, f"/v1/tasks/{tid}/assign", body={"assignee": "c01"}).status_code == 200
    r = _post(api, f"/v1/tasks/{tid}/reveal", "c01")
    assert r.status_code == 200, r.text
    assert r.json()["contacts"] == [{"type": "phone", "value": PHONE, "message": 2}] and r.json()["recorded"]
    (row,) = reveals(api)
    assert (row["actor"], row["role"], row["conversation_id"]) == ("wang", "consultant", cid)
    assert orjson.loads(row["detail"]) == {
        "via": "task",
        "task_id": tid,
        "kind": "lead_call",
        "types": ["phone"],
    }
    # a supervisor may reveal it too (recorded); the consultant it is not assigned to may not
    assert _post(api, f"/v1/tasks/{tid}/reveal", "sup").json()["contacts"][0]["value"] == PHONE
    assert [x["actor"] for x in reveals(api)] == ["boss", "wang"]  # newest first
    _post(api, f"/v1/tasks/{tid}/assign", body={"assignee": "c02"})
    r = _post(api, f"/v1/tasks/{tid}/reveal", "c01")
    assert r.status_code == 403 and "assigned to 'c02'" in r.json()["detail"]
    assert _post(api, f"/v1/tasks/{tid}/reveal", "c02").status_code == 200
    # a done task has no call to make
    _post(api, f"/v1/tasks/{tid}/attempts", "c02", {"result": "refused"})
    r = _post(api, f"/v1/tasks/{tid}/reveal", "c02")
    assert r.status_code == 409 and "is done" in r.json()["detail"]
    assert len(reveals(api)) == 3
    assert _post(api, "/v1/tasks/abc123/reveal").status_code == 404
