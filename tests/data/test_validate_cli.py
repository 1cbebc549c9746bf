"""`yuyue data validate` and `summary`: one line per problem, exit codes, never a traceback."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from tests.utils.records import record, write_lines
from yuyue.cli.main import app
from yuyue.data.io import InvalidRecordError, SkipReport, read_conversations, write_jsonl

runner = CliRunner()
LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+): (?P<field>\S+): (?P<problem>.+)$")


def _problems(output: str) -> list[tuple[int, str, str]]:
    out = []
    for line in output.splitlines():
        m = LINE.match(line)
        if m:
            out.append((int(m["line"]), m["field"], m["problem"]))
    return out


def test_valid_file_exits_zero(tmp_path):
    f = write_lines(tmp_path / "ok.jsonl", [record(conversation_id=f"c{i}") for i in range(3)])
    res = runner.invoke(app, ["data", "validate", str(f)])
    assert res.exit_code == 0, res.output
    assert "all 3 records valid" in res.output


@pytest.mark.parametrize(
    "item, field, words",
    [
        (b"{not json", "(line)", "invalid JSON"),
        (b'{"conversation_id": "\xff\xfe"}', "(line)", "invalid UTF-8"),
        (b"[1, 2]", "(line)", "expected a JSON object"),
        (record(started_at="2025-03-05"), "started_at", "timezone"),
        (
            record(messages=[{"at": "2025-03-05T14:02:11+08:00", "role": "bot", "text": "x"}]),
            "messages.0.role",
            "'visitor'",
        ),
        (
            record(
                messages=[
                    {"at": "2025-03-05T14:02:11+08:00", "role": "consultant", "text": "x", "stage": "upsell"}
                ]
            ),
            "messages.0.stage",
            "greet",
        ),
        (
            record(messages=[{"at": "2025-03-05T14:02:11+08:00", "role": "visitor", "text": ""}]),
            "messages.0.text",
            "empty",
        ),
        (
            record(
                messages=[
                    {"at": "2025-03-05T14:02:11+08:00", "role": "visitor", "text": "a"},
                    {"at": "2025-03-05T14:00:00+08:00", "role": "consultant", "text": "b"},
                ]
            ),
            "messages.1.at",
            "older",
        ),
        ({k: v for k, v in record().items() if k != "messages"}, "messages", "required"),
        (record(visit={"engine": "yahoo"}), "visit.engine", "baidu"),
    ],
)
def test_each_kind_of_bad_record_is_named(tmp_path, item, field, words):
    f = write_lines(tmp_path / "bad.jsonl", [record(conversation_id="good"), item])
    res = runner.invoke(app, ["data", "validate", str(f)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    problems = _problems(res.output)
    assert problems, res.output
    line, got_field, problem = problems[0]
    assert line == 2
    assert got_field == field
    assert words in problem


def test_duplicate_ids_reported_on_second_line(tmp_path):
    f = write_lines(
        tmp_path / "dup.jsonl",
        [record(conversation_id="x"), record(conversation_id="y"), record(conversation_id="x")],
    )
    res = runner.invoke(app, ["data", "validate", str(f)])
    assert res.exit_code == 1
    assert _problems(res.output) == [(3, "conversation_id", "duplicate conversation id 'x'")]


def test_first_fifty_then_a_count(tmp_path):
    f = write_lines(tmp_path / "many.jsonl", [b"{oops"] * 70)
    res = runner.invoke(app, ["data", "validate", str(f)])
    assert res.exit_code == 1
    assert len(_problems(res.output)) == 50
    assert "and 20 more problems" in res.output


def test_missing_file_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["data", "validate", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 2
    assert "no such file" in res.output


def test_readers_skip_with_a_count_or_fail_when_strict(tmp_path):
    f = write_lines(
        tmp_path / "mixed.jsonl", [record(conversation_id="a"), b"{bad", record(conversation_id="b")]
    )
    report = SkipReport()
    ids = [c.conversation_id for c in read_conversations(f, report=report)]
    assert ids == ["a", "b"] and report.skipped == 1 and report.read == 2
    with pytest.raises(InvalidRecordError, match=r"mixed.jsonl:2: \(line\): invalid JSON"):
        list(read_conversations(f, strict=True))
    res = runner.invoke(app, ["data", "summary", str(f)])
    assert res.exit_code == 0 and "skipped 1 invalid" in res.output
    res = runner.invoke(app, ["data", "summary", "--strict", str(f)])
    assert res.exit_code == 1 and "mixed.jsonl:2" in res.output


def test_summary_rates_by_group(tmp_path):
    recs = [
        record(conversation_id="a", outcome={"contact": True, "booked": True, "arrived": True}),
        record(conversation_id="b", outcome={"contact": True, "booked": False, "arrived": False}),
        record(
            conversation_id="c",
            department="口腔",
            consultant_id="kf02",
            outcome={"contact": False, "booked": False},
        ),
    ]
    f = write_lines(tmp_path / "s.jsonl", recs)
    res = runner.invoke(app, ["data", "summary", "--json", str(f)])
    assert res.exit_code == 0, res.output
    import json

    out = json.loads(res.output)
    assert out["overall"]["chats"] == 3
    assert out["overall"]["booked_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert out["by_department"]["整形美容"]["contact_rate"] == 1.0
    assert out["by_consultant"]["kf02"]["booked_rate"] == 0.0


def test_write_jsonl_round_trip_and_gzip(tmp_path):
    recs = [record(conversation_id=f"c{i}") for i in range(5)]
    for name in ("a.jsonl", "a.jsonl.gz"):
        n = write_jsonl(tmp_path / name, recs)
        assert n == 5
        back = [c.to_record() for c in read_conversations(tmp_path / name)]
        assert [r["conversation_id"] for r in back] == [f"c{i}" for i in range(5)]
    assert not list(tmp_path.glob("*.partial"))
