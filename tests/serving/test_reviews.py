"""Reply review reaching serving (issue 14 §4): a decision made through the API changes the very next
suggestion of a running app, survives retraining (another bundle with the same reply text), hides
unreviewed mined replies when ``serve_unreviewed`` is off, is shared with ``yuyue replies``, and only
supervisors and admins may decide."""

# ruff: noqa: F811  (the api/backend fixtures come from test_api)
from __future__ import annotations

import copy

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.serving.test_api import _at, _open
from yuyue.models.replies.pool import PoolEntry, ReplyPool
from yuyue.models.replies.pool_cli import replies_app
from yuyue.serving.app import create_app
from yuyue.serving.store import suggestions

ASK = "你好，隆鼻大概多少钱？疼不疼"


@pytest.fixture(autouse=True)
def _detach(model):
    """The session's model is shared: no review hook outlives the test."""
    yield
    if model.suggester is not None:
        model.suggester.reviews = None


def _suggest(api, text=ASK, who="c01"):
    """Open a chat, send one visitor message; the suggestions shown as (pool reply id, text, source)."""
    cid = _open(api, who=who)
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": "visitor", "text": text, "at": _at(3)},
        headers=api.keys[who],
    )
    assert r.status_code == 200, r.text
    engine = api.app.state.yuyue.engine
    with engine.connect() as cx:
        rows = cx.execute(
            sa.select(suggestions.c.reply_id, suggestions.c.text, suggestions.c.source)
            .where(suggestions.c.conversation_id == cid)
            .order_by(suggestions.c.rank)
        ).all()
    assert [t for _, t, _ in rows] == [s["text"] for s in r.json()["suggestions"]]
    return [tuple(row) for row in rows]


def _review(api, rid, action, text=None, who="sup"):
    body = {"action": action} | ({"text": text} if text is not None else {})
    return api.post(f"/v1/replies/{rid}/review", json=body, headers=api.keys[who])


def _first_mined(shown):
    mined = [rid for rid, _, source in shown if source == "mined"]
    if not mined:
        pytest.skip("the test bundle suggests no mined reply for this chat")
    return mined[0]


def test_a_block_through_the_api_changes_the_very_next_suggestion(api):
    shown = _suggest(api)
    rid = _first_mined(shown)
    book = api.app.state.yuyue.reviews
    r = _review(api, rid, "block")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "blocked" and r.json()["reviewed_by"] == "boss"
    after = _suggest(api)
    assert rid not in [i for i, _, _ in after]
    assert after, "blocking one reply leaves the others"
    # listed as blocked, with the time it was shown before
    listed = api.get("/v1/replies", params={"status": "blocked"}, headers=api.keys["sup"]).json()
    assert [i["id"] for i in listed["items"]] == [rid]
    assert listed["items"][0]["usage"]["shown"] == 1
    # no read of the store per message: within refresh_s the decisions are not read again
    reads = book.reads
    for _ in range(3):
        _suggest(api)
    assert book.reads <= reads + 1
    # allowing it again brings it back
    assert _review(api, rid, "allow").status_code == 200
    assert rid in [i for i, _, _ in _suggest(api)]


def test_an_edit_is_served_and_must_pass_the_guard_and_hold_no_personal_data(api):
    shown = _suggest(api)
    rid = _first_mined(shown)
    new = "费用要看您的方案，面诊后医生会详细说明。"
    r = _review(api, rid, "edit", new)
    assert r.status_code == 200, r.text
    after = _suggest(api)
    assert (rid, new, "mined") in after
    bad = _review(api, rid, "edit", "保证治好，100%有效")
    assert bad.status_code == 422 and "compliance rule" in bad.text
    pii = _review(api, rid, "edit", "加我微信13812345678详细说")
    assert pii.status_code == 422 and "personal data" in pii.text
    assert _review(api, rid, "edit").status_code == 422  # no text
    assert _review(api, rid, "block", "x").status_code == 422  # text only with edit
    assert _review(api, "m000000000000", "block").status_code == 404
    # the failed edits changed nothing
    assert (rid, new, "mined") in _suggest(api)


def test_the_decision_survives_retraining(api, model):
    """Another bundle (a retrain) re-mines the same reply: new PoolEntry objects, other counts, other
    order; the decision keyed by the reply's text applies to it without any new review."""
    rid = _first_mined(_suggest(api))
    assert _review(api, rid, "block").status_code == 200
    old = model.suggester.pool
    entries = [PoolEntry.from_json({**e.to_json(), "count": e.count + 7}) for e in reversed(list(old))]
    retrained = copy.copy(model)
    retrained.suggester = copy.copy(model.suggester)
    retrained.suggester.pool = ReplyPool({e.id: e for e in entries}, old.base_rate)
    retrained.suggester.reviews = None
    state = api.app.state.yuyue
    state.models.set(retrained, "t2")  # what a reload of a new champion does
    try:
        assert retrained.suggester.reviews is state.reviews
        assert rid not in [i for i, _, _ in _suggest(api)]
        listed = api.get("/v1/replies", params={"status": "blocked"}, headers=api.keys["sup"]).json()
        assert [i["id"] for i in listed["items"]] == [rid]
    finally:
        state.models.set(model, "t1")


def test_serve_unreviewed_off_hides_unreviewed_mined_replies(backend, model):
    app = create_app(backend.model_copy(update={"serve_unreviewed": False}), model, "t1")
    keys = app.state.yuyue.keys
    raw = {
        "c01": keys.create("wang", "consultant", consultant_id="c01")[1],
        "sup": keys.create("boss", "supervisor")[1],
    }
    with TestClient(app) as client:
        client.keys = {k: {"X-API-Key": v} for k, v in raw.items()}
        shown = _suggest(client)
        assert all(source != "mined" for _, _, source in shown), shown
        listed = client.get(
            "/v1/replies", params={"status": "unreviewed", "limit": 500}, headers=client.keys["sup"]
        )
        assert listed.status_code == 200 and listed.json()["serve_unreviewed"] is False
        # allow every unreviewed mined reply of the page: mined replies come back
        ids = [i["id"] for i in listed.json()["items"]]
        assert ids
        model.suggester.reviews = None
    on = create_app(backend.model_copy(update={"serve_unreviewed": True}), model, "t1")
    with TestClient(on) as client:
        client.keys = {
            "c01": {"X-API-Key": on.state.yuyue.keys.create("w2", "consultant", consultant_id="c01")[1]}
        }
        mined = [rid for rid, _, source in _suggest(client) if source == "mined"]
    if not mined:
        pytest.skip("the test bundle suggests no mined reply for this chat")
    app.state.yuyue.reviews.decide(model.suggester.pool.get(mined[0]), "allow", actor="boss")
    app.state.yuyue.reviews.attach(model)
    with TestClient(app) as client:
        client.keys = {k: {"X-API-Key": v} for k, v in raw.items()}
        assert mined[0] in [rid for rid, _, _ in _suggest(client)]


def test_cli_and_api_see_the_same_decisions(api, backend, monkeypatch, tmp_path):
    rid = _first_mined(_suggest(api))
    pool_file = api.app.state.yuyue.models.get()[0].suggester.pool.save(tmp_path / "pool.jsonl")
    url = backend.resolved_database_url
    runner = CliRunner()
    res = runner.invoke(replies_app, ["block", rid, "--pool", str(pool_file), "--database", url])
    assert res.exit_code == 0, res.output
    listed = api.get("/v1/replies", params={"status": "blocked"}, headers=api.keys["sup"]).json()
    assert [i["id"] for i in listed["items"]] == [rid] and listed["items"][0]["reviewed_by"] == "cli"
    assert rid not in [i for i, _, _ in _suggest(api)]  # the running app applies the CLI's decision
    assert _review(api, rid, "edit", "您好，具体费用需要面诊后确定。").status_code == 200
    res = runner.invoke(
        replies_app, ["list", "--status", "edited", "--pool", str(pool_file), "--database", url]
    )
    assert (
        res.exit_code == 0
        and res.output.startswith(rid)
        and "=> 您好，具体费用需要面诊后确定。" in res.output
    )
    res = runner.invoke(replies_app, ["edit", rid, "保证治好", "--pool", str(pool_file), "--database", url])
    assert res.exit_code == 1 and "compliance rule" in res.output
    res = runner.invoke(
        replies_app, ["allow", rid, "m000000000000", "--pool", str(pool_file), "--database", url]
    )
    assert res.exit_code == 1 and "m000000000000" in res.output
    res = runner.invoke(
        replies_app, ["list", "--status", "edited", "--pool", str(pool_file), "--database", url]
    )
    assert "=> 您好" in res.output  # the failed commands changed nothing


def test_who_may_list_and_review(api):
    admin = api.keys["adm"]
    rid = next(iter(api.app.state.yuyue.models.get()[0].suggester.pool)).id
    want = {"c01": (403, 403), "sup": (200, 200), "ana": (200, 403), "admin": (200, 200), None: (401, 401)}
    for who, (list_status, review_status) in want.items():
        headers = admin if who == "admin" else (api.keys[who] if who else {})
        assert api.get("/v1/replies", headers=headers).status_code == list_status, who
        r = api.post(f"/v1/replies/{rid}/review", json={"action": "allow"}, headers=headers)
        assert r.status_code == review_status, (who, r.text)
    assert api.get("/v1/replies", params={"status": "nope"}, headers=api.keys["sup"]).status_code == 422
    r = api.post(f"/v1/replies/{rid}/review", json={"action": "delete"}, headers=api.keys["sup"])
    assert r.status_code == 422


def test_usage_counts_the_chats_of_the_keys_hospitals(api):
    """The replies serve every hospital; their usage counts the chats of the key's hospitals: a scoped key
    its own, a group-level key every hospital or ``?hospital=`` (403 for a hospital outside a scoped key)."""
    sup = api.keys["sup"]
    engine = api.app.state.yuyue.engine
    chats = []
    for hospital in ("Hosp-A", "Hosp-B", "Hosp-B"):  # every message first: feedback shifts the ranking
        cid = _open(api, who="sup", hospital=hospital)
        r = api.post(
            f"/v1/conversations/{cid}/messages",
            json={"role": "visitor", "text": ASK, "at": _at(3)},
            headers=sup,
        )
        assert r.status_code == 200 and r.json()["suggestions"], r.text
        chats.append(cid)
    with engine.connect() as cx:
        shown = {
            cid: dict(
                cx.execute(
                    sa.select(suggestions.c.reply_id, suggestions.c.id).where(
                        suggestions.c.conversation_id == cid, suggestions.c.reply_id.is_not(None)
                    )
                ).all()
            )
            for cid in chats
        }
    rid = next(r for r in shown[chats[0]] if all(r in shown[c] for c in chats))
    for cid, action in zip(chats, ("used", "dismissed", "used"), strict=True):
        r = api.post(f"/v1/suggestions/{shown[cid][rid]}/feedback", json={"action": action}, headers=sup)
        assert r.status_code == 200, r.text
    assert _review(api, rid, "block").status_code == 200  # the one reply listed as blocked

    def usage(headers, **params):
        r = api.get("/v1/replies", params={"status": "blocked", **params}, headers=headers)
        assert r.status_code == 200, r.text
        [item] = r.json()["items"]
        assert item["id"] == rid
        return item["usage"]

    keys = api.app.state.yuyue.keys
    a_sup = {"X-API-Key": keys.create("a-sup", "supervisor", hospitals=["Hosp-A"])[1]}
    a_ana = {"X-API-Key": keys.create("a-ana", "analyst", hospitals=["Hosp-A"])[1]}
    only_a = {"shown": 1, "used": 1, "edited": 0, "dismissed": 0, "acceptance_rate": 1.0}
    assert usage(sup) == {"shown": 3, "used": 2, "edited": 0, "dismissed": 1, "acceptance_rate": 0.6667}
    assert usage(sup, hospital="Hosp-A") == usage(a_sup) == usage(a_ana) == only_a
    assert usage(a_sup, hospital="Hosp-A") == only_a
    assert usage(sup, hospital="Hosp-B") == {
        "shown": 2,
        "used": 1,
        "edited": 0,
        "dismissed": 1,
        "acceptance_rate": 0.5,
    }
    assert usage(sup, hospital="Hosp-C")["shown"] == 0
    r = api.get("/v1/replies", params={"hospital": "Hosp-B"}, headers=a_sup)
    assert r.status_code == 403 and "'Hosp-B' is outside key 'a-sup'" in r.json()["detail"], r.text
    # the review's answer (a group-level key's) counts every hospital
    r = _review(api, rid, "allow")
    assert r.status_code == 200 and r.json()["usage"]["shown"] == 3, r.text
