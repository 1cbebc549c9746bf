"""The pydantic contract agrees with the shared JSON schema and catches bad records."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.utils.records import record
from yuyue.data.contract import STAGES, Conversation

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "data" / "schema" / "conversation.schema.json"
SHARED_SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "contract" / "conversation.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def test_bundled_schema_is_the_shared_contract():
    if not SHARED_SCHEMA.exists():
        pytest.skip("../shared not present")
    assert json.loads(SHARED_SCHEMA.read_text()) == json.loads(SCHEMA_PATH.read_text())


def test_stage_ids_match_schema(schema):
    assert set(STAGES) == set(schema["properties"]["messages"]["items"]["properties"]["stage"]["enum"])


def _bad(**kw):
    return record(**kw)


VALID = [
    record(),
    record(visit=None, outcome=None, department=None, project=None),
    record(outcome={"contact": True, "booked": True, "arrived": None}),
    record(
        grade="较好",
        truth={"p_book": 0.3, "entities": [{"message": 0, "type": "phone", "value": "13812345678"}]},
    ),
]
# records that the schema and the models both reject
INVALID_BOTH = [
    {k: v for k, v in record().items() if k != "conversation_id"},
    record(conversation_id=""),
    record(messages=[]),
    record(started_at="yesterday"),
    record(visit={"engine": "yahoo"}),
    record(visit={"device": "phone"}),
    record(visit={"visits_before": -1}),
    record(visit={"pages": [{"title": "no url"}]}),
    record(messages=[{"at": "2025-03-05T14:02:11+08:00", "role": "bot", "text": "hi"}]),
    record(
        messages=[{"at": "2025-03-05T14:02:11+08:00", "role": "consultant", "text": "hi", "stage": "sell"}]
    ),
    record(messages=[{"at": "2025-03-05T14:02:11+08:00", "role": "visitor"}]),
    record(grade="很好"),
    record(outcome={"booked": "yes"}),
]


@pytest.mark.parametrize("rec", VALID)
def test_valid_records_pass_both(rec, schema):
    jsonschema.validate({k: v for k, v in rec.items() if v is not None}, schema)
    Conversation.model_validate({k: v for k, v in rec.items() if v is not None})


@pytest.mark.parametrize("rec", INVALID_BOTH)
def test_invalid_records_fail_both(rec, schema):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rec, schema, format_checker=jsonschema.FormatChecker())
    with pytest.raises(ValueError):
        Conversation.model_validate(rec)


@pytest.mark.parametrize(
    "rec",
    [
        record(started_at="2025-03-05T14:02:11"),  # no offset: the contract asks for one
        record(messages=[{"at": "2025-03-05T14:02:11+08:00", "role": "visitor", "text": "   "}]),
        record(
            messages=[
                {"at": "2025-03-05T14:02:11+08:00", "role": "visitor", "text": "a"},
                {"at": "2025-03-05T14:01:11+08:00", "role": "consultant", "text": "b"},
            ]
        ),
    ],
)
def test_contract_rules_beyond_the_schema(rec):
    """The prose contract asks for offsets, non-decreasing times and real text."""
    with pytest.raises(ValueError):
        Conversation.model_validate(rec)


def test_round_trip_omits_absent_fields():
    rec = record(visit=None, grade=None)
    rec = {k: v for k, v in rec.items() if v is not None}
    conv = Conversation.model_validate(rec)
    out = conv.to_record()
    assert "visit" not in out and "grade" not in out
    assert Conversation.model_validate(out) == conv


def test_without_truth_drops_truth():
    conv = Conversation.model_validate(record(truth={"p_book": 0.2}))
    assert conv.truth is not None and conv.without_truth().truth is None
