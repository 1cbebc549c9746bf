"""Hospitals as tenants (issue 17): a key scoped to hospital A never sees nor changes hospital B's data.

The world: hospitals A and B, each with a chat (messages, a suggestion, contact, an appointment, call
tasks, a flagged patient), and a chat without a hospital; one group-level key and one key scoped to A
per role (the consultants both serve as ``c1``, so only the hospital tells them apart).

Every route of the app is in exactly one of :data:`ITEMS` (B's chat / appointment / task / patient:
403 for the scoped key wherever the group key of the same role is let through), :data:`LISTS` (B
absent, A's rows as the group key's filtered by ``hospital=A``), :data:`GROUP` (shared by every
hospital: 403 for scoped keys), :data:`DOCUMENTS` (a document per hospital, ``?hospital=``: A's by
default for the scoped key, B's a 403, the shared default one written by group keys only) and
:data:`SHARED` (nothing per hospital); a new endpoint fails
:func:`test_every_route_is_classified` until it is classified here. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from typer.testing import CliRunner

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2025, 3, 5, 14, 30, tzinfo=TZ)  # the desk's clock: the chats are on 2025-03-05
T0 = "2025-03-05T14:00:00+08:00"
A, B = "Hosp-A", "Hosp-B"
ROLES = ("consultant", "supervisor", "analyst", "admin")
PHONES = {A: "13812345678", B: "13987654321", None: "13700001111"}
REPORT_DAYS = {"from": "2025-03-01", "to": "2025-03-31"}


def _open(api, headers, hospital, **extra):
    body = {
        "conversation_id": f"{(hospital or 'none').lower()}-{uuid.uuid4().hex[:10]}",
        "started_at": T0,
        "department": "整形美容",
        "project": "隆鼻",
        "consultant_id": "c1",
        "visit": {
            "engine": "baidu",
            "keyword": "杭州隆鼻多少钱",
            "region": "浙江省杭州市",
            "device": "mobile",
        },
        **extra,
    }
    if hospital is not None:
        body["hospital"] = hospital
    return api.post("/v1/conversations", json=body, headers=headers)


def _build(api, hospital) -> dict[str, str]:
    """A chat of ``hospital`` with everything hanging off it; the ids of what was made."""
    sup = api.keys["g-supervisor"]
    r = _open(api, sup, hospital)
    assert r.status_code == 201, r.text
    cid = r.json()["conversation_id"]
    sid = None
    messages = [
        ("visitor", "你好，隆鼻大概多少钱？"),
        ("consultant", "您好，费用要看方案，您明天下午3点方便过来面诊吗？"),
        ("visitor", f"可以，明天下午3点过来，电话{PHONES[hospital]}"),
    ]
    for i, (role, text) in enumerate(messages):
        r = api.post(
            f"/v1/conversations/{cid}/messages",
            json={"role": role, "text": text, "at": f"2025-03-05T14:{3 + i:02d}:00+08:00", "k": 3},
            headers=sup,
        )
        assert r.status_code == 200, r.text
        sid = sid or (r.json()["suggestions"][0]["id"] if r.json()["suggestions"] else None)
    assert sid is not None
    r = api.post(f"/v1/conversations/{cid}/outcome", json={"contact": True}, headers=sup)
    assert r.status_code == 200, r.text
    r = api.post(
        "/v1/appointments",
        json={"conversation_id": cid, "time": "2025-03-07T15:00:00+08:00", "doctor": "张医生"},
        headers=sup,
    )
    assert r.status_code == 201, r.text
    appt = r.json()["id"]
    r = api.get("/v1/patients", params={"conversation_id": cid}, headers=sup)
    assert r.status_code == 200 and r.json()["items"], r.text
    pid = r.json()["items"][0]["id"]
    r = api.post(f"/v1/patients/{pid}/incidents", json={"kind": "complaint"}, headers=sup)
    assert r.status_code == 201 and r.json()["flagged"], r.text
    r = api.get("/v1/tasks", params={"limit": 500}, headers=sup)
    task = next(t["id"] for t in r.json()["items"] if t["conversation_id"] == cid)
    return {"chat": cid, "suggestion": sid, "appointment": appt, "task": task, "patient": pid}


@pytest.fixture
def world(backend, model):
    """The app with a group-level key (``g-<role>``) and a key scoped to A (``a-<role>``) per role, and
    the data of A, B and a chat without a hospital."""
    from yuyue.serving.app import create_app

    app = create_app(backend, model, "t1")
    keys = app.state.yuyue.keys
    raw = {}
    for role in ROLES:
        consultant = "c1" if role == "consultant" else None
        raw[f"g-{role}"] = keys.create(f"group-{role}", role, consultant_id=consultant)[1]
        raw[f"a-{role}"] = keys.create(f"a-{role}", role, consultant_id=consultant, hospitals=[A])[1]
    with TestClient(app) as api:
        api.keys = {k: {"X-API-Key": v} for k, v in raw.items()}
        api.app.state.yuyue.desk.clock = lambda: NOW
        data = {A: _build(api, A), B: _build(api, B), None: _build(api, None)}
        api.data = data
        yield api


MARKS = ("arrived", "no-show", "cancel")


def _marker(action: str) -> Callable[..., object]:
    return lambda api, h, o: api.post(f"/v1/appointments/{o['appointment']}/{action}", headers=h)


# ---- what each route is ------------------------------------------------------------------------------
Call = Callable[..., object]  # (client, headers, ids of B's objects) -> response
ITEMS: dict[tuple[str, str], Call] = {
    ("POST", "/v1/conversations"): lambda api, h, o: _open(api, h, o["hospital"], consultant_id=None),
    ("POST", "/v1/conversations/{conversation_id}/messages"): lambda api, h, o: api.post(
        f"/v1/conversations/{o['chat']}/messages", json={"role": "visitor", "text": "在吗"}, headers=h
    ),
    ("POST", "/v1/conversations/{conversation_id}/outcome"): lambda api, h, o: api.post(
        f"/v1/conversations/{o['chat']}/outcome", json={"booked": True}, headers=h
    ),
    ("GET", "/v1/conversations/{conversation_id}"): lambda api, h, o: api.get(
        f"/v1/conversations/{o['chat']}", headers=h
    ),
    ("POST", "/v1/suggestions/{suggestion_id}/feedback"): lambda api, h, o: api.post(
        f"/v1/suggestions/{o['suggestion']}/feedback", json={"action": "used"}, headers=h
    ),
    ("POST", "/v1/appointments"): lambda api, h, o: api.post(
        "/v1/appointments",
        json={"conversation_id": o["chat"], "time": "2025-03-08T10:00:00+08:00", "confirmed": True},
        headers=h,
    ),
    ("GET", "/v1/appointments/proposal"): lambda api, h, o: api.get(
        "/v1/appointments/proposal", params={"conversation_id": o["chat"]}, headers=h
    ),
    ("GET", "/v1/appointments/{appointment_id}"): lambda api, h, o: api.get(
        f"/v1/appointments/{o['appointment']}", headers=h
    ),
    ("PATCH", "/v1/appointments/{appointment_id}"): lambda api, h, o: api.patch(
        f"/v1/appointments/{o['appointment']}", json={"note": "改约"}, headers=h
    ),
    **{("POST", f"/v1/appointments/{{appointment_id}}/{action}"): _marker(action) for action in MARKS},
    ("GET", "/v1/tasks/{task_id}"): lambda api, h, o: api.get(f"/v1/tasks/{o['task']}", headers=h),
    ("POST", "/v1/tasks/{task_id}/assign"): lambda api, h, o: api.post(
        f"/v1/tasks/{o['task']}/assign", json={"assignee": "c1"}, headers=h
    ),
    ("POST", "/v1/tasks/{task_id}/claim"): lambda api, h, o: api.post(
        f"/v1/tasks/{o['task']}/claim", headers=h
    ),
    ("POST", "/v1/tasks/{task_id}/attempts"): lambda api, h, o: api.post(
        f"/v1/tasks/{o['task']}/attempts", json={"result": "no_answer"}, headers=h
    ),
    ("POST", "/v1/tasks/{task_id}/snooze"): lambda api, h, o: api.post(
        f"/v1/tasks/{o['task']}/snooze", json={"until": "2025-03-06T09:00:00+08:00"}, headers=h
    ),
    ("POST", "/v1/tasks/{task_id}/done"): lambda api, h, o: api.post(
        f"/v1/tasks/{o['task']}/done", json={}, headers=h
    ),
    ("POST", "/v1/tasks/{task_id}/reveal"): lambda api, h, o: api.post(
        f"/v1/tasks/{o['task']}/reveal", headers=h
    ),
    ("GET", "/v1/patients/{patient_id}"): lambda api, h, o: api.get(
        f"/v1/patients/{o['patient']}", headers=h
    ),
    ("POST", "/v1/patients/{patient_id}/incidents"): lambda api, h, o: api.post(
        f"/v1/patients/{o['patient']}/incidents", json={"kind": "unpaid"}, headers=h
    ),
    ("POST", "/v1/patients/{patient_id}/clear-flag"): lambda api, h, o: api.post(
        f"/v1/patients/{o['patient']}/clear-flag", json={"note": "已核实"}, headers=h
    ),
    ("GET", "/v1/conversations/{conversation_id}/personal-data"): lambda api, h, o: api.get(
        f"/v1/conversations/{o['chat']}/personal-data", headers=h
    ),
    ("DELETE", "/v1/conversations/{conversation_id}/personal-data"): lambda api, h, o: api.delete(
        f"/v1/conversations/{o['chat']}/personal-data", headers=h
    ),
}
# lists: GET with these parameters
LISTS: dict[tuple[str, str], dict[str, object]] = {
    ("GET", "/v1/conversations"): {"limit": 100},
    ("GET", "/v1/followups"): {"limit": 500},
    ("GET", "/v1/appointments"): {},
    ("GET", "/v1/tasks"): {"limit": 500},
    ("GET", "/v1/patients"): {"flagged": "true"},
    ("GET", "/v1/stats/funnel"): {"group_by": "hospital"},
    ("GET", "/v1/stats/compliance"): {},
    ("GET", "/v1/export"): {},
    ("GET", "/v1/reports/consultants"): REPORT_DAYS,
    ("GET", "/v1/reports/sources"): REPORT_DAYS,
    ("GET", "/v1/replies"): {"limit": 500},  # the replies are shared; their usage is per hospital
}
# shared by every hospital: only group-level keys change or read them (403 for scoped keys)
GROUP: dict[tuple[str, str], Call] = {
    ("POST", "/v1/admin/reload"): lambda api, h: api.post("/v1/admin/reload", headers=h),
    ("POST", "/v1/replies/{reply_id}/review"): lambda api, h: api.post(
        "/v1/replies/r-none/review", json={"action": "allow"}, headers=h
    ),
    ("POST", "/v1/tasks/sweep"): lambda api, h: api.post("/v1/tasks/sweep", headers=h),
    ("GET", "/v1/audit"): lambda api, h: api.get("/v1/audit", headers=h),
    ("GET", "/v1/model/health"): lambda api, h: api.get(
        "/v1/model/health", params={"drift": "false"}, headers=h
    ),
}
# a document per hospital (``?hospital=``) and a default one shared by every hospital: the knowledge
DOCUMENTS: dict[tuple[str, str], Callable[..., object]] = {  # (client, headers, params) -> response
    ("GET", "/v1/knowledge"): lambda api, h, p: api.get("/v1/knowledge", params=p, headers=h),
    ("PUT", "/v1/knowledge"): lambda api, h, p: api.put("/v1/knowledge", params=p, json={}, headers=h),
    ("GET", "/v1/knowledge/day"): lambda api, h, p: api.get(
        "/v1/knowledge/day", params={"date": "2025-03-06", **p}, headers=h
    ),
}
# nothing in them is per hospital: the probes, the console's files, the model
SHARED = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/console/{name}.js"),
    ("GET", "/v1/model"),
}


def _api_routes(app) -> list[APIRoute]:
    """The app's endpoints, through the routers it includes (FastAPI wraps each in an included router
    that keeps it as ``original_router``; the app's routers have no prefix)."""
    todo, out = list(app.routes), []
    while todo:
        r = todo.pop()
        if isinstance(r, APIRoute):
            out.append(r)
        else:
            todo += getattr(getattr(r, "original_router", None), "routes", [])
    return out


def _routes(app) -> set[tuple[str, str]]:
    return {(m, r.path) for r in _api_routes(app) for m in r.methods}


def _hospital_param(app, method: str, path: str) -> bool:
    route = next(r for r in _api_routes(app) if r.path == path and method in r.methods)
    todo, names = [route.dependant], set()
    while todo:  # the route's query parameters and those of its dependencies
        dep = todo.pop()
        names |= {p.alias for p in dep.query_params}
        todo += dep.dependencies
    return "hospital" in names


def test_every_route_is_classified(backend, model):
    from yuyue.serving.app import create_app

    app = create_app(backend, model, "t1")
    parts = [set(ITEMS), set(LISTS), set(GROUP), set(DOCUMENTS), SHARED]
    assert sum(len(p) for p in parts) == len(set().union(*parts)), "a route is in two classes"
    assert set().union(*parts) == _routes(app)


def _scoped_refusal(r, hospital: str | None) -> bool:
    """A 403 naming the hospital (the chat's lack of one; a patient's lack of a chat there) and the
    key's hospitals."""
    if r.status_code != 403:
        return False
    detail = r.json()["detail"]
    named = (repr(hospital) if hospital else "no hospital") in detail or "has no chat in" in detail
    return named and repr(A) in detail


@pytest.mark.parametrize("other", [B, None], ids=["B", "no-hospital"])
def test_a_scoped_key_cannot_touch_another_hospitals_items(world, other):
    api = world
    objects = {**api.data[other], "hospital": other or B}
    checked = 0
    for route, call in ITEMS.items():
        for role in ROLES:
            scoped = call(api, api.keys[f"a-{role}"], objects)
            group = call(api, api.keys[f"g-{role}"], objects)  # after: the scoped call changed nothing
            if group.status_code == 403:  # the role may not do this anywhere
                assert scoped.status_code == 403, (route, role, scoped.text)
                continue
            checked += 1
            want = other if route != ("POST", "/v1/conversations") else B
            assert _scoped_refusal(scoped, want), (route, role, scoped.status_code, scoped.text)
    assert checked >= 2 * len(ITEMS)  # most routes are open to more than one role


def test_a_scoped_key_works_on_its_own_hospital(world):
    api = world
    mine = api.data[A]
    for role in ("consultant", "supervisor"):
        h = api.keys[f"a-{role}"]
        assert api.get(f"/v1/conversations/{mine['chat']}", headers=h).status_code == 200
        assert api.get(f"/v1/appointments/{mine['appointment']}", headers=h).status_code == 200
        assert api.get(f"/v1/tasks/{mine['task']}", headers=h).status_code == 200
        history = api.get(f"/v1/patients/{mine['patient']}", headers=h)
        assert history.status_code == 200 and [c["hospital"] for c in history.json()["chats"]] == [A]
    r = api.post(
        f"/v1/conversations/{mine['chat']}/messages",
        json={"role": "visitor", "text": "在吗"},
        headers=api.keys["a-consultant"],
    )
    assert r.status_code == 200, r.text
    r = api.get(
        "/v1/patients", params={"conversation_id": api.data[B]["chat"]}, headers=api.keys["a-supervisor"]
    )
    assert _scoped_refusal(r, B), r.text


def test_a_single_hospital_key_opens_chats_there(world):
    api = world
    r = _open(api, api.keys["a-supervisor"], None)
    assert r.status_code == 201, r.text
    chat = api.get(f"/v1/conversations/{r.json()['conversation_id']}", headers=api.keys["g-supervisor"])
    assert chat.json()["conversation"]["hospital"] == A
    assert _open(api, api.keys["a-supervisor"], A).status_code == 201


def test_a_key_of_several_hospitals_says_which(world):
    api = world
    keys = api.app.state.yuyue.keys
    raw = keys.create("ab-sup", "supervisor", hospitals=[A, B])[1]
    h = {"X-API-Key": raw}
    r = _open(api, h, None)
    assert r.status_code == 422 and "say which one" in r.text, r.text
    assert _open(api, h, B).status_code == 201
    assert api.get(f"/v1/conversations/{api.data[B]['chat']}", headers=h).status_code == 200
    assert _scoped_refusal(api.get(f"/v1/conversations/{api.data[None]['chat']}", headers=h), None)
    funnel = api.get("/v1/stats/funnel", params={"group_by": "hospital"}, headers=h).json()
    assert {g["group"] for g in funnel["groups"]} == {A, B}


def _tokens(data: dict[str, str]) -> set[str]:
    return {v for k, v in data.items() if k != "suggestion"}


def _strip(body: dict) -> dict:
    """The answer without what differs between two calls (the time it was made)."""
    return {k: v for k, v in body.items() if k not in ("generated_at", "now", "as_of")}


def test_lists_and_reports_hold_only_the_keys_hospitals(world):
    api = world
    theirs = _tokens(api.data[B]) | _tokens(api.data[None]) | {B}
    mine = _tokens(api.data[A])
    for route, params in LISTS.items():
        path = route[1]
        has_hospital = _hospital_param(api.app, *route)
        for role in ROLES:
            group = api.get(path, params=params, headers=api.keys[f"g-{role}"])
            scoped = api.get(path, params=params, headers=api.keys[f"a-{role}"])
            if group.status_code == 403:
                assert scoped.status_code == 403, (route, role)
                continue
            assert group.status_code == 200 and scoped.status_code == 200, (route, role, scoped.text)
            leaked = {t for t in theirs if t in scoped.text}
            assert not leaked, (route, role, leaked)
            if has_hospital:
                # the scoped answer is the group's for hospital A, and the group's whole answer differs
                only_a = api.get(path, params={**params, "hospital": A}, headers=api.keys[f"g-{role}"])
                if path.endswith("/export"):
                    assert scoped.text == only_a.text and scoped.text != group.text, (route, role)
                else:
                    assert _strip(scoped.json()) == _strip(only_a.json()), (route, role)
                    assert _strip(group.json()) != _strip(scoped.json()), (route, role)
                asks_b = api.get(path, params={**params, "hospital": B}, headers=api.keys[f"a-{role}"])
                assert asks_b.status_code == 403 and repr(B) in asks_b.json()["detail"], (route, role)
            else:
                assert any(t in group.text for t in theirs), (route, role, "B's rows missing: no test")
                assert {t for t in mine if t in scoped.text} == {t for t in mine if t in group.text}, (
                    route,
                    role,
                )


def _listed(api, path, headers, **params) -> tuple[set[str | None], set[str]]:
    """The hospitals and ids of a desk list's items."""
    r = api.get(path, params={"limit": 500, **params}, headers=headers)
    assert r.status_code == 200, (path, params, r.text)
    return {i["hospital"] for i in r.json()["items"]}, {i["id"] for i in r.json()["items"]}


def test_desk_lists_take_several_hospitals(world):
    """``?hospital=`` on the work list and the appointments: repeated for several hospitals; a scoped
    key narrows within its own and gets 403 naming any other (as every list's ``hospital``)."""
    api = world
    keys = api.app.state.yuyue.keys
    ab = {"X-API-Key": keys.create("ab-desk", "supervisor", hospitals=[A, B])[1]}
    g, a = api.keys["g-supervisor"], api.keys["a-supervisor"]
    for path, obj in (("/v1/appointments", "appointment"), ("/v1/tasks", "task")):
        every, every_ids = _listed(api, path, g)
        assert every == {A, B, None} and {api.data[h][obj] for h in (A, B, None)} <= every_ids, path
        assert _listed(api, path, g, hospital=[A, B])[0] == {A, B}, path
        assert _listed(api, path, g, hospital=[B])[0] == {B}, path
        assert _listed(api, path, g, hospital=["Hosp-C"]) == (set(), set()), path
        assert _listed(api, path, ab)[0] == {A, B} and _listed(api, path, ab, hospital=A)[0] == {A}, path
        assert _listed(api, path, a, hospital=A) == _listed(api, path, a), path
        for headers, asked in ((a, [A, B]), (a, [B]), (ab, [A, "Hosp-C"])):
            r = api.get(path, params={"hospital": asked}, headers=headers)
            assert r.status_code == 403, (path, asked, r.text)
            assert repr(asked[-1]) in r.json()["detail"] and "outside key" in r.json()["detail"], r.text
        r = api.get(path, params={"hospital": [f"h{i}" for i in range(51)]}, headers=g)
        assert r.status_code == 422 and "hospital" in r.text, r.text
        # a consultant still sees only its own, within the hospitals asked for
        assert _listed(api, path, api.keys["g-consultant"], hospital=A)[0] <= {A}, path


def _summary(api, headers, chat, **params):
    r = api.get("/v1/patients", params={"conversation_id": chat, **params}, headers=headers)
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    return {k: item[k] for k in ("id", "chats", "returning", "no_shows", "flagged")}


def test_a_patients_counts_are_those_of_the_keys_hospitals(world):
    """A patient spans hospitals: its summary counts the chats and no-shows of the key's hospitals (or of
    ``?hospital=`` for a group-level key); its flag stays the group's."""
    api = world
    g, a = api.keys["g-supervisor"], api.keys["a-supervisor"]
    mine = api.data[A]
    # A's visitor comes back through hospital B, books there and does not come
    r = _open(api, g, B)
    assert r.status_code == 201, r.text
    cid = r.json()["conversation_id"]
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={
            "role": "visitor",
            "text": f"明天上午10点过来，电话{PHONES[A]}",
            "at": "2025-03-05T14:10:00+08:00",
        },
        headers=g,
    )
    assert r.status_code == 200, r.text
    assert _summary(api, g, cid)["id"] == mine["patient"]
    r = api.post(
        "/v1/appointments",
        json={"conversation_id": cid, "time": "2025-03-06T10:00:00+08:00", "confirmed": True},
        headers=g,
    )
    assert r.status_code == 201, r.text
    assert api.post(f"/v1/appointments/{r.json()['id']}/no-show", headers=g).status_code == 200

    pid = mine["patient"]
    whole = {"id": pid, "chats": 2, "returning": True, "no_shows": 1, "flagged": True}
    at_a = {"id": pid, "chats": 1, "returning": False, "no_shows": 0, "flagged": True}
    at_b = {**at_a, "no_shows": 1}
    assert _summary(api, g, mine["chat"]) == _summary(api, g, mine["chat"], hospital=[A, B]) == whole
    assert _summary(api, g, mine["chat"], hospital=A) == _summary(api, a, mine["chat"]) == at_a
    assert _summary(api, g, mine["chat"], hospital=B) == _summary(api, g, cid, hospital=B) == at_b
    assert _summary(api, a, mine["chat"], hospital=A) == at_a
    r = api.get("/v1/patients", params={"conversation_id": mine["chat"], "hospital": B}, headers=a)
    assert r.status_code == 403 and repr(B) in r.json()["detail"], r.text
    # the same counts wherever the summary is shown: the flagged list, a task, a booking's proposal
    flagged = api.get("/v1/patients", params={"flagged": "true"}, headers=a).json()["items"]
    assert [p["chats"] for p in flagged if p["id"] == pid] == [1]
    flagged = api.get("/v1/patients", params={"flagged": "true", "hospital": B}, headers=g).json()["items"]
    assert [(p["chats"], p["no_shows"]) for p in flagged if p["id"] == pid] == [(1, 1)]
    task = api.get(f"/v1/tasks/{mine['task']}", headers=a).json()
    assert task["patient"]["chats"] == 1 and task["patient"]["no_shows"] == 0
    assert api.get(f"/v1/tasks/{mine['task']}", headers=g).json()["patient"]["chats"] == 2
    proposal = api.get("/v1/appointments/proposal", params={"conversation_id": mine["chat"]}, headers=a)
    assert proposal.json()["patient"]["chats"] == 1, proposal.text


def test_group_operations_refuse_scoped_keys(world):
    api = world
    for route, call in GROUP.items():
        for role in ROLES:
            group = call(api, api.keys[f"g-{role}"])
            scoped = call(api, api.keys[f"a-{role}"])
            assert scoped.status_code == 403, (route, role, scoped.text)
            if group.status_code != 403:
                assert "group-level key" in scoped.json()["detail"], (route, role, scoped.text)


def test_documents_are_per_hospital(world):
    """The scoped key reaches A's document (by default and by ``?hospital=A``), never B's (403 naming B as
    the other 403s do); the default document is read by every key and written by group-level admins only."""
    api = world
    default_id = api.app.state.yuyue.settings.hospital_id
    for route, call in DOCUMENTS.items():
        for role in ROLES:
            g, a = api.keys[f"g-{role}"], api.keys[f"a-{role}"]
            group = call(api, g, {})
            if group.status_code == 403:  # the role may not do this anywhere (writes: admins)
                assert call(api, a, {"hospital": A}).status_code == 403, (route, role)
                continue
            assert group.status_code == 200, (route, role, group.text)
            mine = call(api, a, {})
            assert mine.status_code == 200 and call(api, a, {"hospital": A}).status_code == 200, mine.text
            if "hospital_id" in mine.json():
                assert mine.json()["hospital_id"] == A and group.json()["hospital_id"] == default_id
            refused = call(api, a, {"hospital": B})
            assert _scoped_refusal(refused, B) and "outside key" in refused.json()["detail"], refused.text
            shared = call(api, a, {"hospital": default_id})
            if route[0] == "GET":
                assert shared.status_code == 200, (route, role, shared.text)
            else:
                assert shared.status_code == 403 and "group-level key" in shared.json()["detail"], shared.text


def test_funnel_compares_hospitals_for_group_keys(world):
    api = world
    body = api.get("/v1/stats/funnel", params={"group_by": "hospital"}, headers=api.keys["g-analyst"]).json()
    groups = {g["group"]: g for g in body["groups"]}
    assert set(groups) == {A, B, None} and groups[A]["booked"] == groups[B]["booked"] == 1
    body = api.get("/v1/stats/funnel", params={"group_by": "hospital"}, headers=api.keys["a-analyst"]).json()
    assert [g["group"] for g in body["groups"]] == [A]


# ---- keys ---------------------------------------------------------------------------------------------
def test_keys_keep_their_hospitals(engine):
    from yuyue.serving.auth import InvalidKeyField, KeyStore

    store = KeyStore(engine, cache_ttl=0)
    key, raw = store.create("desk-a", "supervisor", hospitals=[" Hosp-A ", "Hosp-B", "Hosp-A"])
    assert key.hospitals == (A, B)
    assert store.authenticate(raw).hospitals == (A, B) and store.get("desk-a").hospitals == (A, B)
    assert store.create("group", "analyst")[0].hospitals == ()
    assert store.get("group").as_dict()["hospitals"] == []
    for bad, why in (([""], "non-empty"), (["x" * 129], "longer than 128"), ("Hosp-A", "list")):
        with pytest.raises(InvalidKeyField, match=why):
            store.create(f"bad-{uuid.uuid4().hex[:6]}", "analyst", hospitals=bad)
    with pytest.raises(InvalidKeyField, match="at most 50"):
        store.create("too-many", "analyst", hospitals=[f"h{i}" for i in range(51)])


def test_keys_cli_scopes_a_key(tmp_path, monkeypatch):
    import json

    from yuyue.config import get_settings
    from yuyue.serving.keys_cli import keys_app

    monkeypatch.setenv("YUYUE_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("YUYUE_DATABASE_URL", f"sqlite:///{tmp_path / 'keys.db'}")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        r = runner.invoke(
            keys_app, ["create", "desk-a", "--role", "supervisor", "--hospital", A, "--hospital", B]
        )
        assert r.exit_code == 0 and f"hospitals {A}, {B}" in r.output, r.output
        r = runner.invoke(keys_app, ["create", "group", "--role", "analyst"])
        assert r.exit_code == 0 and "every hospital" in r.output, r.output
        r = runner.invoke(keys_app, ["create", "bad", "--role", "analyst", "--hospital", " "])
        assert r.exit_code != 0 and "non-empty" in r.output, r.output
        r = runner.invoke(keys_app, ["list"])
        assert r.exit_code == 0 and f"{A},{B}" in r.output and " all " in r.output, r.output
        r = runner.invoke(keys_app, ["list", "--json"])
        assert [k["hospitals"] for k in json.loads(r.output)] == [[A, B], []]
    finally:
        get_settings.cache_clear()
