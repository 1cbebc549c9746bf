"""The OpenAPI document is true to the answers (issue 15): error statuses with their real bodies,
security schemes, WWW-Authenticate on 401, Retry-After on 429/503, answer models that real
answers satisfy."""

# ruff: noqa: F811  (the api/backend fixtures come from test_api)
from __future__ import annotations

import pytest

from tests.serving.test_api import CHAT, _chat
from yuyue.serving import schemas


@pytest.fixture
def spec(api):
    return api.get("/openapi.json").json()


def _ops(spec):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield path, method, op


def test_security_schemes_and_where_they_apply(spec):
    schemes = spec["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "the API key: yy_<prefix>_<secret>",
    }
    assert schemes["HTTPBearer"]["type"] == "http" and schemes["HTTPBearer"]["scheme"] == "bearer"
    for path, method, op in _ops(spec):
        secured = {name for req in op.get("security", []) for name in req}
        if path.startswith("/v1/"):
            assert secured == {"APIKeyHeader", "HTTPBearer"}, (path, method)
            assert {"401", "429"} <= set(op["responses"]), (path, method)
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
            assert "Retry-After" in op["responses"]["429"]["headers"]
        else:
            assert not secured, (path, method)


def test_error_bodies_are_documented_as_they_are(spec):
    comp = spec["components"]["schemas"]
    assert comp["ValidationProblem"]["required"] == ["detail", "errors"]
    assert comp["ValidationProblem"]["properties"]["detail"]["type"] == "string"
    assert comp["ValidationProblem"]["properties"]["errors"]["type"] == "array"
    assert "HTTPValidationError" not in comp  # FastAPI's default (a list under detail) is not what we send
    for path, method, op in _ops(spec):
        for status, resp in op["responses"].items():
            ref = resp.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
            if status == "422":
                assert ref.endswith("/ValidationProblem"), (path, method)
            elif status[0] in "45" and path != "/readyz":
                assert ref.endswith("/Problem"), (path, method, status)
        if op.get("requestBody"):
            assert {"400", "413", "422"} <= set(op["responses"]), (path, method)
    chat_ops = spec["paths"]["/v1/conversations/{conversation_id}/messages"]["post"]["responses"]
    assert {"200", "401", "403", "404", "409", "413", "422", "429", "503"} <= set(chat_ops)
    assert chat_ops["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/MessageScored")


def test_the_reload_answer_declares_the_hospitals_own_models(spec):
    """POST /v1/admin/reload names the hospitals served by their own model (issue 17) in a declared field,
    always there ({} when the champion scores every chat); previous and detail only when they apply
    (test_reload.py and test_per_hospital_models.py check the real answers against these)."""
    op = spec["paths"]["/v1/admin/reload"]["post"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Reloaded")
    assert "``hospitals``" in op["description"]
    reloaded = spec["components"]["schemas"]["Reloaded"]
    assert sorted(reloaded["required"]) == ["changed", "hospitals", "version"]
    hospitals = reloaded["properties"]["hospitals"]
    assert hospitals["type"] == "object" and hospitals["additionalProperties"] == {"type": "string"}
    assert "hospital code -> version" in hospitals["description"]
    assert "department -> version" in reloaded["properties"]["departments"]["description"]
    assert {"previous", "detail"} <= set(reloaded["properties"])


def test_real_answers_match_the_documented_models(api):
    h = api.keys["c01"]
    r = api.post("/v1/conversations", json={"started_at": "2025-03-05T14:02:11+08:00"}, headers=h)
    assert r.status_code == 201
    schemas.OpenedChat.model_validate(r.json())
    cid = r.json()["conversation_id"]
    answers = _chat(api, cid, messages=CHAT[:3])
    for answer in answers:
        schemas.MessageScored.model_validate(answer)
    schemas.ChatWithMessages.model_validate(api.get(f"/v1/conversations/{cid}", headers=h).json())
    # every kind of error body
    bad = api.post(f"/v1/conversations/{cid}/messages", json={"role": "bot"}, headers=h)
    assert bad.status_code == 422
    problem = schemas.ValidationProblem.model_validate(bad.json())
    assert {e.loc[-1] for e in problem.errors} == {"role", "text"}
    state_422 = api.post(f"/v1/conversations/{cid}/outcome", json={}, headers=h)  # a 422 from the service
    assert state_422.status_code == 422 and schemas.ValidationProblem.model_validate(state_422.json()).errors
    unauth = api.get("/v1/followups")
    assert unauth.status_code == 401 and unauth.headers["WWW-Authenticate"] == 'Bearer realm="yuyue"'
    schemas.Problem.model_validate(unauth.json())
    for r in (api.get("/v1/conversations/nope", headers=h), api.get("/v1/export", headers=h)):
        assert r.status_code in (403, 404) and set(r.json()) == {"detail"}
