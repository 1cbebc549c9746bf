"""The chat-tool export importer: the shipped 商务通 mapping and sample, CSV/XLSX/GBK, errors, CLI."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from yuyue.cli.main import app
from yuyue.data.contract import Conversation
from yuyue.data.importers import (
    MAPPINGS_DIR,
    ImportError_,
    RowProblem,
    TranscriptParser,
    import_export,
    load_mapping,
)
from yuyue.data.importers.records import outcome_from_remark
from yuyue.data.importers.tables import detect_encoding
from yuyue.data.io import SkipReport, read_conversations

PACKAGE = Path(__file__).resolve().parents[2] / "data" / "importers"
MAPPING = MAPPINGS_DIR / "shangwutong.yaml"
SAMPLE = PACKAGE / "samples" / "shangwutong_sample.csv"
CST = timezone(timedelta(hours=8))


def read_sample_rows() -> list[list[str]]:
    with open(SAMPLE, encoding="utf-8-sig", newline="") as fh:
        return list(csv.reader(fh))


def write_csv(path: Path, rows: list[list[str]], encoding: str = "utf-8-sig") -> Path:
    with open(path, "w", encoding=encoding, newline="") as fh:
        csv.writer(fh, lineterminator="\r\n").writerows(rows)
    return path


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_id(path: Path) -> dict[str, dict]:
    return {r["conversation_id"]: r for r in records(path)}


@pytest.fixture(scope="module")
def sample_import(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sample") / "sample.jsonl"
    result = import_export(SAMPLE, MAPPING, out)
    return result, out


# --- the shipped sample -------------------------------------------------------------------------------------


def test_sample_counts_and_broken_rows(sample_import):
    result, out = sample_import
    assert result.rows == 12
    assert result.written == 10
    assert [row for row, _ in result.problems] == [6, 10]
    (_, bad_time), (_, empty) = result.problems
    assert bad_time.startswith("开始时间: ") and "3月6日上午" in bad_time
    assert empty == "对话内容: empty transcript"
    assert len(records(out)) == 10
    assert not out.with_name(out.name + ".partial").exists()


def test_sample_records_validate_and_omit_blank_fields(sample_import):
    _, out = sample_import
    report = SkipReport()
    convs = list(read_conversations(out, report=report))
    assert len(convs) == 10 and report.skipped == 0

    def no_blanks(value):
        if isinstance(value, dict):
            return all(v is not None and v != "" and no_blanks(v) for v in value.values())
        if isinstance(value, list):
            return all(no_blanks(v) for v in value)
        return True

    for rec in records(out):
        assert no_blanks(rec), rec["conversation_id"]
        assert "hospital" not in rec and "grade" not in rec


def test_sample_first_row_fields(sample_import):
    _, out = sample_import
    rec = by_id(out)["SWT20250305001"]
    assert rec["department"] == "整形美容"
    assert rec["project"] == "隆鼻"
    assert rec["consultant_id"] == "张医生"
    assert rec["started_at"] == "2025-03-05T14:02:05+08:00"
    assert rec["visit"] == {
        "visitor_id": "V10001",
        "engine": "baidu",
        "keyword": "隆鼻多少钱",
        "landing_url": "https://www.example-hospital.cn/zx/longbi.html?bdjj=a1b2",
        "referrer": "https://www.baidu.com/s?wd=隆鼻多少钱",
        "region": "浙江省杭州市 西湖区",
        "device": "pc",
    }
    assert rec["outcome"] == {"contact": True, "booked": True}
    msgs = rec["messages"]
    assert [m["role"] for m in msgs] == ["visitor", "consultant"] * 3
    assert msgs[0] == {"at": "2025-03-05T14:02:11+08:00", "role": "visitor", "text": "你好，隆鼻多少钱"}
    assert msgs[3]["text"] == (
        "王女士您好，隆鼻要根据鼻子的基础来定方案，\n价格从几千到几万不等。\n方便留个电话吗？专家可以给您详细评估。"
    )
    assert msgs[4]["text"] == "13800001234"


def test_sample_time_only_midnight_wrap_system_line_and_hashed_id(sample_import):
    _, out = sample_import
    recs = [r for r in records(out) if r["visit"].get("visitor_id") == "V10003"]
    assert len(recs) == 1
    rec = recs[0]
    assert rec["conversation_id"].startswith("swt-") and len(rec["conversation_id"]) == 4 + 16
    assert [(m["at"], m["role"]) for m in rec["messages"]] == [
        ("2025-03-05T23:58:20+08:00", "visitor"),
        ("2025-03-05T23:59:10+08:00", "consultant"),
        ("2025-03-06T00:01:05+08:00", "visitor"),
        ("2025-03-06T00:02:30+08:00", "consultant"),
        ("2025-03-06T00:02:30+08:00", "system"),
    ]
    assert rec["messages"][-1]["text"] == "对话已结束"
    assert rec["outcome"] == {"booked": False}  # blank 备注
    # Re-importing gives the same id.
    again = by_id(out)
    assert rec["conversation_id"] in again


def test_sample_speaker_variants_crlf_and_consultant_from_speaker(sample_import):
    _, out = sample_import
    recs = by_id(out)
    paren = recs["SWT20250305002"]["messages"]  # 访客12345(20:15:45)
    assert [m["role"] for m in paren] == ["visitor", "consultant", "visitor", "consultant"]
    assert paren[0]["at"] == "2025-03-05T20:15:45+08:00"
    colon = recs["SWT20250306001"]["messages"]  # 访客20871：2025-03-06 09:30:05
    assert [m["role"] for m in colon] == ["visitor", "consultant", "visitor"]
    crlf = recs["SWT20250306003"]["messages"]
    assert (
        crlf[1]["text"]
        == "您好，种植牙费用主要看种植体品牌：\n\n国产的几千元一颗，进口的一万左右。\n我们本月有活动，可以加微信详细了解。"
    )
    assert crlf[2]["text"] == "微信 wx_demo_2025"
    system = recs["SWT20250306004"]["messages"]
    assert system[-1] == {"at": "2025-03-06T15:05:00+08:00", "role": "system", "text": "访客已离开"}
    no_column = [r for r in recs.values() if r["visit"].get("visitor_id") == "V10012"][0]
    assert no_column["consultant_id"] == "周医生"
    assert [m["role"] for m in no_column["messages"]] == ["visitor", "consultant", "visitor"]


def test_sample_engines_outcomes_and_keyword_from_referrer(sample_import):
    _, out = sample_import
    got = {r["visit"]["visitor_id"]: (r["visit"].get("engine"), r.get("outcome")) for r in records(out)}
    assert got == {
        "V10001": ("baidu", {"contact": True, "booked": True}),
        "V10002": ("sogou", {"booked": True, "arrived": True}),
        "V10003": ("so360", {"booked": False}),
        "V10004": ("shenma", {"booked": False}),
        "V10006": ("bing", {"contact": True, "booked": False}),
        "V10007": ("direct", {"booked": False}),
        "V10008": ("toutiao", {"booked": True}),
        "V10010": ("google", {"booked": True, "arrived": True}),
        "V10011": ("other", {"booked": False}),
        "V10012": ("so360", {"contact": True, "booked": False}),
    }
    assert by_id(out)["SWT20250306001"]["visit"]["keyword"] == "妇科炎症"  # from ?q= of the referrer


# --- engine and outcome rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, engine",
    [
        ("百度", "baidu"),
        ("百度推广", "baidu"),
        ("https://www.baidu.com/s?wd=360", "baidu"),
        ("https://m.baidu.com/from=1", "baidu"),
        ("搜狗", "sogou"),
        ("https://www.sogou.com/web?query=x", "sogou"),
        ("360", "so360"),
        ("360搜索", "so360"),
        ("好搜", "so360"),
        ("https://www.so.com/s?q=x", "so360"),
        ("神马", "shenma"),
        ("https://m.sm.cn/s?q=x", "shenma"),
        ("必应", "bing"),
        ("谷歌", "google"),
        ("头条", "toutiao"),
        ("今日头条", "toutiao"),
        ("直接输入", "direct"),
        ("直接访问", "direct"),
        ("https://www.zhihu.com/question/1", "other"),
        ("微信朋友圈", "other"),
        ("", None),
    ],
)
def test_engine_rules(source, engine, tmp_path):
    rows = read_sample_rows()
    rows = [rows[0], rows[1][:5] + [source] + rows[1][6:]]
    out = tmp_path / "o.jsonl"
    import_export(write_csv(tmp_path / "e.csv", rows), MAPPING, out)
    assert records(out)[0]["visit"].get("engine") == engine


@pytest.mark.parametrize(
    "remark, outcome",
    [
        ("", {"booked": False}),
        ("已预约", {"booked": True}),
        ("约到 3/9", {"booked": True}),
        ("未预约", {"booked": False}),
        ("没约到", {"booked": False}),
        ("到诊", {"booked": True, "arrived": True}),
        ("已来院", {"booked": True, "arrived": True}),
        ("未到诊", {"booked": False}),
        ("留电", {"contact": True, "booked": False}),
        ("留微信 已约", {"contact": True, "booked": True}),
        ("有电话 未约", {"contact": True, "booked": False}),
        ("无效", {"booked": False}),
        ("问价格", {"booked": False}),
    ],
)
def test_outcome_rules(remark, outcome):
    assert outcome_from_remark(remark, load_mapping(MAPPING).outcome) == outcome


def test_outcome_options_turned_off():
    rules = load_mapping(MAPPING).outcome.model_copy(
        update={"blank_remark_means_no_booking": False, "unmatched_remark_means_no_booking": False}
    )
    assert outcome_from_remark("", rules) is None
    assert outcome_from_remark("问价格", rules) is None
    assert outcome_from_remark("留电", rules) == {"contact": True}
    assert outcome_from_remark("未约", rules) == {"booked": False}


# --- transcript parsing --------------------------------------------------------------------------------------

START = datetime(2025, 3, 5, 14, 2, 0, tzinfo=CST)


@pytest.fixture(scope="module")
def parser() -> TranscriptParser:
    return TranscriptParser(load_mapping(MAPPING).transcript, column="对话内容")


@pytest.mark.parametrize(
    "header",
    [
        "客人 2025-03-05 14:02:11",
        "客人(14:02:11)",
        "客人（2025-03-05 14:02:11）",
        "客人：14:02:11",
        "客人  14:02:11",
        "客人:2025/03/05 14:02:11",
        "  客人 14:02:11  ",
    ],
)
def test_header_variants(parser, header):
    msgs = parser.parse(f"{header}\n你好\n张医生 14:02:30\n您好", START)
    assert [(m.role, m.text, m.at) for m in msgs] == [
        ("visitor", "你好", datetime(2025, 3, 5, 14, 2, 11, tzinfo=CST)),
        ("consultant", "您好", datetime(2025, 3, 5, 14, 2, 30, tzinfo=CST)),
    ]
    assert msgs[1].speaker == "张医生"


@pytest.mark.parametrize("speaker", ["客人", "访客", "顾客", "游客88", "访客12345", "浙江杭州网友", "小美"])
def test_visitor_speakers(parser, speaker):
    msgs = parser.parse(f"{speaker} 14:02:11\n你好", START, visitor_names={"小美"})
    assert msgs[0].role == "visitor"


def test_multiline_blank_lines_and_crlf(parser):
    text = "\r\n客人 14:02:11\r\n第一行\r\n\r\n第三行\r\n\r\n张医生 14:02:30\r\n好的\r\n\r\n"
    msgs = parser.parse(text, START)
    assert [m.text for m in msgs] == ["第一行\n\n第三行", "好的"]


def test_message_like_time_is_not_a_header(parser):
    msgs = parser.parse("客人 14:02:11\n明天 15:30 可以吗\n张医生 14:02:30\n可以", START)
    assert [m.text for m in msgs] == ["明天 15:30 可以吗", "可以"]


def test_system_messages_kept_or_dropped(parser):
    text = "客人 14:02:11\n你好\n系统消息 14:03:00\n客服已接入\n张医生 14:03:05\n您好\n访客已离开"
    kept = parser.parse(text, START)
    assert [(m.role, m.text) for m in kept] == [
        ("visitor", "你好"),
        ("system", "客服已接入"),
        ("consultant", "您好"),
        ("system", "访客已离开"),
    ]
    rules = load_mapping(MAPPING).transcript.model_copy(update={"system_messages": "drop"})
    dropped = TranscriptParser(rules).parse(text, START)
    assert [m.role for m in dropped] == ["visitor", "consultant"]


def test_time_going_back_is_a_problem(parser):
    with pytest.raises(RowProblem, match=r"对话内容: line 3: time 14:01:00 is earlier"):
        parser.parse("客人 14:02:11\n你好\n张医生 14:01:00\n您好", START)
    with pytest.raises(RowProblem, match=r"line 3: time 2025-03-05 14:01:00 is earlier"):
        parser.parse("客人 2025-03-05 14:02:11\n你好\n张医生 2025-03-05 14:01:00\n您好", START)


def test_first_message_across_midnight_from_start(parser):
    late = datetime(2025, 3, 5, 23, 59, 50, tzinfo=CST)
    msgs = parser.parse("客人 00:00:05\n在吗", late)
    assert msgs[0].at == datetime(2025, 3, 6, 0, 0, 5, tzinfo=CST)


def test_text_before_first_header_and_no_messages(parser):
    with pytest.raises(RowProblem, match=r"line 1: expected a speaker and time line, got '你好'"):
        parser.parse("你好\n客人 14:02:11\n在吗", START)
    with pytest.raises(RowProblem, match="no messages"):
        parser.parse("客人 14:02:11\n\n张医生 14:02:30\n", START)
    with pytest.raises(RowProblem, match="not a valid time '25:61:00'"):
        parser.parse("客人 25:61:00\n在吗", START)


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("客人张医生 ：:()（）0123456789-\n\r你好系统消息对话已结束")),
        max_size=200,
    )
)
def test_any_transcript_gives_messages_or_a_row_problem(text):
    parser = TranscriptParser(load_mapping(MAPPING).transcript)
    try:
        msgs = parser.parse(text, START)
    except RowProblem:
        return
    Conversation(
        conversation_id="x",
        started_at=START,
        messages=[{"at": m.at, "role": m.role, "text": m.text} for m in msgs],
    )


# --- file formats --------------------------------------------------------------------------------------------


def test_xlsx_gives_the_same_records(tmp_path, sample_import):
    _, csv_out = sample_import
    book = openpyxl.Workbook()
    sheet = book.active
    for i, row in enumerate(read_sample_rows()):
        if i > 0:
            row = list(row)
            try:  # a real date cell where the text is a valid time, as Excel stores it
                row[1] = datetime.strptime(row[1].replace("/", "-"), "%Y-%m-%d %H:%M:%S")
            except ValueError:
                pass
        sheet.append(row)
    book.save(tmp_path / "export.xlsx")
    out = tmp_path / "x.jsonl"
    result = import_export(tmp_path / "export.xlsx", MAPPING, out)
    assert (result.rows, result.written) == (12, 10)
    assert [row for row, _ in result.problems] == [6, 10]
    assert records(out) == records(csv_out)


def test_xlsx_title_row_and_blank_rows_keep_row_numbers(tmp_path):
    rows = read_sample_rows()
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["商务通对话记录 2025-03-01 至 2025-03-31"])
    sheet.append(rows[0])
    sheet.append(rows[1])
    sheet.append([])
    sheet.append(rows[9])  # the empty transcript (sample row 10)
    book.save(tmp_path / "t.xlsx")
    result = import_export(tmp_path / "t.xlsx", MAPPING, tmp_path / "t.jsonl")
    assert (result.rows, result.written) == (2, 1)
    assert result.problems == [(5, "对话内容: empty transcript")]


def test_gbk_csv(tmp_path, sample_import):
    _, utf8_out = sample_import
    gbk = write_csv(tmp_path / "gbk.csv", read_sample_rows(), encoding="gbk")
    assert detect_encoding(gbk) == "gb18030"
    out = tmp_path / "gbk.jsonl"
    result = import_export(gbk, MAPPING, out)
    assert (result.written, [r for r, _ in result.problems]) == (10, [6, 10])
    assert records(out) == records(utf8_out)


def test_not_text_and_unknown_types(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x81\x30\xff\xfe\x00" * 10)
    with pytest.raises(ImportError_, match="not UTF-8 or GB18030"):
        import_export(bad, MAPPING, tmp_path / "o.jsonl")
    fake = tmp_path / "fake.xlsx"
    fake.write_text("not a zip")
    with pytest.raises(ImportError_, match="not a readable .xlsx"):
        import_export(fake, MAPPING, tmp_path / "o.jsonl")
    with pytest.raises(ImportError_, match="old .xls"):
        import_export(tmp_path / "a.xls", MAPPING, tmp_path / "o.jsonl")
    with pytest.raises(ImportError_, match="unknown export type"):
        import_export(tmp_path / "a.txt", MAPPING, tmp_path / "o.jsonl")


# --- whole-file errors -----------------------------------------------------------------------------------------


def test_missing_required_column(tmp_path):
    rows = [[c for i, c in enumerate(r) if i != 12] for r in read_sample_rows()]  # drop 对话内容
    with pytest.raises(ImportError_) as exc:
        import_export(write_csv(tmp_path / "m.csv", rows), MAPPING, tmp_path / "o.jsonl")
    msg = str(exc.value)
    assert "m.csv" in msg and "'对话内容'" in msg and "columns.transcript" in msg and "开始时间" in msg
    assert not (tmp_path / "o.jsonl").exists()


def test_optional_column_missing_is_reported_not_fatal(tmp_path):
    rows = [[c for i, c in enumerate(r) if i != 9] for r in read_sample_rows()]  # drop 科室
    out = tmp_path / "o.jsonl"
    result = import_export(write_csv(tmp_path / "m.csv", rows), MAPPING, out)
    assert result.written == 10 and "columns.department (科室)" in result.missing_columns
    assert all("department" not in r for r in records(out))
    res = runner.invoke(
        app, ["data", "import", "--mapping", str(MAPPING), str(tmp_path / "m.csv"), "--out", str(out)]
    )
    assert res.exit_code == 0 and "optional column columns.department (科室) not in the export" in res.output


@pytest.mark.parametrize(
    "yaml_text, names",
    [
        ("extends: shangwutong\nenginez: {}\n", "'enginez': unknown key"),
        (
            "extends: shangwutong\nengines: {rules: [{engine: yahoo, pattern: yahoo}]}\n",
            "'engines.rules.0.engine'",
        ),
        (
            "extends: shangwutong\noutcome: {rules: [{mark: booked, pattern: '(预约'}]}\n",
            "'outcome.rules.0.pattern': invalid regular expression",
        ),
        ("extends: shangwutong\ntime: {timezone: Mars/Base}\n", "'time.timezone'"),
        (
            "extends: shangwutong\ntranscript: {header_patterns: ['^(?P<speaker>.+) (?P<t>\\d+)$']}\n",
            "'transcript.header_patterns'",
        ),
        ("tool: x\n", "'columns': required key is missing"),
        ("extends: nowhere\n", "'extends'"),
        ("- just a list\n", "must be a YAML mapping"),
        ("tool: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_mapping(tmp_path, yaml_text, names):
    mapping = tmp_path / "bad.yaml"
    mapping.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ImportError_) as exc:
        import_export(SAMPLE, mapping, tmp_path / "o.jsonl")
    assert names in str(exc.value)
    assert "bad.yaml" in str(exc.value)


def test_extending_mapping_overrides_columns(tmp_path):
    rows = read_sample_rows()
    rows[0] = ["会话开始时间" if c == "开始时间" else "聊天记录" if c == "对话内容" else c for c in rows[0]]
    mapping = tmp_path / "53kf.yaml"
    mapping.write_text(
        "extends: shangwutong\ntool: 53kf\nhospital: h01\n"
        "columns: {started_at: 会话开始时间, transcript: 聊天记录}\n"
        "transcript: {system_messages: drop}\n",
        encoding="utf-8",
    )
    out = tmp_path / "o.jsonl"
    result = import_export(write_csv(tmp_path / "k.csv", rows), mapping, out)
    assert result.written == 10
    recs = records(out)
    assert {r["hospital"] for r in recs} == {"h01"}
    assert all(m["role"] != "system" for r in recs for m in r["messages"])
    assert recs[0]["visit"]["engine"] == "baidu"  # rules inherited


def test_duplicate_ids_reported(tmp_path):
    rows = read_sample_rows()
    out = tmp_path / "o.jsonl"
    result = import_export(write_csv(tmp_path / "d.csv", [rows[0], rows[1], rows[2], rows[1]]), MAPPING, out)
    assert result.written == 2
    assert result.problems == [(4, "对话ID: duplicate conversation id 'SWT20250305001' (same as row 2)")]


def test_shipped_mapping_documents_every_key():
    text = MAPPING.read_text(encoding="utf-8")
    comments = sum(1 for line in text.splitlines() if line.lstrip().startswith("#") or " # " in line)
    assert comments > 40
    mapping = load_mapping(MAPPING)
    for key in type(mapping).model_fields:
        assert f"\n{key}:" in text, key


# --- strict ----------------------------------------------------------------------------------------------------


def test_strict_writes_nothing_and_keeps_old_output(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("old\n", encoding="utf-8")
    result = import_export(SAMPLE, MAPPING, out, strict=True)
    assert result.written == 0 and result.rows == 12
    assert [r for r, _ in result.problems] == [6, 10]
    assert out.read_text(encoding="utf-8") == "old\n"
    assert list(tmp_path.iterdir()) == [out]


def test_strict_clean_file_writes(tmp_path):
    rows = read_sample_rows()
    clean = [r for i, r in enumerate(rows, start=1) if i not in (6, 10)]
    out = tmp_path / "o.jsonl"
    result = import_export(write_csv(tmp_path / "c.csv", clean), MAPPING, out, strict=True)
    assert (result.written, result.problems) == (10, [])
    assert len(records(out)) == 10


# --- CLI -------------------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_import_reports_rows(tmp_path):
    out = tmp_path / "o.jsonl"
    res = runner.invoke(app, ["data", "import", "--mapping", str(MAPPING), str(SAMPLE), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "imported 10 of 12 rows" in res.stdout and "2 rows not parsed" in res.stdout
    assert f"{SAMPLE}:row 6: 开始时间: cannot read" in res.stderr
    assert f"{SAMPLE}:row 10: 对话内容: empty transcript" in res.stderr
    assert len(records(out)) == 10


def test_cli_import_strict_fails(tmp_path):
    out = tmp_path / "o.jsonl"
    res = runner.invoke(
        app, ["data", "import", "--mapping", str(MAPPING), str(SAMPLE), "--out", str(out), "--strict"]
    )
    assert res.exit_code == 1
    assert "nothing written (--strict): 2 of 12 rows not parsed" in res.output
    assert not out.exists()


def test_cli_import_whole_file_error(tmp_path):
    rows = [[c for i, c in enumerate(r) if i != 1] for r in read_sample_rows()]  # drop 开始时间
    export = write_csv(tmp_path / "e.csv", rows)
    res = runner.invoke(
        app, ["data", "import", "--mapping", str(MAPPING), str(export), "--out", str(tmp_path / "o.jsonl")]
    )
    assert res.exit_code == 1
    assert res.stderr.startswith("error: ") and "'开始时间'" in res.stderr
    assert "Traceback" not in res.output


def test_cli_import_bad_mapping_and_no_file(tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text("extends: shangwutong\ncolumns: {started_at: []}\n", encoding="utf-8")
    res = runner.invoke(
        app, ["data", "import", "--mapping", str(mapping), str(SAMPLE), "--out", str(tmp_path / "o.jsonl")]
    )
    assert res.exit_code == 1 and "columns.started_at" in res.stderr
    res = runner.invoke(
        app, ["data", "import", "--mapping", str(MAPPING), str(tmp_path / "none.csv"), "--out", "o.jsonl"]
    )
    assert res.exit_code == 2 and "no such file" in res.stderr


def test_sample_csv_is_plain_utf8_with_bom():
    raw = SAMPLE.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert len(rows) == 13


def test_empty_header_only_and_explicit_header_row(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ImportError_, match="the file is empty"):
        import_export(empty, MAPPING, tmp_path / "o.jsonl")
    rows = read_sample_rows()
    result = import_export(write_csv(tmp_path / "h.csv", rows[:1]), MAPPING, tmp_path / "h.jsonl")
    assert (result.rows, result.written, result.problems) == (0, 0, [])
    assert (tmp_path / "h.jsonl").read_text() == ""
    mapping = tmp_path / "m.yaml"
    mapping.write_text("extends: shangwutong\nheader_row: 2\n", encoding="utf-8")
    titled = write_csv(tmp_path / "t.csv", [["对话记录"], *rows[:3]])
    result = import_export(titled, mapping, tmp_path / "t.jsonl")
    assert (result.rows, result.written) == (2, 2)


def test_long_transcript_beyond_csv_default_cell_limit(tmp_path):
    rows = read_sample_rows()
    turns = "".join(f"客人 14:{i // 60:02d}:{i % 60:02d}\n{'很长的问题' * 40}\n" for i in range(1200))
    assert len(turns) > 200_000
    rows[1][12] = turns
    out = tmp_path / "o.jsonl"
    result = import_export(write_csv(tmp_path / "long.csv", rows[:2]), MAPPING, out)
    assert result.written == 1
    assert len(records(out)[0]["messages"]) == 1200
