"""The challenger in the shadow (issue 18): its scores are the ones it would serve, stored with each
message and never shown; it can fail without harming the champion's answer; ``yuyue models shadow``
sets and removes it through the registry, and the server follows."""

from __future__ import annotations

import copy
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from yuyue.serving import shadow as shadow_module
from yuyue.serving.shadow import CHALLENGER, Shadow, fast_text, probabilities, shadow_of
from yuyue.serving.store import events
from yuyue.training import registry

TZ = timezone(timedelta(hours=8))
T0 = datetime(2025, 3, 5, 14, 0, tzinfo=TZ)
CHAT = [
    ("visitor", "你好，双眼皮多少钱？会不会很疼"),
    ("consultant", "您好，请问怎么称呼？我们这边有专家面诊"),
    ("visitor", "姓王，明天下午可以去看看吗"),
    ("consultant", "可以的王女士，明天下午2点给您预约，方便留个电话吗"),
    ("visitor", "13812345678"),
]


def other_version(model):
    other = copy.copy(model)
    other.scorers = {"booked": model.scorers["arrived"], "arrived": model.scorers["arrived"]}
    return other


def post_chat(api, cid: str) -> list[dict]:
    h = api.keys["c01"]
    r = api.post("/v1/conversations", json={"conversation_id": cid, "started_at": T0.isoformat()}, headers=h)
    assert r.status_code == 201, r.text
    answers = []
    for i, (role, text) in enumerate(CHAT):
        at = (T0 + timedelta(seconds=30 * (i + 1))).isoformat()
        r = api.post(
            f"/v1/conversations/{cid}/messages", json={"role": role, "text": text, "at": at}, headers=h
        )
        assert r.status_code == 200, r.text
        answers.append(r.json())
    return answers


def stored(api, cid: str) -> list[dict]:
    with api.state.engine.connect() as cx:
        rows = cx.execute(
            sa.select(events.c.payload)
            .where(events.c.conversation_id == cid, events.c.kind == "message")
            .order_by(events.c.seq)
        ).all()
    return [orjson.loads(p) for (p,) in rows]


def test_shadow_scores_are_what_the_challenger_would_serve(api, model):
    challenger = other_version(model)
    shadow_of(api.state.service).set(challenger, "t2")
    answers = post_chat(api, "shadow-1")
    payloads = stored(api, "shadow-1")
    assert [p["shadow"]["version"] for p in payloads] == ["t2"] * len(CHAT)
    # replay the chat through the challenger as if it served: the same probabilities
    session, _ = challenger.open_chat(started_at=T0, consultant_id="c01")
    for i, ((role, text), p) in enumerate(zip(CHAT, payloads, strict=True)):
        challenger.on_message(session, role, text, T0 + timedelta(seconds=30 * (i + 1)), suggest=False)
        served = {k: s.probability for k, s in challenger.score(session.state).items()}
        assert p["shadow"]["scores"] == pytest.approx(served, abs=1e-6)
        assert probabilities(challenger, session) == pytest.approx(served, abs=1e-6)
        assert p["shadow"]["scores"]["booked"] != pytest.approx(p["scores"]["booked"], abs=1e-6)
    # the consultant's answers and reads show the champion only
    assert all("shadow" not in a and a["model_version"] == "t1" for a in answers)
    view = api.get("/v1/conversations/shadow-1", headers=api.keys["c01"]).json()
    assert all("shadow" not in m and set(m["scores"]) == {"booked", "arrived"} for m in view["messages"])
    assert shadow_of(api.state.service).timing()["n"] == len(CHAT)


def test_fast_text_row_is_the_feature_spaces(model):
    session, _ = model.open_chat(started_at=T0, consultant_id="c01")
    for i, (role, text) in enumerate(CHAT * 3):
        model.on_message(session, role, text, T0 + timedelta(seconds=30 * (i + 1)), suggest=False)
        exact = model.space.state_text(session.state).toarray()
        fast = fast_text(model, session).toarray()
        assert np.abs(fast - exact).max() < 1e-6


def test_a_fast_row_that_differs_is_dropped_for_the_exact_one(model, monkeypatch):
    shadow = Shadow()
    shadow.set(other_version(model), "t2")
    session, _ = model.open_chat(started_at=T0)
    model.on_message(session, "visitor", CHAT[0][1], T0, suggest=False)
    monkeypatch.setattr(shadow_module, "fast_text", lambda m, s: m.space.state_text(s.state) * 0.0)
    message: dict = {"model_version": "t1"}
    shadow.score(session, message)
    assert shadow.fast is False
    assert message["shadow"]["scores"] == probabilities(other_version(model), session)


def test_a_failing_challenger_never_harms_the_answer(api, model):
    class Broken:
        def predict_proba_arrays(self, *_):
            raise RuntimeError("boom")

    broken = copy.copy(model)
    broken.scorers = {"booked": Broken()}
    shadow = shadow_of(api.state.service)
    shadow.set(broken, "bad")
    answers = post_chat(api, "shadow-2")
    assert all(a["scores"]["booked"]["probability"] > 0 for a in answers)
    assert all("shadow" not in p for p in stored(api, "shadow-2"))
    assert shadow.failures == len(CHAT)


def test_no_shadow_without_a_challenger_or_when_it_is_the_champion(api, model):
    post_chat(api, "shadow-3")
    assert all("shadow" not in p for p in stored(api, "shadow-3"))
    shadow_of(api.state.service).set(model, "t1")  # the champion's own version
    post_chat(api, "shadow-4")
    assert all("shadow" not in p for p in stored(api, "shadow-4"))


@pytest.fixture
def cli_settings(tmp_path, monkeypatch):
    from yuyue.config import get_settings

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("YUYUE_MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("YUYUE_VAR_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield uri
    get_settings.cache_clear()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the registry's part; the store's is above
def test_models_shadow_sets_the_alias_and_the_server_follows(api, model, tmp_path, cli_settings):
    from yuyue.cli.main import app

    uri = cli_settings
    settings = api.state.settings.model_copy(
        update={"mlflow_tracking_uri": uri, "var_dir": tmp_path, "model_poll_seconds": 0.2}
    )
    bundle = model.save(tmp_path / "bundle")
    _, v1 = registry.log_and_register(other_version(model), bundle, {}, settings=settings)
    runner = CliRunner()
    bad = runner.invoke(app, ["models", "shadow", "99"])
    assert bad.exit_code == 1 and "no version '99'" in bad.output
    r = runner.invoke(app, ["models", "shadow", v1])
    assert r.exit_code == 0, r.output
    assert registry.alias_version(CHALLENGER, settings) == v1
    # the server's shadow follows the registry (checked in the background when due)
    shadow = shadow_of(api.state.service)
    shadow.settings = settings
    deadline = time.monotonic() + 60
    while shadow.version != v1 and time.monotonic() < deadline:
        post_chat(api, f"follow-{time.monotonic_ns()}")
        time.sleep(0.3)
    assert shadow.version == v1
    answers = post_chat(api, "shadow-5")
    assert {p["shadow"]["version"] for p in stored(api, "shadow-5")} == {v1}
    assert all("shadow" not in a for a in answers)
    # the champion cannot also be the challenger
    registry.promote(v1, settings)
    same = runner.invoke(app, ["models", "shadow", v1])
    assert same.exit_code == 1 and "is the champion" in same.output
    off = runner.invoke(app, ["models", "shadow", "--off"])
    assert off.exit_code == 0 and f"challenger {v1} removed" in off.output
    assert registry.alias_version(CHALLENGER, settings) is None
    assert Shadow(settings).refresh() == {"challenger": None, "changed": False}
    assert shadow.refresh() == {"challenger": None, "changed": True} and shadow.get() is None
