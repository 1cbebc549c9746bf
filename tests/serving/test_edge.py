"""The edge of the API (issue 15): inputs that used to crash, stall or poison a chat get a 4xx naming
the problem and store nothing, on SQLite and on PostgreSQL (where NUL bytes and column lengths bite).

Out-of-range and far-off timestamps, lone surrogates, NUL bytes, a region as long as the contract
allows, non-finite numbers, oversized bodies, and 422s that quote only a prefix of what was sent.
"""

# ruff: noqa: F811  (the api/backend fixtures come from test_api)
from __future__ import annotations

import asyncio
import json

import pytest
import sqlalchemy as sa

from tests.serving.test_api import CHAT, T0, _chat, _open

FAR_OFF = ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "2999-01-01T00:00:00+08:00"]


def _rows(api) -> dict[str, int]:
    """How many rows each table of the store holds."""
    engine = api.app.state.yuyue.engine
    with engine.connect() as cx:
        return {
            t: cx.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("conversations", "events", "suggestions")
        }


def _expect_422(r, *words):
    assert r.status_code == 422, (r.status_code, r.text[:500])
    body = r.json()
    assert isinstance(body["detail"], str) and isinstance(body["errors"], list) and body["errors"]
    for w in words:
        assert w in body["detail"], (w, body["detail"])
    return body


# ---- timestamps -------------------------------------------------------------------------------
@pytest.mark.parametrize("when", FAR_OFF)
def test_far_off_timestamps_are_422_everywhere_and_store_nothing(api, when):
    h, sup = api.keys["c01"], api.keys["sup"]
    cid = _open(api)
    _chat(api, cid, messages=CHAT[:2])
    sid = None
    before = _rows(api)
    cases = [
        (api.post("/v1/conversations", json={"started_at": when}, headers=h), "started_at"),
        (
            api.post("/v1/conversations", json={"visit": {"pages": [{"url": "/a", "at": when}]}}, headers=h),
            "visit.pages.0.at",
        ),
        (
            api.post(
                f"/v1/conversations/{cid}/messages",
                json={"role": "visitor", "text": "在吗", "at": when},
                headers=h,
            ),
            "at",
        ),
        (
            api.post(f"/v1/conversations/{cid}/outcome", json={"booked": True, "booked_at": when}, headers=h),
            "booked_at",
        ),
        (api.post(f"/v1/conversations/{cid}/outcome", json={"arrived_at": when}, headers=h), "arrived_at"),
        (api.get("/v1/followups", params={"since": when}, headers=sup), "since"),
        (api.get("/v1/stats/funnel", params={"until": when}, headers=sup), "until"),
        (api.get("/v1/export", params={"since": when}, headers=api.keys["ana"]), "since"),
    ]
    for r, field in cases:
        body = _expect_422(r, field)
        assert "days" in body["detail"] or "years 1-9999" in body["detail"], body["detail"]
    assert _rows(api) == before and sid is None
    # the chat is not poisoned: the next message with a real time is taken
    assert _chat(api, cid, messages=CHAT[2:3], start=30)[0]["seq"] == 2


def test_the_window_is_a_setting(api, backend, model):
    from fastapi.testclient import TestClient

    from yuyue.serving.app import create_app

    narrow = create_app(backend.model_copy(update={"time_window_days": (1.0, 0.5)}), model, "t1")
    key = narrow.state.yuyue.keys.create("w", "consultant", consultant_id="c09")[1]
    with TestClient(narrow) as client:
        r = client.post("/v1/conversations", json={"started_at": T0}, headers={"X-API-Key": key})
        body = _expect_422(r, "started_at", "within 1 days before and 0.5 days after now")
        assert body["errors"][0]["type"] == "datetime_outside_window"
        assert client.post("/v1/conversations", json={}, headers={"X-API-Key": key}).status_code == 201


# ---- characters no store can hold -------------------------------------------------------------
def _raw_post(api, url, text, key="c01"):
    return api.post(url, content=text.encode(), headers={**api.keys[key], "Content-Type": "application/json"})


@pytest.mark.parametrize("bad, name", [("\\ud800", "lone surrogate"), ("\\u0000", "NUL")])
def test_lone_surrogates_and_nul_bytes_are_422_naming_the_field(api, bad, name):
    cid = _open(api)
    first = _chat(api, cid, messages=CHAT[:1])[0]
    sid = first["suggestions"][0]["id"]
    before = _rows(api)
    bodies = [
        ("/v1/conversations", '{"hospital": "h%s"}', "hospital"),
        ("/v1/conversations", '{"consultant_id": "c01%s"}', "consultant_id"),
        ("/v1/conversations", '{"department": "%s"}', "department"),
        ("/v1/conversations", '{"visit": {"keyword": "隆鼻%s"}}', "visit.keyword"),
        ("/v1/conversations", '{"visit": {"region": "杭州%s"}}', "visit.region"),
        ("/v1/conversations", '{"visit": {"pages": [{"url": "/x", "title": "%s"}]}}', "visit.pages.0.title"),
        (f"/v1/conversations/{cid}/messages", '{"role": "visitor", "text": "你好%s"}', "text"),
        (f"/v1/suggestions/{sid}/feedback", '{"action": "edited", "final_text": "好%s"}', "final_text"),
    ]
    for url, template, field in bodies:
        r = _raw_post(api, url, template % bad)
        body = _expect_422(r, f"{field}: ", name)
        assert body["errors"][0]["type"] == "invalid_character"
    assert _rows(api) == before


def test_nul_bytes_in_query_filters_and_ids_are_422(api):
    sup = api.keys["sup"]
    for param in ("hospital", "department", "consultant"):
        _expect_422(api.get("/v1/followups", params={param: "a\x00b"}, headers=sup), param, "NUL")
        _expect_422(api.get("/v1/stats/funnel", params={param: "a\x00b"}, headers=sup), param)
    _expect_422(api.get("/v1/export", params={"hospital": "\x00"}, headers=api.keys["ana"]), "hospital")
    _expect_422(api.get("/v1/conversations/a%00b", headers=sup), "conversation_id")
    _expect_422(
        api.post("/v1/suggestions/a%00b/feedback", json={"action": "used"}, headers=sup), "suggestion_id"
    )
    _expect_422(
        api.post("/v1/conversations", json={"conversation_id": "a\x00"}, headers=sup), "conversation_id"
    )


# ---- lengths and numbers ----------------------------------------------------------------------
def test_a_region_as_long_as_the_contract_allows_is_stored(api):
    region = "浙江省杭州市西湖区" + "文" * 247  # 256 characters: the contract's limit, the column's too
    cid = _open(api, visit={"region": region})
    stored = api.get(f"/v1/conversations/{cid}", headers=api.keys["c01"]).json()["conversation"]
    assert stored["region"] in (region, "杭州市") and stored["visit"]["region"] == region
    before = _rows(api)
    r = api.post("/v1/conversations", json={"visit": {"region": region + "区"}}, headers=api.keys["c01"])
    _expect_422(r, "visit.region", "at most 256 characters")
    assert _rows(api) == before


def test_columns_are_as_long_as_the_contract_allows():
    """Every column that holds a contract field is at least as long as the contract allows."""
    from yuyue.serving.store import conversations

    schema = json.loads(open("data/schema/conversation.schema.json", encoding="utf-8").read())
    props = schema["properties"]
    limits = {
        name: props[name]["maxLength"]
        for name in ("conversation_id", "hospital", "department", "project", "consultant_id")
    }
    limits |= {name: props["visit"]["properties"][name]["maxLength"] for name in ("keyword", "region")}
    limits["id"] = limits.pop("conversation_id")
    for column, limit in limits.items():
        assert conversations.c[column].type.length >= limit, (
            column,
            conversations.c[column].type.length,
            limit,
        )


def test_a_count_that_could_not_be_exported_is_422(api):
    before = _rows(api)
    r = _raw_post(api, "/v1/conversations", '{"visit": {"visits_before": 100000000000000000000000000000}}')
    _expect_422(r, "visit.visits_before", "less than or equal to 1000000")
    assert _rows(api) == before


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_non_finite_numbers_are_422(api, number):
    before = _rows(api)
    r = _raw_post(
        api, "/v1/conversations", '{"visit": {"pages": [{"url": "/a", "dwell_s": ' + number + "}]}}"
    )
    _expect_422(r, "visit.pages.0.dwell_s")
    cid = _open(api)
    before = _rows(api)
    r = _raw_post(
        api, f"/v1/conversations/{cid}/messages", '{"role": "visitor", "text": "hi", "k": ' + number + "}"
    )
    _expect_422(r, "k")
    assert _rows(api) == before


# ---- size --------------------------------------------------------------------------------------
def test_a_422_quotes_only_a_prefix_of_what_was_sent(api):
    cid = _open(api)
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": "visitor", "text": "长" * 50_000},
        headers=api.keys["c01"],
    )
    body = _expect_422(r, "text", "at most 10000 characters")
    assert len(r.content) < 2_000, len(r.content)
    assert body["errors"][0]["input"].endswith("(50000 characters)")
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": "visitor", "text": "hi", "x" * 50_000: 1},
        headers=api.keys["c01"],
    )
    assert r.status_code == 422 and len(r.content) < 2_000, len(r.content)


def test_a_big_body_is_413_without_being_read(api):
    before = _rows(api)
    big = b'{"role": "visitor", "text": "' + b"x" * (20 * 1024 * 1024) + b'"}'
    r = api.post(
        "/v1/conversations/x/messages",
        content=big,
        headers={**api.keys["c01"], "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and "exceeds the limit of 262144 bytes" in r.json()["detail"], r.text[:300]
    # sent without a length (chunked): refused as soon as it passes the limit
    chunks = (b"x" * 65536 for _ in range(320))
    r = api.post(
        "/v1/conversations", content=chunks, headers={**api.keys["c01"], "Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text[:300]
    assert _rows(api) == before


def test_the_body_limit_reads_no_more_than_the_limit():
    """At the ASGI level: a 20 MB body announced by Content-Length is not read at all; an unannounced
    one is read only until it passes the limit."""
    from yuyue.serving.edge import EdgeMiddleware

    async def app(scope, receive, send):  # an endpoint that reads the whole body
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def run(headers, n_chunks=320, chunk=65536):
        read, sent = [0], []

        async def receive():
            read[0] += 1
            return {"type": "http.request", "body": b"x" * chunk, "more_body": read[0] < n_chunks}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/x",
            "headers": headers,
            "client": ("1.2.3.4", 1),
        }
        asyncio.run(EdgeMiddleware(app, max_body_bytes=256 * 1024)(scope, receive, send))
        return read[0], sent[0]["status"]

    assert run([(b"content-length", str(320 * 65536).encode())]) == (0, 413)
    read, status = run([])
    assert status == 413 and read == 5  # 4 chunks = the limit; the 5th passes it
    assert run([], n_chunks=2) == (2, 200)
