# ruff: noqa: F811  (the desk fixture comes from test_appointments)
"""The returning-visitor signal (issue 16): when a chat opens, the earlier chats the store links to its
visitor raise the visit trace's ``visits_before``, which the scorers read and the store keeps."""

from __future__ import annotations

import orjson

from tests.serving.test_api import _open
from tests.serving.test_appointments import desk  # noqa: F401
from tests.serving.test_patients import patient_of, rows, say


def _visit(visitor_id: str | None, **extra) -> dict:
    visit = {"engine": "baidu", "keyword": "隆鼻", "device": "mobile", **extra}
    if visitor_id is not None:
        visit["visitor_id"] = visitor_id
    return visit


def _opened(api, minute: int, visitor_id: str | None, **extra):
    body = {
        "visit": _visit(visitor_id, **extra),
        "started_at": f"2025-03-05T1{minute // 60}:{minute % 60:02d}:00+08:00",
    }
    r_cid = _open(api, **body)
    stored = {r["id"]: r for r in rows(api, "conversations")}[r_cid]
    return r_cid, orjson.loads(stored["visit"])


def test_earlier_linked_chats_reach_the_visit_trace_and_the_score(desk):
    api = desk
    first, visit = _opened(api, 0, "vis-77")
    assert "visits_before" not in visit or not visit["visits_before"]  # nothing known yet
    say(api, first, "隆鼻多少钱")
    assert patient_of(api, first) is not None  # linked by its visitor id
    second, visit = _opened(api, 30, "vis-77")
    assert visit["visits_before"] == 1
    say(api, second, "还是想了解一下")
    assert patient_of(api, second)["chats"] == 2
    third, visit = _opened(api, 60, "vis-77")
    assert visit["visits_before"] == 2
    # the score of the third chat is the model's score of that enriched visit
    from datetime import datetime

    from yuyue.data.contract import Visit

    model = api.state.service.models.get()[0]
    started = datetime.fromisoformat("2025-03-05T11:00:00+08:00")
    _, expected = model.open_chat(
        started_at=started,
        visit=Visit.model_validate(_visit("vis-77", visits_before=2)),
        department="整形美容",
        project="隆鼻",
        consultant_id="c01",
    )
    _, plain = model.open_chat(
        started_at=started,
        visit=Visit.model_validate(_visit("vis-77")),
        department="整形美容",
        project="隆鼻",
        consultant_id="c01",
    )
    stored = {r["id"]: r for r in rows(api, "conversations")}[third]
    assert stored["p_booked"] == expected["booked"].probability
    assert plain["booked"].as_dict()["reasons"] != expected["booked"].as_dict()["reasons"] or (
        plain["booked"].probability != expected["booked"].probability
    ), "the model ignores the returning-visitor columns"


def test_the_chat_tools_own_count_is_never_lowered_and_strangers_are_untouched(desk):
    api = desk
    a, _ = _opened(api, 0, "vis-88")
    say(api, a, "你好")
    patient_of(api, a)
    _, visit = _opened(api, 10, "vis-88", visits_before=5)
    assert visit["visits_before"] == 5  # the chat tool knew of more visits than the store
    _, visit = _opened(api, 20, "vis-unknown")
    assert not visit.get("visits_before")
    _, visit = _opened(api, 30, None)
    assert "visitor_id" not in visit and not visit.get("visits_before")
    # a chat that opened before the linked one does not count it
    _, visit = _opened(api, 0, "vis-88")
    assert not visit.get("visits_before")
