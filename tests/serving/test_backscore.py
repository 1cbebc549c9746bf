# ruff: noqa: F811  (the desk fixture comes from test_appointments)
"""Back-scoring (``yuyue score --from-store``, ``serving/backscore.py``) on a store filled through the API,
on SQLite and PostgreSQL: the same model reproduces what the live path wrote (scores and reasons), a new
model's scores are what it gives the stored chats replayed through the live path, closed chats with their
outcome known are untouched, a chat that changes between the read and the write keeps the live message's
scores, the follow-up queue and the desk's tasks follow the new scores, Ray gives the plain path's values,
and the command names each bad input in one line."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.serving.test_api import CHAT, _at, _chat, _open
from tests.serving.test_appointments import AGREED, book, booked_chat, desk, tasks  # noqa: F401
from yuyue.cli.main import app as cli_app
from yuyue.config import get_settings
from yuyue.serving.backscore import backscore
from yuyue.serving.service import followup_item
from yuyue.serving.store import conversations

COLD = [("visitor", "随便看看"), ("consultant", "好的，有需要随时问我")]


def other_model(model):
    """Model B: model A with the arrival scorer judging bookings too (a known difference: a booking's
    p_arrived / p_booked is 1, so no booking is at risk under B)."""
    b = copy.copy(model)
    b.scorers = {"booked": model.scorers["arrived"], "arrived": model.scorers["arrived"]}
    return b


def _outcome(api, cid: str, **values: Any) -> None:
    r = api.post(f"/v1/conversations/{cid}/outcome", json=values, headers=api.keys["c01"])
    assert r.status_code == 200, r.text


def _store(api) -> tuple[dict[str, str], dict[str, str]]:
    """Chats through the API, scored by the app's model: (chats back-scoring selects, chats it leaves)."""
    picked = {
        "lead_open": _open(api),  # a phone in a message, still open
        "lead_closed": _open(api),  # contact recorded, closed, not booked
        "booking": booked_chat(api),  # booked, closed, arrival unknown
        "arrived_tasks": booked_chat(api),  # arrived and closed, after-care calls pending
        "open_cold": _open(api),  # open, no contact
        "empty": _open(api),  # opened, no message yet
    }
    left = {"done": booked_chat(api), "cold": _open(api)}
    _chat(api, picked["lead_open"], CHAT)
    _chat(api, picked["lead_closed"], CHAT)
    _outcome(api, picked["lead_closed"], contact=True, close=True)
    _outcome(api, picked["booking"], booked=True, close=True)
    appt = book(api, picked["arrived_tasks"])
    r = api.post(f"/v1/appointments/{appt['id']}/arrived", headers=api.keys["sup"])
    assert r.status_code == 200, r.text
    _outcome(api, picked["arrived_tasks"], close=True)
    _chat(api, picked["open_cold"], COLD)
    _outcome(api, left["done"], booked=True, arrived=True, close=True)
    _chat(api, left["cold"], COLD)
    _outcome(api, left["cold"], booked=False, close=True)
    return picked, left


def _rows(api) -> dict[str, dict[str, Any]]:
    with api.state.engine.connect() as cx:
        return {r["id"]: dict(r) for r in cx.execute(sa.select(conversations)).mappings()}


def _replayed(api, model, cid: str) -> dict[str, float]:
    """The scores after the chat's last stored message, replaying it through the live path's steps
    (``ChatService.rebuild``: ``open_chat`` and ``on_message`` per message) with ``model``."""
    service = api.state.service
    return dict(service.rebuild(service.store.conversation(cid), model).session.last)


def _queue(api) -> list[tuple[str, float]]:
    r = api.get("/v1/followups", headers=api.keys["sup"])
    assert r.status_code == 200, r.text
    return [(i["conversation_id"], i["priority"]) for i in r.json()["items"]]


def test_a_new_model_rescored_the_chats_the_desk_acts_on_and_the_queue_follows(desk, model):
    api = desk
    picked, left = _store(api)
    assert tasks(api, kind="aftercare")  # the arrived chat's pending calls select it
    engine = api.state.engine
    before = _rows(api)
    queue_before = _queue(api)
    assert {cid for cid, _ in queue_before} == {picked[k] for k in ("lead_open", "lead_closed", "booking")}

    # the live path's own model under another label: the rebuilt chats score exactly as the live path did
    same = backscore(engine, model, "t1-again")
    assert (same.selected, same.rescored, same.moved, same.skipped, same.erased) == (6, 6, 0, 0, 0)
    rows = _rows(api)
    for name, cid in picked.items():
        assert rows[cid]["model_version"] == "t1-again", name
        assert rows[cid]["p_booked"] == pytest.approx(before[cid]["p_booked"], abs=1e-9), name
        assert rows[cid]["p_arrived"] == pytest.approx(before[cid]["p_arrived"], abs=1e-9), name
        assert rows[cid]["reasons"] == before[cid]["reasons"], name  # the same JSON, byte for byte

    b = other_model(model)
    dry = backscore(engine, b, "B", dry_run=True)
    assert (dry.selected, dry.rescored, dry.dry_run) == (6, 6, True) and dry.moved > 0
    assert _rows(api) == rows  # nothing written
    out = backscore(engine, b, "B")
    assert (out.version, out.selected, out.rescored, out.skipped, out.current) == ("B", 6, 6, 0, 0)
    assert out.moved == dry.moved and not out.ray and out.seconds > 0
    rows = _rows(api)
    for name, cid in picked.items():
        expect = _replayed(api, b, cid)
        assert rows[cid]["model_version"] == "B", name
        assert rows[cid]["p_booked"] == pytest.approx(expect["booked"], abs=1e-9), name
        assert rows[cid]["p_arrived"] == pytest.approx(expect["arrived"], abs=1e-9), name
        assert set(orjson.loads(rows[cid]["reasons"])) == {"booked", "arrived"}
        assert rows[cid]["n_messages"] == before[cid]["n_messages"], name
    assert rows[picked["lead_open"]]["p_booked"] != pytest.approx(before[picked["lead_open"]]["p_booked"])
    for name, cid in left.items():  # closed, outcome known, no task: not touched at all
        assert rows[cid] == before[cid], name
        assert rows[cid]["model_version"] == "t1"

    # the queue ranks by the new scores: its priorities are model B's, in their order, which is not A's
    now = datetime.now(UTC)
    expected = sorted(
        (
            (cid, round(followup_item({**rows[cid], **_as_row(_replayed(api, b, cid))}, now)["priority"], 4))
            for cid, _ in queue_before
        ),
        key=lambda x: (-x[1], x[0]),
    )
    queue_after = _queue(api)
    assert queue_after == expected
    assert dict(queue_after)[picked["booking"]] == 0.0  # no booking at risk under B
    assert [cid for cid, _ in queue_after] != [cid for cid, _ in queue_before]
    # and so do the desk's tasks (ranked in SQL from the same columns)
    (lead_task,) = tasks(api, kind="lead_call")
    assert lead_task["conversation_id"] == picked["lead_closed"]
    assert lead_task["p_booked"] == pytest.approx(rows[picked["lead_closed"]]["p_booked"])
    assert lead_task["priority"] == round(rows[picked["lead_closed"]]["p_booked"], 4)

    # a second run finds every selected chat scored by B already
    again = backscore(engine, b, "B")
    assert (again.selected, again.rescored, again.current) == (0, 0, 6)
    # filters: another hospital's chats, chats started later
    assert backscore(engine, model, "t2", filters=_filters(hospital="elsewhere")).selected == 0
    late = datetime(2030, 1, 1, tzinfo=UTC)
    assert backscore(engine, model, "t2", filters=_filters(since=late), dry_run=True).selected == 0


def _as_row(scores: dict[str, float]) -> dict[str, float]:
    return {"p_booked": scores["booked"], "p_arrived": scores["arrived"]}


def _filters(**kw: Any):
    from yuyue.serving.store import Filters

    return Filters(**kw)


def test_a_chat_that_changes_meanwhile_keeps_the_live_message(api, model):
    first, second = _open(api), _open(api)
    _chat(api, first, CHAT)
    _chat(api, second, CHAT)
    live: dict[str, Any] = {}

    def message_arrives(ids: list[str]) -> None:  # between the back-score's read and its write
        if not live:
            r = api.post(
                f"/v1/conversations/{first}/messages",
                json={"role": "consultant", "text": "周六上午可以的，给您安排", "at": _at(20)},
                headers=api.keys["c01"],
            )
            assert r.status_code == 200, r.text
            live.update(r.json())

    out = backscore(api.state.engine, other_model(model), "B", before_write=message_arrives)
    assert (out.selected, out.rescored, out.skipped) == (2, 1, 1)
    rows = _rows(api)
    assert rows[first]["model_version"] == "t1" and rows[first]["n_messages"] == len(CHAT) + 1
    assert rows[first]["p_booked"] == pytest.approx(live["scores"]["booked"]["probability"], abs=1e-4)
    assert rows[second]["model_version"] == "B"
    # the next run takes it
    again = backscore(api.state.engine, other_model(model), "B")
    assert (again.selected, again.rescored, again.current) == (1, 1, 1)
    assert _rows(api)[first]["model_version"] == "B"


def test_a_masked_chat_keeps_its_scores(api, model):
    kept, erased = _open(api), _open(api)
    _chat(api, kept, CHAT)
    _chat(api, erased, CHAT)
    r = api.delete(f"/v1/conversations/{erased}/personal-data", headers=api.keys["sup"])
    assert r.status_code == 200, r.text
    out = backscore(api.state.engine, other_model(model), "B")
    assert (out.selected, out.rescored, out.erased) == (1, 1, 1)
    assert _rows(api)[erased]["model_version"] == "t1"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_ray_tasks_give_the_plain_paths_scores(api, model):
    ray = pytest.importorskip("ray")
    ids = [_open(api) for _ in range(5)]
    for cid, messages in zip(ids, (CHAT, COLD, CHAT[:3], AGREED, []), strict=True):
        if messages:
            _chat(api, cid, messages)
    b = other_model(model)
    plain = backscore(api.state.engine, b, "B", chunk=2)
    rows_plain = _rows(api)
    was_running = ray.is_initialized()
    on_ray = backscore(api.state.engine, b, "B-ray", ray=True, workers=2, chunk=2)
    assert not ray.is_initialized() or was_running  # a Ray it started is shut down
    assert on_ray.ray and (on_ray.selected, on_ray.rescored, on_ray.skipped) == (plain.selected, 5, 0)
    rows_ray = _rows(api)
    for cid in ids:
        assert rows_ray[cid]["model_version"] == "B-ray"
        assert rows_ray[cid]["p_booked"] == pytest.approx(rows_plain[cid]["p_booked"], abs=1e-12)
        assert rows_ray[cid]["p_arrived"] == pytest.approx(rows_plain[cid]["p_arrived"], abs=1e-12)
        assert rows_ray[cid]["reasons"] == rows_plain[cid]["reasons"]


# ---- the command ---------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path, monkeypatch):
    """``yuyue score`` with an empty registry of its own under ``tmp_path``."""
    monkeypatch.setenv("YUYUE_VAR_DIR", str(tmp_path / "cli-var"))
    monkeypatch.setenv("YUYUE_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    get_settings.cache_clear()

    def run(*args: str):
        return CliRunner().invoke(cli_app, ["score", *args])

    yield run
    get_settings.cache_clear()


def _one_line_error(result, code: int, *words: str) -> None:
    """One ``error: …`` line naming ``words`` (MLflow may log its own lines first, creating a registry)."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.strip().splitlines() if " INFO mlflow." not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for w in words:
        assert w in lines[0], result.output


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_command_names_each_bad_input(api, cli, tmp_path):
    url = api.state.settings.resolved_database_url
    _one_line_error(cli("--url", url), 2, "--from-store")
    _one_line_error(cli("--from-store", "--url", f"sqlite:///{tmp_path / 'none.db'}"), 1, "no database file")
    assert not (tmp_path / "none.db").exists()  # nothing created
    _one_line_error(cli("--from-store", "--url", "mysql://u@h/db"), 1, "unsupported database URL")
    _one_line_error(
        cli("--from-store", "--url", "postgresql://postgres:secret@127.0.0.1:1/x"),
        1,
        "cannot reach the database",
    )
    assert "secret" not in cli("--from-store", "--url", "postgresql://postgres:secret@127.0.0.1:1/x").output
    empty = tmp_path / "empty.db"
    sa.create_engine(f"sqlite:///{empty}").connect().close()
    _one_line_error(cli("--from-store", "--url", f"sqlite:///{empty}"), 1, "no Yuyue store")
    _one_line_error(cli("--from-store", "--url", url, "--since", "soon"), 1, "--since")
    _one_line_error(cli("--from-store", "--url", url, "--since", "2025-03-01T08:00:00"), 1, "timezone offset")
    _one_line_error(cli("--from-store", "--url", url), 1, "no champion registered")
    _one_line_error(cli("--from-store", "--url", url, "--model-version", "7"), 1, "no version '7'", "none")
    _one_line_error(cli("--from-store", "--url", url, "--model-version", "staging"), 1, "alias 'staging'")
    assert cli("--from-store", "--url", url, "--workers", "0").exit_code == 2


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_command_rescores_with_the_registered_champion(api, cli, model, tmp_path):
    from yuyue.training import registry

    picked = [_open(api) for _ in range(3)]
    for cid in picked:
        _chat(api, cid, CHAT)
    _outcome(api, picked[2], booked=True, arrived=True, close=True)  # outcome known, closed: left alone
    settings = get_settings()
    _, version = registry.log_and_register(model, model.save(tmp_path / "bundle"), {}, settings=settings)
    registry.promote(version, settings)
    url = api.state.settings.resolved_database_url
    before = _rows(api)

    dry = cli("--from-store", "--url", url, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert _rows(api) == before
    counts = orjson.loads(dry.stdout.strip().splitlines()[-1])
    assert (counts["selected"], counts["rescored"], counts["dry_run"]) == (2, 2, True)

    done = cli("--from-store", "--url", url, "--json")
    assert done.exit_code == 0, done.output
    counts = orjson.loads(done.stdout.strip().splitlines()[-1])
    # the champion is the app's model: the same scores, now under the registry's version
    assert (counts["version"], counts["selected"], counts["rescored"], counts["moved"]) == (version, 2, 2, 0)
    rows = _rows(api)
    assert [rows[c]["model_version"] for c in picked] == [version, version, "t1"]
    assert rows[picked[0]]["p_booked"] == pytest.approx(before[picked[0]]["p_booked"], abs=1e-9)

    human = cli("--from-store", "--url", url, "--model-version", version)
    assert human.exit_code == 0, human.output
    assert f"version {version}: 0 chats selected" in human.stdout and "2 already scored by it" in human.stdout


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_hospital_with_its_own_model_is_rescored_by_it(api, cli, model, tmp_path):
    """As the server scores them (``ModelHolder.model_for``): hz-a's chats by hz-a's own model (a
    ``hospital-*`` alias), every other chat by the champion; ``--hospital`` keeps one hospital's run."""
    from yuyue.training import registry

    chats = {h: _open(api, hospital=h) for h in ("hz-a", "sh-b")}
    chats["none"] = _open(api)
    for cid in chats.values():
        _chat(api, cid, CHAT)
    settings = get_settings()
    bundle = model.save(tmp_path / "bundle")
    _, champion = registry.log_and_register(model, bundle, {}, settings=settings)
    registry.promote(champion, settings)
    b = other_model(model)
    _, own = registry.log_and_register(
        b, b.save(tmp_path / "own"), {}, settings=settings, tags={registry.HOSPITAL_TAG: "hz-a"}
    )
    registry.set_hospital_alias("hz-a", own, settings)
    url = api.state.settings.resolved_database_url

    only = cli("--from-store", "--url", url, "--hospital", "sh-b", "--json")
    assert only.exit_code == 0, only.output
    lines = [orjson.loads(x) for x in only.stdout.strip().splitlines() if x.startswith("{")]
    assert [(x["version"], x["rescored"]) for x in lines] == [(champion, 1)]

    done = cli("--from-store", "--url", url, "--json")
    assert done.exit_code == 0, done.output
    lines = [orjson.loads(x) for x in done.stdout.strip().splitlines() if x.startswith("{")]
    # the champion's run leaves hz-a out (sh-b is current already); hz-a's own run takes its chat
    assert [(x["version"], x["selected"], x["rescored"]) for x in lines] == [(champion, 1, 1), (own, 1, 1)]
    rows = _rows(api)
    assert {h: rows[c]["model_version"] for h, c in chats.items()} == {
        "hz-a": own,
        "sh-b": champion,
        "none": champion,
    }
    stored = {k: rows[chats["hz-a"]][k] for k in ("p_booked", "p_arrived")}
    assert stored == pytest.approx(_as_row(_replayed(api, b, chats["hz-a"])), abs=1e-9)


def test_a_department_with_its_own_model_is_rescored_by_it_unless_the_hospital_has_one(
    api, cli, model, tmp_path
):
    """``department-*`` aliases: a chat of that department is re-scored by the department's model unless
    its hospital has its own (as ``ModelHolder.model_for`` scores it live); every other chat by the
    champion; each chat is selected by exactly one run."""
    from yuyue.serving.backscore import runs
    from yuyue.serving.store import Filters
    from yuyue.training import registry

    chats = {
        ("hz-a", "整形美容"): _open(api, hospital="hz-a"),
        ("sh-b", "整形美容"): _open(api, hospital="sh-b"),
        ("sh-b", "妇科"): _open(api, hospital="sh-b", department="妇科", project="无痛人流"),
    }
    for cid in chats.values():
        _chat(api, cid, CHAT)
    settings = get_settings()
    _, champion = registry.log_and_register(model, model.save(tmp_path / "bundle"), {}, settings=settings)
    registry.promote(champion, settings)
    b = other_model(model)
    own_b = b.save(tmp_path / "own")
    _, hosp = registry.log_and_register(b, own_b, {}, settings=settings, tags={registry.HOSPITAL_TAG: "hz-a"})
    registry.set_hospital_alias("hz-a", hosp, settings)
    _, dept = registry.log_and_register(
        b, own_b, {}, settings=settings, tags={registry.DEPARTMENT_TAG: "整形美容"}
    )
    registry.set_segment_alias("department", "整形美容", dept, settings)

    done = cli("--from-store", "--url", api.state.settings.resolved_database_url, "--json")
    assert done.exit_code == 0, done.output
    lines = [orjson.loads(x) for x in done.stdout.strip().splitlines() if x.startswith("{")]
    assert [(x["version"], x["selected"]) for x in lines] == [(champion, 1), (hosp, 1), (dept, 1)]
    rows = _rows(api)
    assert {k: rows[c]["model_version"] for k, c in chats.items()} == {
        ("hz-a", "整形美容"): hosp,
        ("sh-b", "整形美容"): dept,
        ("sh-b", "妇科"): champion,
    }
    stored = {k: rows[chats["sh-b", "整形美容"]][k] for k in ("p_booked", "p_arrived")}
    assert stored == pytest.approx(_as_row(_replayed(api, b, chats["sh-b", "整形美容"])), abs=1e-9)
    # one hospital with its own model: its run alone (no department run, no champion)
    plan = runs(None, {"hz-a": (b, hosp)}, Filters(hospital="hz-a"), {"整形美容": (b, dept)})
    assert [(r.version, r.filters.hospital) for r in plan] == [(hosp, "hz-a")]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_one_hospitals_run_loads_its_own_model_alone(api, cli, model, tmp_path):
    """``--hospital hz-a`` of a hospital with its own model scores with that model alone: no champion
    needed (none is registered here), and another hospital's model is not loaded (sh-b's cannot be)."""
    from mlflow import MlflowClient

    from yuyue.training import registry

    chats = {h: _open(api, hospital=h) for h in ("hz-a", "sh-b")}
    for cid in chats.values():
        _chat(api, cid, CHAT)
    settings = get_settings()
    _, own = registry.log_and_register(
        model, model.save(tmp_path / "own"), {}, settings=settings, tags={registry.HOSPITAL_TAG: "hz-a"}
    )
    registry.set_hospital_alias("hz-a", own, settings)
    empty = tmp_path / "no-model"
    empty.mkdir()
    broken = MlflowClient(registry.configure(settings)).create_model_version(
        settings.model_name, str(empty), tags={registry.HOSPITAL_TAG: "sh-b"}
    )
    registry.set_hospital_alias("sh-b", str(broken.version), settings)
    assert registry.alias_version(registry.CHAMPION, settings) is None
    url = api.state.settings.resolved_database_url

    done = cli("--from-store", "--url", url, "--hospital", "hz-a", "--json")
    assert done.exit_code == 0, done.output
    lines = [orjson.loads(x) for x in done.stdout.strip().splitlines() if x.startswith("{")]
    assert [(x["version"], x["selected"], x["rescored"]) for x in lines] == [(own, 1, 1)]
    assert {h: _rows(api)[c]["model_version"] for h, c in chats.items()} == {"hz-a": own, "sh-b": "t1"}
    # the runs that need what is missing say so
    _one_line_error(cli("--from-store", "--url", url, "--hospital", "sh-b"), 1, "a hospital's own model")
    _one_line_error(cli("--from-store", "--url", url, "--hospital", "nb-c"), 1, "no champion registered")
