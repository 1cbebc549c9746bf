"""Who may do what (issue 14 §5): every role on every endpoint, feedback only by the chat's consultant
(or a supervisor/admin, recorded as such), and a chat without a consultant claimed by the first
consultant who writes to it, theirs from then on."""

# ruff: noqa: F811  (the api/backend fixtures come from test_api)
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.serving.test_api import CHAT, _at, _chat, _open

ROLES = ("owner", "other", "sup", "ana", "admin", "nobody")
# expected status per endpoint, for: the chat's consultant, another consultant, supervisor, analyst,
# admin, no key
MATRIX = {
    "open": (201, 201, 201, 403, 201, 401),
    "message": (200, 403, 200, 403, 200, 401),
    "outcome": (200, 403, 200, 403, 200, 401),
    "read": (200, 403, 200, 200, 200, 401),
    "feedback": (200, 403, 200, 403, 200, 401),
    "followups": (200, 200, 200, 200, 200, 401),
    "funnel": (200, 200, 200, 200, 200, 401),
    "export": (403, 403, 403, 200, 200, 401),
    "reload": (403, 403, 403, 200, 200, 401),
    "model": (200, 200, 200, 200, 200, 401),
}


@pytest.fixture
def who(api):
    h = api.keys
    return {
        "owner": h["c01"],
        "other": h["c02"],
        "sup": h["sup"],
        "ana": h["ana"],
        "admin": h["adm"],
        "nobody": {},
    }


def _call(api, endpoint, headers, cid, sid):
    if endpoint == "open":
        return api.post("/v1/conversations", json={}, headers=headers)
    if endpoint == "message":
        return api.post(
            f"/v1/conversations/{cid}/messages", json={"role": "visitor", "text": "在吗"}, headers=headers
        )
    if endpoint == "outcome":
        return api.post(f"/v1/conversations/{cid}/outcome", json={"contact": True}, headers=headers)
    if endpoint == "read":
        return api.get(f"/v1/conversations/{cid}", headers=headers)
    if endpoint == "feedback":
        return api.post(f"/v1/suggestions/{sid}/feedback", json={"action": "used"}, headers=headers)
    path = {
        "followups": "/v1/followups",
        "funnel": "/v1/stats/funnel",
        "export": "/v1/export",
        "model": "/v1/model",
    }.get(endpoint)
    if path:
        return api.get(path, headers=headers)
    return api.post("/v1/admin/reload", headers=headers)


def test_every_role_on_every_endpoint(api, who):
    got, want = {}, {}
    for endpoint, statuses in MATRIX.items():
        for role, status in zip(ROLES, statuses, strict=True):
            cid = _open(api)  # c01's chat, fresh for each call
            sid = _chat(api, cid, messages=CHAT[:1])[0]["suggestions"][0]["id"]
            got[endpoint, role] = _call(api, endpoint, who[role], cid, sid).status_code
            want[endpoint, role] = status
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, wrong


def _feedback_events(api, sid):
    with api.app.state.yuyue.engine.connect() as cx:
        rows = cx.execute(sa.text("SELECT actor, payload FROM events WHERE kind = 'feedback'")).all()
    return [(actor, orjson.loads(p)) for actor, p in rows if orjson.loads(p)["suggestion_id"] == sid]


def test_feedback_by_a_supervisor_is_recorded_as_such(api, who):
    cid = _open(api)
    sid = _chat(api, cid, messages=CHAT[:1])[0]["suggestions"][0]["id"]
    assert (
        api.post(f"/v1/suggestions/{sid}/feedback", json={"action": "used"}, headers=who["sup"]).status_code
        == 200
    )
    ((actor, payload),) = _feedback_events(api, sid)
    assert actor == "boss" and payload["recorded_by_role"] == "supervisor"
    r = api.post(f"/v1/suggestions/{sid}/feedback", json={"action": "dismissed"}, headers=who["owner"])
    assert r.status_code == 200
    assert "recorded_by_role" not in _feedback_events(api, sid)[1][1]
    # nobody else overwrites it
    for role in ("other", "ana"):
        r = api.post(f"/v1/suggestions/{sid}/feedback", json={"action": "used"}, headers=who[role])
        assert r.status_code == 403 and "may not record feedback" in r.json()["detail"]
    assert len(_feedback_events(api, sid)) == 2


def test_a_chat_without_consultant_is_claimed_by_the_first_who_writes(api, who, backend, model):
    cid = _open(api, who="sup")  # opened by a supervisor: no consultant yet
    assert (
        api.get(f"/v1/conversations/{cid}", headers=who["sup"]).json()["conversation"]["consultant_id"]
        is None
    )
    seen = api.get(f"/v1/conversations/{cid}", headers=who["other"])  # anyone may look at an unclaimed chat
    assert seen.status_code == 200 and seen.json()["masked"] is True
    replies = _chat(api, cid, messages=CHAT[:3], who="c01")  # c01 writes first: the chat becomes theirs
    chat = api.get(f"/v1/conversations/{cid}", headers=who["owner"]).json()
    assert chat["conversation"]["consultant_id"] == "c01" and chat["masked"] is False
    sid = replies[0]["suggestions"][0]["id"]
    # theirs from then on: another consultant can neither write, close, give feedback nor read
    h = who["other"]
    msg = {"role": "visitor", "text": "还在吗", "at": _at(40)}
    for r in (
        api.post(f"/v1/conversations/{cid}/messages", json=msg, headers=h),
        api.post(f"/v1/conversations/{cid}/outcome", json={"close": True}, headers=h),
        api.post(f"/v1/suggestions/{sid}/feedback", json={"action": "used"}, headers=h),
        api.get(f"/v1/conversations/{cid}", headers=h),
    ):
        assert r.status_code == 403, r.text
    with api.app.state.yuyue.engine.connect() as cx:
        claims = cx.execute(
            sa.text(f"SELECT actor, payload FROM events WHERE kind = 'claim' AND conversation_id = '{cid}'")
        ).all()
    assert [(a, orjson.loads(p)) for a, p in claims] == [("wang", {"consultant_id": "c01"})]
    # live and replayed scores agree for a claimed chat (the consultant is one of the model's features)
    service = api.app.state.yuyue.service
    rebuilt = service.rebuild(service.store.conversation(cid), model)
    assert model.score(rebuilt.session.state)["booked"].probability == pytest.approx(
        replies[-1]["scores"]["booked"]["probability"], abs=1e-4
    )
    # a second worker (its own cache) knows it too
    from yuyue.serving.app import create_app

    with TestClient(create_app(backend, model, "t1")) as second:
        r = second.post(f"/v1/conversations/{cid}/messages", json=msg, headers=h)
        assert r.status_code == 403, r.text


def test_closing_an_unclaimed_chat_claims_it(api, who):
    cid = _open(api, who="sup")
    assert (
        api.post(f"/v1/conversations/{cid}/outcome", json={"contact": True}, headers=who["other"]).status_code
        == 200
    )
    assert (
        api.get(f"/v1/conversations/{cid}", headers=who["sup"]).json()["conversation"]["consultant_id"]
        == "c02"
    )
    r = api.post(
        f"/v1/conversations/{cid}/messages", json={"role": "visitor", "text": "hi"}, headers=who["owner"]
    )
    assert r.status_code == 403


def test_two_consultants_racing_for_an_unclaimed_chat_one_wins(api, who):
    cid = _open(api, who="sup")

    def write(role, minute):
        body = {"role": "consultant", "text": "您好", "at": _at(minute)}
        return api.post(f"/v1/conversations/{cid}/messages", json=body, headers=who[role]).status_code

    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(write, ("owner", "other"), (10, 10)))
    assert codes == [200, 403], codes
    chat = api.get(f"/v1/conversations/{cid}", headers=who["sup"]).json()
    assert chat["conversation"]["consultant_id"] in ("c01", "c02") and len(chat["messages"]) == 1
