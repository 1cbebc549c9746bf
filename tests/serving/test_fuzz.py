"""Schemathesis against the ASGI app on SQLite and on PostgreSQL: generated requests for every
operation of the OpenAPI document, with an admin key; no 5xx, every status documented, every answer
true to its documented schema (issue 15). Bounded (about 20 s per database on a 2-core machine);
deselect with ``-m "not fuzz"``; the PostgreSQL run is also marked ``integration`` and skips when no
server answers (``tests/serving/conftest.py``)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.fuzz
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
EXAMPLES = 50  # per operation (about 20 s in all on the dev machine)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.integration),
    ],
)
def fuzzed(request, tmp_path_factory, test_settings, model):
    from fastapi.testclient import TestClient

    from yuyue.serving.app import create_app

    # PostgreSQL: the session's throwaway database, emptied afterwards; it rejects what SQLite takes
    # (NUL bytes, strings longer than their column), so it is fuzzed too
    database_url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    config = test_settings.model_copy(
        update={
            "var_dir": tmp_path_factory.mktemp("fuzz"),
            "database_url": database_url,
            "model_poll_seconds": 0,
            "rate_per_minute": 1_000_000,
            "auth_failures_per_minute": 1_000_000,
        }
    )
    app = create_app(config, model, "t1")
    assert app.state.yuyue.service.store.engine.dialect.name == ("postgresql" if database_url else "sqlite")
    key = app.state.yuyue.keys.create("fuzz", "admin")[1]
    with TestClient(app) as client:  # a chat, so that some requests find something
        headers = {"X-API-Key": key}
        client.post("/v1/conversations", json={"conversation_id": "fuzz-1"}, headers=headers)
        client.post(
            "/v1/conversations/fuzz-1/messages", json={"role": "visitor", "text": "你好"}, headers=headers
        )
        client.post("/v1/admin/reload", headers=headers)  # creates the registry's store once, not mid-run
        yield app, key
    if database_url is not None:
        from tests.serving.conftest import _drop_all_tables

        _drop_all_tables(database_url)


def test_the_api_answers_as_documented(fuzzed):
    """Every operation, positive and negative cases; all failures listed at the end."""
    app, key = fuzzed
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, calls = [], [0]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case):
            calls[0] += 1
            case.call_and_validate(headers={"X-API-Key": key}, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # keep going: report every operation that fails
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
    assert calls[0] >= len(operations) * 5
