"""First start: the selection line in words, progress hooks that count right and stay quiet in tests,
``yuyue serve --help`` (what ``./run.sh --help`` runs) without training anything."""

from __future__ import annotations

import logging

from typer.testing import CliRunner

from yuyue.data.simulator.generate import generate_file
from yuyue.training import progress
from yuyue.training.train import selection_line


def test_selection_line_is_rounded_and_states_the_rule():
    line = selection_line("booked", "logreg", {"logreg": 0.8203829001761437, "hgb": 0.8210652513290113})
    assert line.startswith("booked: kept logistic regression (validation AUC 0.8204; boosting 0.8211;")
    assert "by more than 0.002" in line and "0.82038" not in line
    assert "n/a" in selection_line("arrived", "hgb", {"logreg": None, "hgb": 0.7})


def test_progress_is_off_under_pytest_and_prints_nothing(capsys):
    assert not progress.enabled()
    with progress.progress("chats", 10) as advance:
        advance(5)
    assert capsys.readouterr() == ("", "")


def test_on_log_advances_once_per_matching_record():
    seen: list[int] = []
    log = logging.getLogger("yuyue.test_first_start")
    with progress.on_log(log.name, seen.append, "validation AUC"):
        log.info("%s: validation AUC %s", "booked", 0.8)
        log.info("something else")
    log.info("validation AUC after the block")
    assert seen == [1]


def test_generate_reports_progress_and_writes_the_same_file(tmp_path):
    seen: list[int] = []
    generate_file(tmp_path / "a.jsonl", n=120, seed=5, on_progress=seen.append)
    generate_file(tmp_path / "b.jsonl", n=120, seed=5)
    assert sum(seen) == 120 and len(seen) > 1
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_serve_help_lists_the_options_without_training(monkeypatch):
    from yuyue.cli.main import app
    from yuyue.training import workflow

    def no_training(*a, **k):
        raise AssertionError("--help must not train")

    monkeypatch.setattr(workflow, "ensure_champion", no_training)
    res = CliRunner().invoke(app, ["serve", "--help"])
    assert res.exit_code == 0, res.output
    for option in ("--port", "--host", "--n", "--seed", "--workers"):
        assert option in res.output
