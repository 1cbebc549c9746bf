"""Slow or failing dependencies through the API: a locked database answers 503 with Retry-After and
stores nothing, /healthz answers while a store call is stuck, a silent Redis is skipped.

The whole-server version, with load and a private redis-server, is ``bench/fault_test.py``.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid

import pytest
from fastapi.testclient import TestClient

from tests.serving.test_cache import SilentServer
from yuyue.serving.app import create_app

T0 = "2025-03-05T14:02:11+08:00"


def _at(minute: int) -> str:
    return f"2025-03-05T14:{minute:02d}:00+08:00"


@pytest.fixture
def make_api(tmp_path, test_settings, model):
    clients = []

    def make(**update):
        settings = test_settings.model_copy(
            update={"var_dir": tmp_path / "var", "model_poll_seconds": 0, **update}
        )
        app = create_app(settings, model, "t1")
        raw = app.state.yuyue.keys.create("wang", "consultant", consultant_id="c01")[1]
        client = TestClient(app)
        client.__enter__()
        client.headers["X-API-Key"] = raw
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def _open(api) -> str:
    cid = "f-" + uuid.uuid4().hex[:10]
    r = api.post("/v1/conversations", json={"conversation_id": cid, "started_at": T0, "project": "隆鼻"})
    assert r.status_code == 201, r.text
    return cid


class ExclusiveLock:
    """Another process's writer holding ``BEGIN EXCLUSIVE`` on the SQLite file until released."""

    def __init__(self, path):
        self.cx = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def __enter__(self):
        self.cx.execute("BEGIN EXCLUSIVE")
        return self

    def release(self):
        if self.cx.in_transaction:
            self.cx.execute("ROLLBACK")

    def __exit__(self, *exc):
        self.release()
        self.cx.close()


def test_locked_sqlite_answers_503_with_retry_after_and_stores_nothing(make_api, tmp_path):
    api = make_api(sqlite_busy_timeout_ms=100)
    cid = _open(api)
    assert (
        api.post(
            f"/v1/conversations/{cid}/messages", json={"role": "visitor", "text": "你好", "at": _at(3)}
        ).json()["seq"]
        == 0
    )
    body = {"role": "visitor", "text": "隆鼻多少钱", "at": _at(4), "seq": 1}
    with ExclusiveLock(tmp_path / "var" / "yuyue.db"):
        r = api.post(f"/v1/conversations/{cid}/messages", json=body)
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert "locked" in r.json()["detail"]
        again = api.post(f"/v1/conversations/{cid}/messages", json=body)  # the gate answers at once
        assert again.status_code == 503 and "locked" in again.json()["detail"]
    gate = api.app.state.yuyue.service.store._gate
    assert gate.trips == 1
    # (instead of waiting out the hold second; the raw read below writes an audit row, so it is gated too)
    gate._tripped_at = -float("inf")
    stored = api.get(f"/v1/conversations/{cid}").json()["messages"]
    assert [m["seq"] for m in stored] == [0]  # nothing half-stored
    r = api.post(f"/v1/conversations/{cid}/messages", json=body)  # the client's retry, same seq
    assert r.status_code == 200 and r.json()["seq"] == 1
    assert [m["seq"] for m in api.get(f"/v1/conversations/{cid}").json()["messages"]] == [0, 1]


def test_healthz_answers_while_a_store_write_waits_on_a_lock(make_api, tmp_path):
    api = make_api(sqlite_busy_timeout_ms=20_000)  # the write waits as long as the lock is held
    cid = _open(api)
    answers = []
    with ExclusiveLock(tmp_path / "var" / "yuyue.db") as lock:
        writer = threading.Thread(
            target=lambda: answers.append(
                api.post(
                    f"/v1/conversations/{cid}/messages",
                    json={"role": "visitor", "text": "你好", "at": _at(3)},
                )
            )
        )
        writer.start()
        writer.join(0.5)  # let it reach the store
        assert writer.is_alive(), "the write should be waiting on the lock"
        for _ in range(5):
            assert api.get("/healthz").json() == {"status": "ok"}
        assert writer.is_alive()  # /healthz answered while the write was still stuck
        lock.release()
        writer.join(30)
    assert answers and answers[0].status_code == 200 and answers[0].json()["seq"] == 0


def test_silent_redis_is_skipped_and_every_message_answered(make_api):
    silent = SilentServer()
    try:
        api = make_api(redis_url=f"redis://127.0.0.1:{silent.port}/0", redis_cooldown_s=60)
        cid = _open(api)
        texts = ["你好，隆鼻多少钱", "您好，请问怎么称呼？", "我姓王", "王女士您好", "周六可以去吗", "可以的"]
        for i, text in enumerate(texts):
            role = "visitor" if i % 2 == 0 else "consultant"
            r = api.post(
                f"/v1/conversations/{cid}/messages",
                json={"role": role, "text": text, "at": _at(3 + i), "seq": i},
            )
            assert r.status_code == 200 and r.json()["seq"] == i
        state = api.app.state.yuyue
        assert state.service.cache.far.breaker.trips == 1 and state.limiter._breaker.trips == 1
        assert state.service.cache_misses == 0  # every message used this worker's copy
        # one timed-out command each for the cache and the rate limiter, nothing per message
        assert silent.commands <= 2
        r = api.get("/readyz")
        assert r.status_code == 503 and any("redis" in p for p in r.json()["problems"])
    finally:
        silent.close()
