"""Script library (话术库): coverage, compliance, slot filling, validation errors, the library CLI."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from yuyue.data.contract import STAGES
from yuyue.models.replies.cli import compliance_app
from yuyue.models.replies.guard import ComplianceGuard
from yuyue.models.replies.scripts import (
    DEFAULT_FALLBACKS,
    DEFAULT_LIBRARY,
    SLOTS,
    Concern,
    LibraryError,
    ScriptEntry,
    fill_slots,
    load_library,
    scripts_for,
)

LIBRARY = load_library()
GUARD = ComplianceGuard.default()
FULL_VALUES = {
    "address_form": "王女士",
    "project": "隆鼻",
    "doctor": "李医生",
    "hospital": "仁和医院",
    "address": "人民路88号",
    "phone": "0571-12345678",
    # the knowledge base's slots (serving/knowledge.py)
    "price_range": "3000到8000元",
    "duration": "一般1到2小时，术后一周拆线",
    "doctor_intro": "整形美容科的李明主任医师明天（周三）9:00–12:00出诊，平时主要看鼻部整形",
    "activity": "春季面诊活动：面诊检查费减免（4月30日前有效；限首次到院）",
    "directions": "地铁2号线人民广场站3号口出，步行约5分钟",
    "bring": "身份证和以前的检查报告",
}
NO_FALLBACK = {
    "address",
    "phone",
    "price_range",
    "duration",
    "doctor_intro",
    "activity",
    "directions",
    "bring",
}


# ---------------------------------------------------------------- coverage and compliance


def test_every_stage_has_at_least_six_scripts() -> None:
    counts = Counter(e.stage.value for e in LIBRARY)
    assert set(counts) == set(STAGES)
    assert all(counts[s] >= 6 for s in STAGES), counts


def test_resolve_concern_covers_each_concern() -> None:
    counts = Counter(e.concern for e in LIBRARY if e.stage == "resolve_concern")
    for concern in ("price", "safety", "pain", "recovery", "effect", "privacy", "distance"):
        assert counts[Concern(concern)] >= 2, concern
    assert sum(counts.values()) > 6 * 2


def test_departments_and_projects_are_represented() -> None:
    departments = Counter(e.department for e in LIBRARY if e.department)
    assert {"整形美容", "男科", "妇科", "口腔"} <= set(departments)
    assert any(e.project for e in LIBRARY)
    assert sum(e.department is None for e in LIBRARY) > len(LIBRARY) / 2  # mostly general scripts


def test_library_uses_every_slot() -> None:
    used = {s for e in LIBRARY for s in e.slots}
    assert used == set(SLOTS)


@pytest.mark.parametrize("entry", LIBRARY, ids=[e.id for e in LIBRARY])
def test_every_script_passes_the_guard(entry: ScriptEntry) -> None:
    for text in (entry.text, fill_slots(entry.text, FULL_VALUES), fill_slots(entry.text, {})):
        verdict = GUARD.check(text)
        assert verdict.allowed, f"{entry.id}: {verdict.rules}: {text}"


@pytest.mark.parametrize("entry", LIBRARY, ids=[e.id for e in LIBRARY])
def test_every_script_reads_well_with_and_without_values(entry: ScriptEntry) -> None:
    full = fill_slots(entry.text, FULL_VALUES)
    assert "{" not in full and "}" not in full
    assert full
    fallback = fill_slots(entry.text, {})
    assert "{" not in fallback
    assert "您您" not in fallback and "您，您" not in fallback
    if not NO_FALLBACK & set(entry.slots):
        assert fallback, entry.id


# ---------------------------------------------------------------- slot filling


def test_fill_slots_uses_values_then_fallbacks() -> None:
    text = "{address_form}好，{doctor}下午有空。"
    assert fill_slots(text, {"address_form": "王女士", "doctor": "李医生"}) == "王女士好，李医生下午有空。"
    assert fill_slots(text, {}) == "您好，医生下午有空。"
    assert (
        fill_slots(text, {"address_form": "  ", "doctor": None}) == "您好，医生下午有空。"
    )  # blank = missing
    assert fill_slots("{project}要面诊。", {}) == f"{DEFAULT_FALLBACKS['project']}要面诊。"


def test_fill_slots_drops_the_sentence_of_a_slot_without_value_or_fallback() -> None:
    text = "{hospital}的地址是{address}。您从哪里出发？找不到可以打{phone}！到了报名字就行"
    assert fill_slots(text, {"hospital": "仁和医院"}) == "您从哪里出发？到了报名字就行"
    assert fill_slots(text, {"address": "人民路88号", "phone": "123"}) == (
        "我们医院的地址是人民路88号。您从哪里出发？找不到可以打123！到了报名字就行"
    )
    assert fill_slots("路上找不到的话，可以打{phone}。", {}) == ""  # nothing left: the caller skips it


def test_fill_slots_custom_defaults() -> None:
    assert fill_slots("{address_form}好。请坐。", {}, defaults={}) == "请坐。"
    assert fill_slots("{address_form}好。", {}, defaults={"address_form": "亲"}) == "亲好。"


def test_fill_slots_does_not_re_expand_values_and_rejects_unknown_slots() -> None:
    assert fill_slots("电话：{phone}。", {"phone": "{address}"}) == "电话：{address}。"
    assert fill_slots("{address}，{phone}。", {"address": "{phone}", "phone": "1"}) == "{phone}，1。"
    with pytest.raises(ValueError, match="unknown slot"):
        fill_slots("{price}元", {})


def test_scripts_for_filters_by_stage_department_project_and_concern() -> None:
    general = scripts_for(LIBRARY, "greet")
    assert general and all(e.department is None for e in general)
    dental = scripts_for(LIBRARY, "greet", department="口腔")
    assert {e.id for e in general} < {e.id for e in dental}
    assert all(e.department in (None, "口腔") for e in dental)
    price = scripts_for(LIBRARY, "resolve_concern", concern="price")
    assert price and all(e.concern in (None, Concern.price) for e in price)
    assert not any(e.project == "种植牙" for e in price)
    implant = scripts_for(LIBRARY, "resolve_concern", concern="price", department="口腔", project="种植牙")
    assert any(e.project == "种植牙" for e in implant)
    with pytest.raises(ValueError):
        scripts_for(LIBRARY, "no_such_stage")


# ---------------------------------------------------------------- validation


def _write(tmp_path: Path, scripts: object) -> Path:
    path = tmp_path / "library.yaml"
    path.write_text(yaml.safe_dump({"scripts": scripts}, allow_unicode=True), encoding="utf-8")
    return path


GOOD = {"id": "greet_x", "stage": "greet", "text": "您好。"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (dict(GOOD, stage="gret"), r"entry #2 \(greet_x\): field 'stage': unknown stage 'gret'"),
        ({"id": "greet_x", "stage": "greet"}, r"entry #2 \(greet_x\): field 'text': Field required"),
        (dict(GOOD, text="  "), r"entry #2 \(greet_x\): field 'text'"),
        (dict(GOOD, text="{price}元"), r"field 'text': unknown slot \{price\}"),
        (dict(GOOD, concern="price"), r"'concern' is only allowed with stage resolve_concern"),
        (dict(GOOD, stage="resolve_concern", concern="weather"), r"field 'concern'"),
        (dict(GOOD, colour="red"), r"field 'colour'"),
        (dict(GOOD, id="Greet X"), r"field 'id'"),
        (dict(GOOD, id="greet_a"), r"entry #2 \(greet_a\): field 'id': duplicate id \(first at entry #1\)"),
    ],
)
def test_invalid_entries_name_the_entry_and_field(tmp_path: Path, entry: dict, message: str) -> None:
    path = _write(tmp_path, [dict(GOOD, id="greet_a"), entry])
    with pytest.raises(LibraryError, match=message):
        load_library(path)


def test_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(LibraryError, match="'scripts' list"):
        load_library(_write(tmp_path, {"not": "a list"}))
    with pytest.raises(LibraryError, match="cannot read"):
        load_library(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("scripts: [\n", encoding="utf-8")
    with pytest.raises(LibraryError, match="cannot read"):
        load_library(broken)


def test_default_library_path_and_valid_round_trip(tmp_path: Path) -> None:
    assert load_library(DEFAULT_LIBRARY) == LIBRARY
    entries = load_library(_write(tmp_path, [GOOD]))
    assert entries == [ScriptEntry(id="greet_x", stage="greet", text="您好。")]


# ---------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_check_library_passes_the_shipped_library() -> None:
    result = runner.invoke(compliance_app, ["check-library"])
    assert result.exit_code == 0, result.output
    assert f"{len(LIBRARY)} scripts, 0 disallowed" in result.stderr


def test_cli_check_library_reports_non_compliant_and_invalid_scripts(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD, {"id": "promise", "stage": "describe_outcome", "text": "做完保证效果。"}])
    result = runner.invoke(compliance_app, ["check-library", str(path)])
    assert result.exit_code == 1
    assert "promise: guarantee_result" in result.stdout
    invalid = _write(tmp_path, [dict(GOOD, stage="nope")])
    result = runner.invoke(compliance_app, ["check-library", str(invalid)])
    assert result.exit_code == 1
    assert "field 'stage'" in result.stderr
