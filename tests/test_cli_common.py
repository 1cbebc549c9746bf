"""cli/common.py: how every ``yuyue`` subcommand fails, and an error's first line."""

from __future__ import annotations

import typer
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from yuyue.cli.common import fail, one_line


def test_fail_prints_the_error_and_exits_with_the_code() -> None:
    app = typer.Typer()

    @app.command()
    def run(code: int = 1) -> None:
        fail("no such file", code)

    runner = CliRunner()
    for code in (1, 2):
        result = runner.invoke(app, ["--code", str(code)])
        assert result.exit_code == code
        assert result.stderr.strip() == "error: no such file"
        assert result.stdout == ""


def test_one_line_reads_the_drivers_error_first() -> None:
    wrapped = OperationalError("SELECT 1", {}, RuntimeError("could not connect\nDETAIL: refused"))
    assert one_line(wrapped) == "could not connect"
    assert one_line(ValueError("  bad value\nsecond line")) == "bad value"
    assert one_line(KeyError()) == "KeyError"
