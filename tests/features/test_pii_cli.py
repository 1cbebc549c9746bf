"""``yuyue pii mask FILE|-`` through typer's CliRunner."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from yuyue.cli.main import app

runner = CliRunner()
LINES = [
    "[微笑][微笑]我的电话13966012847",
    "没有个人信息",
    "我叫王小明，微信 lucy_0921",
    "  住解放路12号 邮箱 a.b@163.com",
]


def _check(output: str) -> None:
    rows = [json.loads(line) for line in output.splitlines()]
    assert len(rows) == len(LINES)
    assert rows[0]["masked"] == "[微笑][微笑]我的电话<phone>"
    assert rows[1] == {"masked": "没有个人信息", "spans": []}
    assert rows[2]["masked"] == "我叫<surname>，微信 <wechat>"
    assert rows[3]["masked"] == "  住<address> 邮箱 <email>"
    for line, row in zip(LINES, rows, strict=True):
        for span in row["spans"]:
            assert line[span["start"] : span["end"]].strip()  # offsets index the input line
    first = rows[0]["spans"][0]
    assert LINES[0][first["start"] : first["end"]] == "13966012847"


def test_mask_a_file(tmp_path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["pii", "mask", str(path)])
    assert result.exit_code == 0, result.output
    _check(result.stdout)


def test_mask_stdin() -> None:
    result = runner.invoke(app, ["pii", "mask", "-"], input="\n".join(LINES) + "\n")
    assert result.exit_code == 0, result.output
    _check(result.stdout)


def test_a_missing_file_is_named(tmp_path) -> None:
    result = runner.invoke(app, ["pii", "mask", str(tmp_path / "nope.txt")])
    assert result.exit_code == 2
    assert "nope.txt" in result.output
