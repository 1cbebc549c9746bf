# ruff: noqa: F811  (the desk fixture comes from test_appointments)
"""``yuyue tasks sweep`` on the server's database, on SQLite and PostgreSQL: it marks the no-shows whose
grace has passed (with their callback tasks), opens lead tasks for chats that left contact, links chats
to their patients with the server's key, and finds nothing to do when run again; bad input is named."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.serving.test_api import CHAT, PHONE, _chat, _open
from tests.serving.test_appointments import TZ, book, booked_chat, desk, set_now, tasks  # noqa: F401
from tests.serving.test_patients import chat, patient_of
from yuyue.cli.main import app as cli_app
from yuyue.config import get_settings


@pytest.fixture
def cli(desk, monkeypatch):
    """Run ``yuyue tasks sweep`` with the server's settings (its var_dir holds the patient key)."""
    settings = desk.state.settings
    monkeypatch.setenv("YUYUE_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    url = settings.resolved_database_url

    def run(*args: str):
        return CliRunner().invoke(cli_app, ["tasks", "sweep", "--url", url, *args])

    yield run
    get_settings.cache_clear()


def counts(result) -> dict[str, int]:
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout.strip().splitlines()[-1])


def test_tasks_sweep_marks_no_shows_opens_leads_links_and_is_idempotent(desk, cli):
    api = desk
    appt = book(api, booked_chat(api), time="2025-03-06T15:00:00+08:00")
    lead = _open(api)
    _chat(api, lead, CHAT)  # a phone in a message, no outcome recorded
    first = counts(cli("--now", "2025-03-06T16:00:00+08:00", "--json"))  # within the grace
    # the booked chat was linked when it was booked; the lead's chat was never looked at
    assert first == {"no_shows": 0, "woken": 0, "leads": 1, "linked": 1}
    second = counts(cli("--now", "2025-03-06T18:00:00+08:00", "--json"))
    assert second == {"no_shows": 1, "woken": 0, "leads": 0, "linked": 0}
    again = counts(cli("--now", "2025-03-06T18:00:00+08:00", "--json"))
    assert again == {"no_shows": 0, "woken": 0, "leads": 0, "linked": 0}
    # the server sees what it did (read as of 16:00: the server's own rules could not have done it)
    set_now(api, datetime(2025, 3, 6, 16, 0, tzinfo=TZ))
    got = api.get(f"/v1/appointments/{appt['id']}", headers=api.keys["sup"]).json()
    assert got["status"] == "no_show" and got["auto_no_show"] is True
    assert [t["appointment_id"] for t in tasks(api, kind="no_show_callback")] == [appt["id"]]
    assert [t["conversation_id"] for t in tasks(api, kind="lead_call")] == [lead]
    # the CLI linked with the server's key: a new chat with the same phone joins that patient
    with api.state.service.store.engine.connect() as cx:
        linked = cx.execute(
            sa.text("SELECT patient_id FROM patient_chats WHERE conversation_id = :c"), {"c": lead}
        ).scalar_one()
    assert linked and patient_of(api, chat(api, f"电话{PHONE}"))["id"] == linked
    # the human summary, and bad input named
    out = cli("--now", "2025-03-06T18:00:00+08:00")
    assert out.exit_code == 0 and "no-shows marked: 0" in out.stdout
    bad = cli("--now", "tomorrow")
    assert bad.exit_code == 1 and "--now" in bad.output
    bad = cli("--now", "2025-03-06T18:00:00")
    assert bad.exit_code == 1 and "timezone offset" in bad.output
