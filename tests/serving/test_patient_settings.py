# ruff: noqa: F811  (the desk fixture comes from test_appointments)
"""The patient settings (issue 16): ``patient_flag_after`` changes when a patient is flagged (here one
no-show flags, and complaints never do), and bad values are refused naming the kind and the value;
``patient_key`` is the key of the contact hashes, so machines sharing a database link alike."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import pytest
from pydantic import ValidationError

from tests.serving.test_api import PHONE
from tests.serving.test_appointments import NOW, book, desk, set_now  # noqa: F401
from tests.serving.test_patients import chat, patient_of, rows
from yuyue.config import Settings

KEY = "c2hhcmVkLWtleS1vZi10aGUtZGVzay0zMi1ieXRlcyE="  # base64 of 32 bytes


@pytest.fixture
def backend(backend, monkeypatch):
    """The shared backend, with the flag thresholds and the key set through the environment."""
    monkeypatch.setenv("YUYUE_PATIENT_FLAG_AFTER", '{"no_show": 1, "complaint": 0}')
    monkeypatch.setenv("YUYUE_PATIENT_KEY", KEY)
    configured = Settings()
    return backend.model_copy(
        update={"patient_flag_after": configured.patient_flag_after, "patient_key": configured.patient_key}
    )


def test_a_configured_threshold_changes_when_a_patient_is_flagged(desk):
    api = desk
    sup = api.keys["sup"]
    assert api.state.settings.patient_flag_after == {"no_show": 1, "complaint": 0, "unpaid": 1}
    first = chat(api, f"电话{PHONE}")
    appt = book(api, first, time="2025-03-06T15:00:00+08:00")
    pid = patient_of(api, first)["id"]
    assert patient_of(api, first)["flagged"] is False
    assert api.post(f"/v1/appointments/{appt['id']}/no-show", headers=sup).status_code == 200
    summary = patient_of(api, first)  # one no-show flags (the default needs two)
    assert summary["flagged"] is True and summary["no_shows"] == 1
    assert "1 no-shows" in summary["flag_reasons"][0] and "(flagged from 1)" in summary["flag_reasons"][0]
    # complaint 0: complaints never flag
    r = api.post(f"/v1/patients/{pid}/clear-flag", json={"note": "已解释"}, headers=sup)
    assert r.status_code == 200 and r.json()["flagged"] is False
    set_now(api, NOW + timedelta(minutes=5))  # counts start again after the clearing
    r = api.post(f"/v1/patients/{pid}/incidents", json={"kind": "complaint", "note": "投诉"}, headers=sup)
    assert r.status_code == 201 and r.json()["flagged"] is False
    r = api.post(f"/v1/patients/{pid}/incidents", json={"kind": "complaint"}, headers=sup)
    assert r.json()["flagged"] is False
    # unpaid kept its default, 1
    r = api.post(f"/v1/patients/{pid}/incidents", json={"kind": "unpaid"}, headers=sup)
    assert r.json()["flagged"] is True and "unpaid" in r.json()["flag_reasons"][0]
    # the configured key is the key of the contact hashes (no key file is made)
    key = api.state.desk.patients._key
    assert key == __import__("base64").b64decode(KEY)
    hashes = {r["key_hash"] for r in rows(api, "patient_keys")}
    assert hmac.new(key, f"phone:{PHONE}".encode(), hashlib.sha256).hexdigest() in hashes
    assert not (api.state.settings.var_dir / "secrets" / "patient.key").exists()


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({"no_shows": 2}, "unknown kind 'no_shows'"),
        ({"no_show": -1}, "no_show: must be a whole number >= 0, got -1"),
        ({"complaint": 1.5}, "complaint: must be a whole number >= 0, got 1.5"),
        ({"unpaid": "many"}, "unpaid: must be a whole number >= 0, got 'many'"),
        ({"unpaid": True}, "unpaid: must be a whole number >= 0, got True"),
        ([2, 1, 1], "must map kinds"),
    ],
)
def test_bad_flag_thresholds_are_refused_by_name(value, named):
    with pytest.raises(ValidationError) as err:
        Settings(patient_flag_after=value)
    assert "patient_flag_after" in str(err.value) and named in str(err.value)


def test_flag_thresholds_from_the_environment_keep_unnamed_defaults(monkeypatch):
    assert Settings().patient_flag_after == {"no_show": 2, "complaint": 1, "unpaid": 1}
    monkeypatch.setenv("YUYUE_PATIENT_FLAG_AFTER", '{"no_show": "3"}')
    assert Settings().patient_flag_after == {"no_show": 3, "complaint": 1, "unpaid": 1}


def test_a_short_patient_key_is_refused():
    with pytest.raises(ValidationError) as err:
        Settings(patient_key="too-short")
    assert "patient_key" in str(err.value) and "at least 16" in str(err.value)
    assert Settings(patient_key=KEY).patient_key is not None
