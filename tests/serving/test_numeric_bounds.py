"""Numbers that would saturate the scores get a 422 naming the field and store nothing (issue 15).

``dwell_s`` was finite but unbounded: one page with ``dwell_s: 1e308`` pushed both probabilities to
0.9999. A page's dwell is at most a day (86,400 s), and so are a visit's pages together; the other
numbers of the API (``visits_before``, ``k``) have bounds of their own.
"""

# ruff: noqa: F811  (the api/backend fixtures come from test_api)
from __future__ import annotations

import pytest

from tests.serving.test_api import _open
from tests.serving.test_edge import _expect_422, _rows


def _visit(*dwells: float, **extra) -> dict:
    return {"visit": {"pages": [{"url": f"/p{i}", "dwell_s": d} for i, d in enumerate(dwells)], **extra}}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (_visit(1e308), "visit.pages.0.dwell_s", ["86400"]),
        (_visit(120, 86_401), "visit.pages.1.dwell_s", ["86400"]),
        (_visit(-1), "visit.pages.0.dwell_s", ["greater than or equal to 0"]),
        (_visit(*[50_000, 40_000]), "visit.pages", ["dwell_s add up to 90000", "86400"]),
        (_visit(*[100] * 865), "visit.pages", ["dwell_s add up to 86500"]),
        ({"visit": {"visits_before": 10**30}}, "visit.visits_before", ["1000000"]),
        ({"visit": {"visits_before": -1}}, "visit.visits_before", ["greater than or equal to 0"]),
    ],
    ids=[
        "1e308",
        "a-day-and-a-second",
        "negative",
        "two-pages-over-a-day",
        "many-pages",
        "visits-huge",
        "visits-neg",
    ],
)
def test_numbers_beyond_their_bounds_are_422_and_store_nothing(api, body, field, words):
    before = _rows(api)
    r = api.post("/v1/conversations", json={"conversation_id": "n-1", **body}, headers=api.keys["c01"])
    problem = _expect_422(r, field, *words)
    assert len(r.text) < 2_000, len(r.text)  # the offending value is quoted as a short prefix at most
    assert problem["errors"][0]["loc"][:2] == ["body", "visit"]
    assert _rows(api) == before


def test_dwell_within_bounds_is_scored_and_a_longer_dwell_does_not_saturate(api):
    """At the bounds the chat opens, and its scores stay below the saturated 0.9999 that 1e308 gave."""
    h = api.keys["c01"]
    short = api.post("/v1/conversations", json=_visit(120), headers=h)
    day = api.post("/v1/conversations", json=_visit(86_400), headers=h)
    many = api.post("/v1/conversations", json=_visit(*[86.4] * 1000), headers=h)
    for r in (short, day, many):
        assert r.status_code == 201, r.text[:300]
        for outcome in ("booked", "arrived"):
            assert r.json()["scores"][outcome]["probability"] < 0.99, r.json()["scores"]


def test_message_numbers_are_bounded(api):
    cid = _open(api)
    h = api.keys["c01"]
    before = _rows(api)
    r = api.post(
        f"/v1/conversations/{cid}/messages", json={"role": "visitor", "text": "在吗", "k": 10**30}, headers=h
    )
    _expect_422(r, "k", "10")
    r = api.post(
        f"/v1/conversations/{cid}/messages", json={"role": "visitor", "text": "在吗", "seq": -1}, headers=h
    )
    _expect_422(r, "seq")
    # a huge seq is only compared with the chat's length: a 409 naming it, nothing stored
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": "visitor", "text": "在吗", "seq": 10**30},
        headers=h,
    )
    assert r.status_code == 409 and "gap" in r.json()["detail"], r.text[:300]
    assert _rows(api) == before
