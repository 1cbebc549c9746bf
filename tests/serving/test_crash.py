"""SIGKILL the server under load, restart it: nothing acknowledged is lost, and a chat goes on with the next seq.

Runs the scenario of ``bench/crash_test.py`` (``run_crash``) against a real
``python -m cli.main serve`` process on SQLite, with a few seconds of load. The
model is the session's ``model`` fixture (trained once per session), saved as a
bundle; ``YUYUE_TEST_MODEL_DIR=/path/to/bundle`` skips the training.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.utils.bench import load_bench

pytestmark = pytest.mark.integration


def _crash_module():
    return load_bench("crash_test")


@pytest.fixture(scope="module")
def bundle_dir(request, tmp_path_factory) -> Path:
    """The session's trained model saved as a bundle (``YUYUE_TEST_MODEL_DIR=DIR`` uses a saved one instead)."""
    if os.environ.get("YUYUE_TEST_MODEL_DIR"):
        return Path(os.environ["YUYUE_TEST_MODEL_DIR"])
    model = request.getfixturevalue("model")
    return model.save(tmp_path_factory.mktemp("crash") / "bundle")


def test_sigkill_under_load_loses_nothing_acknowledged(bundle_dir, tmp_path):
    crash = _crash_module()
    res = crash.run_crash(bundle_dir, tmp_path / "var", chats=10, kill_after=3.0, echo=lambda _: None)
    report = (
        res.report()
        + "\nserver log:\n"
        + (tmp_path / "var" / "server.log").read_text(errors="replace")[-3000:]
    )
    assert res.acknowledged > 0, report
    assert res.lost == [], report
    assert res.lost_chats == [], report
    assert res.gaps == [], report
    assert res.wrong_seq == [], report
    assert res.errors_before_kill == [], report
    # the in-process cache died with the server: the session is rebuilt from the event store
    assert res.continued["ok"], report
    assert res.continued["seq"] == res.continued["stored_before"], report
    assert res.continued["cache_misses_after"] > (res.continued["cache_misses_before"] or 0), report
    assert res.ok, report
