"""The reports' expected bookings / arrivals are the lead's score without the consultant (issue 17).

The open-time score reads the consultant's id (``meta.consultant=<id>``), so it holds the consultant's
learned skill; ``ChatService.open`` also scores the opening without the consultant and keeps it with
the ``open`` event (``p_booked_lead`` / ``p_arrived_lead``), and the desk reports subtract that. Chats
opened before it was stored fall back to their open-time score."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest
import sqlalchemy as sa

from tests.serving.test_reports import DAY, _open, _outcome, _report, _say

VISIT = {"engine": "baidu", "keyword": "杭州隆鼻多少钱", "region": "浙江省杭州市"}


def _open_payload(api, cid):
    from yuyue.serving.store import events

    with api.state.service.store.engine.connect() as cx:
        raw = cx.execute(
            sa.select(events.c.payload).where(events.c.conversation_id == cid, events.c.kind == "open")
        ).scalar_one()
    return orjson.loads(raw)


def _model_scores(api, at, consultant_id):
    from yuyue.data.contract import Visit

    model = api.state.service.models.get()[0]
    _, scores = model.open_chat(
        started_at=datetime.fromisoformat(f"{DAY}T{at}+08:00"),
        visit=Visit.model_validate(VISIT),
        department="整形美容",
        project="隆鼻",
        consultant_id=consultant_id,
    )
    return {t: s.probability for t, s in scores.items()}


def _c01(api):
    return {r["consultant_id"]: r for r in _report(api)["rows"]}["c01"]


def test_stored_lead_score_is_the_model_without_the_consultant(api):
    served = _open(api, "lead-a", "14:00:00")
    _say(api, "lead-a", "visitor", "隆鼻多少钱", "14:00:30")
    _outcome(api, "lead-a", booked=True)
    stored = _open_payload(api, "lead-a")
    blind = _model_scores(api, "14:00:00", None)
    with_c01 = _model_scores(api, "14:00:00", "c01")
    assert served["booked"]["probability"] == pytest.approx(with_c01["booked"], abs=1e-4)
    assert stored["p_booked"] == pytest.approx(with_c01["booked"])  # the score the desk saw: unchanged
    assert stored["p_booked_lead"] == pytest.approx(blind["booked"], abs=1e-9)
    assert stored["p_arrived_lead"] == pytest.approx(blind["arrived"], abs=1e-9)
    # the test model has a column for c01, so the two scores differ and the report must pick the lead's
    assert abs(blind["booked"] - with_c01["booked"]) > 1e-4, "the model ignores meta.consultant"
    row = _c01(api)
    assert row["scored_chats"] == 1
    assert row["expected_booked"] == pytest.approx(blind["booked"], abs=1e-3)
    assert row["expected_arrived"] == pytest.approx(blind["arrived"], abs=1e-3)
    assert row["booked_rate_adjusted"] == pytest.approx(1 - blind["booked"], abs=1e-3)
    assert row["arrived_rate_adjusted"] == pytest.approx(-blind["arrived"], abs=1e-3)


def test_chats_opened_before_the_lead_score_use_the_open_time_score(api):
    from yuyue.serving.report_summary import rebuild
    from yuyue.serving.store import events

    _open(api, "lead-old", "15:00:00")
    _say(api, "lead-old", "visitor", "隆鼻多少钱", "15:00:30")
    payload = _open_payload(api, "lead-old")
    old = {k: v for k, v in payload.items() if not k.endswith("_lead")}
    engine = api.state.service.store.engine
    with engine.begin() as cx:  # an open event as stored before this change
        cx.execute(
            events.update()
            .where(events.c.conversation_id == "lead-old", events.c.kind == "open")
            .values(payload=orjson.dumps(old).decode())
        )
        rebuild(cx, ["lead-old"])  # the summary as the migration builds it for such a chat
    row = _c01(api)
    assert row["expected_booked"] == pytest.approx(payload["p_booked"], abs=1e-3)
    assert row["expected_arrived"] == pytest.approx(payload["p_arrived"], abs=1e-3)
    assert row["expected_booked"] != pytest.approx(payload["p_booked_lead"], abs=1e-3)


def test_a_chat_without_consultant_keeps_its_open_time_score_as_the_lead(api):
    body = {"conversation_id": "lead-none", "started_at": f"{DAY}T16:00:00+08:00", "visit": VISIT}
    body |= {"department": "整形美容", "project": "隆鼻"}
    r = api.post("/v1/conversations", json=body, headers=api.keys["sup"])
    assert r.status_code == 201, r.text
    stored = _open_payload(api, "lead-none")
    assert stored["consultant_id"] is None
    assert stored["p_booked_lead"] == stored["p_booked"]
    assert stored["p_booked"] == pytest.approx(r.json()["scores"]["booked"]["probability"], abs=1e-4)
    assert stored["p_arrived_lead"] == stored["p_arrived"]
