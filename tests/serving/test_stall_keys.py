"""A locked ``api_keys`` table holds up only the requests of keys not yet cached (issue 15).

A real uvicorn server (in a thread of this process, so it has a real event loop) on PostgreSQL; another
connection takes ``LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE``. A request with a key the server
has not seen yet must look the key up: it waits out ``lock_timeout`` in a worker thread and gets a 503
with ``Retry-After``, while ``/healthz`` and a cached key's request keep being answered. Before the
look-up moved off the event loop, ``/healthz`` got no answer while the look-up waited.

No absolute timing asserts: the test counts ``/healthz`` answers during the look-up's wait.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port, in a daemon thread; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_locked_api_keys_table_holds_up_new_keys_only(pg_url, test_settings, model, tmp_path):
    import httpx
    import psycopg

    from tests.serving.conftest import _drop_all_tables
    from yuyue.serving.app import create_app

    config = test_settings.model_copy(
        update={
            "var_dir": tmp_path,
            "database_url": pg_url,
            "model_poll_seconds": 0,
            "db_lock_timeout_ms": 1000,
        }
    )
    app = create_app(config, model, "t1")
    keys = app.state.yuyue.keys
    cached_key = keys.create("cached", "admin")[1]
    new_key = keys.create("new", "admin")[1]
    try:
        with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
            # the cached key's first request looks it up (table not locked yet): cached for 5 s
            assert client.get("/v1/conversations/nope", headers={"X-API-Key": cached_key}).status_code == 404
            locker = psycopg.connect(pg_url)
            try:
                locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
                answer: dict[str, object] = {}

                def new_keys_request() -> None:
                    t0 = time.perf_counter()
                    with httpx.Client(base_url=base, timeout=30) as other:
                        r = other.get("/v1/conversations/nope", headers={"X-API-Key": new_key})
                    answer.update(status=r.status_code, retry=r.headers.get("retry-after"))
                    answer["seconds"] = time.perf_counter() - t0

                waiting = threading.Thread(target=new_keys_request)
                waiting.start()
                healthz, cached_statuses = 0, []
                while waiting.is_alive():
                    assert client.get("/healthz").status_code == 200
                    healthz += 1
                    if healthz % 20 == 0:  # a cached key is not held up either
                        cached = client.get("/v1/conversations/nope", headers={"X-API-Key": cached_key})
                        cached_statuses.append(cached.status_code)
                    time.sleep(0.01)
                waiting.join()
            finally:
                locker.rollback()
                locker.close()
            # the lock released: the new key is looked up and works
            assert client.get("/v1/conversations/nope", headers={"X-API-Key": new_key}).status_code == 404
    finally:
        _drop_all_tables(pg_url)  # the server's shutdown disposed of its engine

    # the look-up waited out lock_timeout (1 s) and answered 503 with Retry-After ...
    assert answer["status"] == 503 and answer["retry"], answer
    # ... while the event loop kept answering: /healthz polled every ~10 ms got many answers meanwhile
    # (on the loop, the look-up blocked it: /healthz got at most the one answer it was waiting for)
    assert healthz >= 10, (healthz, answer)
    assert cached_statuses and set(cached_statuses) == {404}, cached_statuses
