"""Fixtures for the serving tests: real SQLite, PostgreSQL and Redis (no mocks).

- ``pg_url``: tests/conftest.py's (a throwaway PostgreSQL database for the session).
- ``redis_url``: Redis database 15 (``YUYUE_TEST_REDIS_URL`` to change). Skips when no
  server answers. Tests keep their keys under ``redis_prefix``.
- ``redis_prefix``: a key prefix unique to this test (``yuyue-test:<session>:<n>:``);
  every key under this session's prefix is deleted at the end of the session, so
  concurrent test runs sharing the server never touch each other's keys.
- ``sqlite_url``: ``sqlite:///<tmp_path>/yuyue.db``.
- ``db_url``: parametrized over ``sqlite`` and ``postgres``; the PostgreSQL variant drops
  every table after the test so each test starts from an empty database.
- ``engine``: ``serving.db.make_engine(db_url)``, disposed after the test.
- ``registry_settings``: ``registry_settings(poll_s)`` gives ``test_settings`` with a model registry of
  this test's own (var dir ``tmp_path``, MLflow store ``tmp_path/mlflow.db``) and the server polling it
  every ``poll_s`` seconds (0: reload only).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.conftest import SESSION_TAG

REDIS_DEFAULT = "redis://127.0.0.1:6379/15"
_counter = itertools.count()


@pytest.fixture(scope="session")
def _redis_session_url() -> Iterator[str]:
    import redis

    url = os.environ.get("YUYUE_TEST_REDIS_URL") or REDIS_DEFAULT
    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"Redis not reachable at {url} (run scripts/ensure_services.sh): {exc}")
    try:
        yield url
    finally:
        try:
            keys = list(client.scan_iter(match=f"yuyue-test:{SESSION_TAG}:*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture
def redis_url(_redis_session_url: str) -> str:
    return _redis_session_url


@pytest.fixture
def redis_prefix() -> str:
    return f"yuyue-test:{SESSION_TAG}:{next(_counter)}:"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'yuyue.db'}"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.integration),
    ]
)
def db_url(request) -> Iterator[str]:
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    url = request.getfixturevalue("pg_url")
    yield url
    _drop_all_tables(url)


def _drop_all_tables(url: str) -> None:
    import sqlalchemy as sa

    from yuyue.serving.db import make_engine

    engine = make_engine(url, poolclass=sa.pool.NullPool)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        meta.drop_all(engine)
    finally:
        engine.dispose()


@pytest.fixture
def engine(db_url):
    from yuyue.serving.db import make_engine

    eng = make_engine(db_url)
    yield eng
    eng.dispose()


# ---- the app with a key per role, on SQLite or PostgreSQL + Redis ---------------------------------
@pytest.fixture
def registry_settings(test_settings, tmp_path):
    def make(poll_s: float):
        return test_settings.model_copy(
            update={
                "var_dir": tmp_path,
                "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "model_poll_seconds": poll_s,
            }
        )

    return make


@pytest.fixture(params=["sqlite", pytest.param("postgres+redis", marks=pytest.mark.integration)])
def backend(request, tmp_path, test_settings):
    """Settings for one backend: SQLite + in-process cache, or PostgreSQL + Redis."""
    update = {"var_dir": tmp_path / "var", "model_poll_seconds": 0}
    if request.param == "postgres+redis":
        update["database_url"] = request.getfixturevalue("pg_url")
        update["redis_url"] = request.getfixturevalue("redis_url")
    yield test_settings.model_copy(update=update)
    if request.param == "postgres+redis":
        _drop_all_tables(update["database_url"])


@pytest.fixture
def api(backend, model):
    """A TestClient of the app with ``client.keys[who]`` headers for c01, c02 (consultants), sup, ana, adm
    and ``client.state`` (the app's shared state)."""
    from fastapi.testclient import TestClient

    from yuyue.serving.app import create_app

    app = create_app(backend, model, "t1")
    keys = app.state.yuyue.keys
    raw = {
        "c01": keys.create("wang", "consultant", consultant_id="c01")[1],
        "c02": keys.create("li", "consultant", consultant_id="c02")[1],
        "sup": keys.create("boss", "supervisor")[1],
        "ana": keys.create("ana", "analyst")[1],
        "adm": keys.create("root", "admin")[1],
    }
    with TestClient(app) as client:
        client.keys = {k: {"X-API-Key": v} for k, v in raw.items()}
        client.state = app.state.yuyue
        yield client
