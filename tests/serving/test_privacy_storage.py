"""Nothing raw outside the event store: Redis holds encrypted sessions, logs hold no message text or
bound parameters (errors included), the SQLite files and the session key are owner-only."""

from __future__ import annotations

import logging
import os
import stat
import uuid

import pytest
import redis
from fastapi.testclient import TestClient

from tests.serving.test_faults import ExclusiveLock
from yuyue.serving.app import create_app
from yuyue.serving.cache import session_cipher

PHONE = "13966012847"
WECHAT = "lucy_0921"
T0 = "2025-03-05T14:02:11+08:00"


@pytest.fixture
def setup(tmp_path, test_settings, model, redis_url, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, SQLAlchemy's included
    settings = test_settings.model_copy(
        update={
            "var_dir": tmp_path / "var",
            "model_poll_seconds": 0,
            "redis_url": redis_url,
            "sqlite_busy_timeout_ms": 100,
        }
    )
    app = create_app(settings, model, "t1")
    raw = app.state.yuyue.keys.create("wang", "consultant", consultant_id="c01")[1]
    cids: list[str] = []
    with TestClient(app) as client:
        client.headers["X-API-Key"] = raw
        yield client, settings, cids
    with redis.Redis.from_url(redis_url) as r:
        for cid in cids:
            r.delete(f"yuyue:session:{cid}")


def _chat(client, cids) -> str:
    cid = "p-" + uuid.uuid4().hex[:10]
    cids.append(cid)
    r = client.post("/v1/conversations", json={"conversation_id": cid, "started_at": T0, "project": "隆鼻"})
    assert r.status_code == 201, r.text
    for i, text in enumerate(["你好，隆鼻多少钱", f"我姓王，电话{PHONE}，微信{WECHAT}"]):
        r = client.post(
            f"/v1/conversations/{cid}/messages",
            json={"role": "visitor", "text": text, "at": f"2025-03-05T14:0{3 + i}:00+08:00", "seq": i},
        )
        assert r.status_code == 200, r.text
    return cid


def test_redis_session_blobs_hold_no_raw_personal_data(setup, redis_url):
    client, settings, cids = setup
    cid = _chat(client, cids)
    with redis.Redis.from_url(redis_url) as r:
        blob = r.get(f"yuyue:session:{cid}")
    assert blob is not None
    for needle in (PHONE, PHONE[3:7] + PHONE[7:], WECHAT, "我姓王"):
        assert needle.encode() not in blob, needle
    # the control: the cipher's own key reads the phone back (so the grep above could have failed)
    plain = session_cipher(settings).decrypt(blob[8:], f"yuyue:session:{cid}".encode() + blob[:8])
    assert PHONE.encode() in plain
    # and the live consultant view still shows it (the session is read back from Redis by a new worker)
    client.app.state.yuyue.service.cache.near.clear()
    r = client.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": "consultant", "text": "好的王女士", "at": "2025-03-05T14:09:00+08:00", "seq": 2},
    )
    assert r.status_code == 200 and PHONE in str(r.json()["entities"]["contacts"])
    assert client.app.state.yuyue.service.cache_misses == 0


def test_logs_hold_no_message_text_also_on_errors(setup, caplog, tmp_path):
    client, settings, cids = setup
    cid = _chat(client, cids)
    body = {"role": "visitor", "text": f"再说一次电话{PHONE}", "at": "2025-03-05T14:09:00+08:00", "seq": 2}
    with ExclusiveLock(tmp_path / "var" / "yuyue.db"):
        r = client.post(f"/v1/conversations/{cid}/messages", json=body)
    assert r.status_code == 503
    assert PHONE not in r.text
    assert "database error" in caplog.text  # the error was logged ...
    assert PHONE not in caplog.text and WECHAT not in caplog.text  # ... without the text or parameters
    assert PHONE[3:7] not in caplog.text


def test_store_files_and_session_key_are_owner_only(setup, tmp_path):
    client, settings, cids = setup
    _chat(client, cids)
    var = tmp_path / "var"
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in var.iterdir() if p.name.startswith("yuyue.db")}
    assert {"yuyue.db", "yuyue.db-wal", "yuyue.db-shm"} <= set(files), files
    assert set(files.values()) == {0o600}, files
    key = var / "secrets" / "session.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert key.stat().st_uid == os.getuid()
