"""Data-subject rights on SQLite (in-process cache) and PostgreSQL (+ Redis): erase, access, purge by
age, the audit log and who may use them.

Erasure is checked by reading every text column of every table back and looking for the visitor's
phone (as typed and as digits), WeChat id and full name; the chat's statistics (its row, the funnel)
must not move, the consultant's view and the export show masked text, and the chat takes new messages.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from typer.testing import CliRunner

from yuyue.serving.privacy import purge
from yuyue.serving.store_cli import store_app

PHONE = "13966012847"
SPACED = f"{PHONE[:3]} {PHONE[3:7]} {PHONE[7:]}"
WECHAT = "lucy_0921x"
NAME = "张海涛"
SECRETS = (PHONE, SPACED, WECHAT, NAME)

CHAT = [
    ("visitor", "你好，隆鼻大概多少钱？疼不疼"),
    ("consultant", "您好，请问怎么称呼您？"),
    ("visitor", f"我叫{NAME}，电话{SPACED}，微信{WECHAT}"),
    ("consultant", f"好的{NAME}先生，我记下了{PHONE}，稍后联系您"),
    ("visitor", "周六可以去吗"),
]


def _open(api, started: datetime | None = None, who: str = "c01") -> str:
    body = {"started_at": (started or datetime(2025, 3, 5, 14, 0, tzinfo=UTC)).isoformat()}
    r = api.post("/v1/conversations", json=body, headers=api.keys[who])
    assert r.status_code == 201, r.text
    return r.json()["conversation_id"]


def _chat(api, cid, start: datetime | None = None, messages=CHAT, who="c01") -> list[dict]:
    start = start or datetime(2025, 3, 5, 14, 1, tzinfo=UTC)
    out = []
    for i, (role, text) in enumerate(messages):
        at = (start + timedelta(minutes=i)).isoformat()
        r = api.post(
            f"/v1/conversations/{cid}/messages",
            json={"role": role, "text": text, "at": at},
            headers=api.keys[who],
        )
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def _texts(engine) -> list[tuple[str, str, str]]:
    """Every non-empty text value in the database: (table, column, value)."""
    out = []
    inspector = sa.inspect(engine)
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.connect() as cx:
        for table in meta.sorted_tables:
            cols = [c for c in inspector.get_columns(table.name) if isinstance(c["type"], sa.String)]
            for col in cols:
                for (value,) in cx.execute(sa.select(table.c[col["name"]])):
                    if value:
                        out.append((table.name, col["name"], value))
    return out


def _leaks(engine) -> list[tuple[str, str, str]]:
    return [(t, c, v[:80]) for t, c, v in _texts(engine) if any(s in v for s in SECRETS)]


def _row(engine, cid) -> dict:
    from yuyue.serving.store import conversations

    with engine.connect() as cx:
        return dict(cx.execute(sa.select(conversations).where(conversations.c.id == cid)).mappings().one())


def _audit(api, **params) -> list[dict]:
    r = api.get("/v1/audit", params=params, headers=api.keys["adm"])
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_erase_masks_the_chat_everywhere_and_keeps_its_statistics(api):
    engine = api.state.engine
    cid = _open(api)
    answers = _chat(api, cid)
    # the consultant edits a suggestion with the visitor's name and phone in it
    sug = answers[2]["suggestions"][0]["id"]
    r = api.post(
        f"/v1/suggestions/{sug}/feedback",
        headers=api.keys["c01"],
        json={"action": "edited", "final_text": f"{NAME}先生您好，{PHONE}是您的电话吗"},
    )
    assert r.status_code == 200, r.text
    r = api.post(f"/v1/conversations/{cid}/outcome", json={"booked": True}, headers=api.keys["sup"])
    assert r.status_code == 200, r.text
    other = _open(api)
    _chat(api, other, messages=CHAT[:3])

    assert {t for t, _, _ in _leaks(engine)} >= {"events", "suggestions"}  # raw before, as the test expects
    before = _row(engine, cid)
    funnel = api.get("/v1/funnel", headers=api.keys["sup"]).json()
    raw_view = api.get(f"/v1/conversations/{cid}", headers=api.keys["c01"]).json()
    assert not raw_view["masked"] and SPACED in raw_view["messages"][2]["text"]

    r = api.delete(f"/v1/conversations/{cid}/personal-data", headers=api.keys["sup"])
    assert r.status_code == 200, r.text
    assert r.json()["changed"]["messages"] >= 2 and r.json()["changed"]["suggestions"] >= 1

    # nothing of this chat's visitor is left raw anywhere in the database (the other chat keeps its own)
    leaks = _leaks(engine)
    assert all(cid not in v for _, _, v in leaks)
    with engine.connect() as cx:
        from yuyue.serving.store import events, suggestions

        payloads = cx.execute(sa.select(events.c.payload).where(events.c.conversation_id == cid)).scalars()
        texts = cx.execute(
            sa.select(suggestions.c.text, suggestions.c.final_text).where(
                suggestions.c.conversation_id == cid
            )
        ).all()
    blob = "\n".join([*payloads, *(t or "" for row in texts for t in row)])
    assert not [s for s in SECRETS if s in blob], blob
    assert f"{PHONE[:3]}****{PHONE[-4:]}" in blob  # masked the project's way
    assert _row(engine, other)["n_messages"] == 3 and any(SPACED in v for _, _, v in leaks)

    # statistics unchanged: the chat's row and the funnel
    assert _row(engine, cid) == before
    assert api.get("/v1/funnel", headers=api.keys["sup"]).json() == funnel
    # the cached session is gone (this worker's, and Redis' on the PostgreSQL backend)
    assert api.state.service.cache.get(cid) is None

    # the consultant's raw view and the export show masked text
    view = api.get(f"/v1/conversations/{cid}", headers=api.keys["c01"]).json()
    assert all(s not in m["text"] for m in view["messages"] for s in SECRETS)
    assert view["messages"][2]["text"].startswith("我叫***")
    export = [json.loads(line) for line in api.get("/v1/export", headers=api.keys["ana"]).text.splitlines()]
    mine = next(rec for rec in export if rec["conversation_id"] == cid)
    assert [m["text"] for m in mine["messages"]] == [m["text"] for m in view["messages"]]

    # the chat takes messages again: its session is rebuilt from the masked store
    nxt = api.post(
        f"/v1/conversations/{cid}/messages",
        headers=api.keys["c01"],
        json={"role": "visitor", "text": "那周日呢", "at": "2025-03-05T14:30:00+00:00"},
    )
    assert nxt.status_code == 200, nxt.text
    assert nxt.json()["seq"] == 5 and all(c["type"] != "phone" for c in nxt.json()["entities"]["contacts"])

    # idempotent: a second erasure changes nothing; unknown chats are 404
    again = api.delete(f"/v1/conversations/{cid}/personal-data", headers=api.keys["adm"])
    assert again.status_code == 200 and again.json()["changed"] == {
        "messages": 0,
        "events": 0,
        "suggestions": 0,
    }
    assert api.delete("/v1/conversations/nope/personal-data", headers=api.keys["sup"]).status_code == 404

    erased = _audit(api, action="erase")
    assert [(e["actor"], e["role"], e["conversation_id"]) for e in erased] == [
        ("root", "admin", cid),
        ("boss", "supervisor", cid),
    ]
    reads = _audit(api, action="read_raw", conversation_id=cid)
    assert [(e["actor"], e["role"]) for e in reads] == [("wang", "consultant")] * 2
    exports = _audit(api, action="export")
    assert [e["actor"] for e in exports] == ["ana"]


def test_access_returns_the_visitors_data_and_is_recorded(api):
    cid = _open(api)
    _chat(api, cid)
    api.post(f"/v1/conversations/{cid}/outcome", json={"booked": True}, headers=api.keys["sup"])
    r = api.get(f"/v1/conversations/{cid}/personal-data", headers=api.keys["sup"])
    assert r.status_code == 200, r.text
    data = r.json()
    assert [m["seq"] for m in data["messages"]] == [0, 2, 4]  # what the visitor sent, not the consultant
    assert SPACED in data["messages"][1]["text"]
    found = {(d["type"], d["value"]) for d in data["detected"]}
    assert {("phone", PHONE), ("wechat", WECHAT)} <= found
    assert any(d["type"] == "surname" and d["text"] == NAME for d in data["detected"])
    assert data["entities"]["surname"] == "张" and data["entities"]["contact_kinds"]
    assert data["outcome"]["booked"] is True and data["outcome"]["contact_seen"] is True
    assert data["started_at"].startswith("2025-03-05") and data["erased"] is None
    assert api.get("/v1/conversations/nope/personal-data", headers=api.keys["sup"]).status_code == 404

    entries = _audit(api, action="access")
    assert [(e["actor"], e["role"], e["conversation_id"]) for e in entries] == [("boss", "supervisor", cid)]
    assert json.loads(entries[0]["detail"]) == {"messages": 3, "detected": len(data["detected"])}

    api.delete(f"/v1/conversations/{cid}/personal-data", headers=api.keys["sup"])
    after = api.get(f"/v1/conversations/{cid}/personal-data", headers=api.keys["adm"]).json()
    assert after["erased"]["reason"] == "erase" and not [
        s for s in SECRETS if s in json.dumps(after, ensure_ascii=False)
    ]


def test_purge_masks_chats_older_than_the_retention(api, backend, monkeypatch, request):
    from yuyue.config import get_settings

    # the command line reads its settings from the environment: the same var_dir (the patient key)
    monkeypatch.setenv("YUYUE_VAR_DIR", str(backend.var_dir))
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    engine = api.state.engine
    now = datetime.now(UTC).replace(microsecond=0)
    old, recent = _open(api, now - timedelta(days=40)), _open(api, now - timedelta(days=2))
    _chat(api, old, start=now - timedelta(days=40) + timedelta(minutes=1))
    _chat(api, recent, start=now - timedelta(days=2) + timedelta(minutes=1))
    stats = {cid: _row(engine, cid) for cid in (old, recent)}

    out = purge(api.state.service.store, 30, actor="cli:test", role="cli", settings=backend)
    assert (out["conversations"], out["messages"]) == (1, 2)  # the 2 messages that held personal data
    leaks = _leaks(engine)
    assert leaks and all(old not in v for _, _, v in leaks)
    assert any(SPACED in v for _, _, v in leaks)  # the recent chat keeps its raw text
    assert {cid: _row(engine, cid) for cid in (old, recent)} == stats

    # idempotent, through the command line (with the setting's database URL)
    result = CliRunner().invoke(
        store_app, ["purge", "--older-than", "30", "--url", backend.resolved_database_url]
    )
    assert result.exit_code == 0, result.output
    assert "masked 0 conversations" in result.output
    # a message received after the purge is masked by the next one
    api.post(
        f"/v1/conversations/{old}/messages",
        headers=api.keys["c01"],
        json={
            "role": "visitor",
            "text": f"还是这个电话{PHONE}",
            "at": (now - timedelta(days=39)).isoformat(),
        },
    )
    assert purge(api.state.service.store, 30, actor="cli:test", settings=backend)["conversations"] == 1
    assert all(old not in v for _, _, v in _leaks(engine))
    # the 1-day retention reaches the recent chat too
    result = CliRunner().invoke(
        store_app, ["purge", "--older-than", "1", "--url", backend.resolved_database_url]
    )
    assert result.exit_code == 0 and "masked 1 conversations" in result.output, result.output
    assert _leaks(engine) == []

    purges = _audit(api, action="purge")
    assert len(purges) == 4 and {e["actor"] for e in purges} >= {"cli:test"}
    assert all(e["scope"].startswith("last_at < ") and e["conversation_id"] is None for e in purges)
    assert json.loads(purges[-1]["detail"])["conversations"] == 1

    bad = CliRunner().invoke(store_app, ["purge", "--url", backend.resolved_database_url])
    assert bad.exit_code == 1 and "retention_days" in bad.output


def test_who_may_erase_read_and_audit(api):
    cid = _open(api)
    _chat(api, cid, messages=CHAT[:3])
    expect = {  # key -> (erase, access, audit)
        "c01": (403, 403, 403),
        "c02": (403, 403, 403),
        "ana": (403, 403, 403),
        "sup": (200, 200, 403),
        "adm": (200, 200, 200),
    }
    for key, (erase, access, audit) in expect.items():
        h = api.keys[key]
        got = (
            api.delete(f"/v1/conversations/{cid}/personal-data", headers=h).status_code,
            api.get(f"/v1/conversations/{cid}/personal-data", headers=h).status_code,
            api.get("/v1/audit", headers=h).status_code,
        )
        assert got == (erase, access, audit), key
    assert api.get("/v1/audit").status_code == 401
    # only what was done is recorded: refused requests leave no rows
    assert {e["actor"] for e in _audit(api, action="erase")} == {"boss", "root"}


def test_the_audit_query_filters_and_names_bad_input(api):
    cid = _open(api)
    _chat(api, cid, messages=CHAT[:3])
    for _ in range(3):
        api.get(f"/v1/conversations/{cid}", headers=api.keys["c01"])
    api.get(f"/v1/conversations/{cid}", headers=api.keys["sup"])  # masked: not a raw read
    h = api.keys["adm"]
    page = api.get("/v1/audit", params={"actor": "wang", "limit": 2}, headers=h).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    assert api.get("/v1/audit", params={"actor": "boss"}, headers=h).json()["total"] == 0
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert api.get("/v1/audit", params={"since": future}, headers=h).json()["total"] == 0
    assert api.get("/v1/audit", params={"until": future}, headers=h).json()["total"] == 3
    r = api.get("/v1/audit", params={"action": "delete"}, headers=h)
    assert r.status_code == 422 and "action" in r.text
    r = api.get("/v1/audit", params={"since": "2025-03-05T00:00:00"}, headers=h)
    assert r.status_code == 422 and "since must carry a timezone offset" in r.text
