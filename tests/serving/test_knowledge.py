"""Hospital knowledge (serving/knowledge.py): the rules replies are filled by, the checks a write passes,
the store on SQLite and PostgreSQL, and ``yuyue knowledge import`` / ``export``.

Dates: 2027-03-01 is a Monday (weekday 1)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from yuyue.models.replies.scripts import fill_slots, load_library
from yuyue.serving import knowledge as kb
from yuyue.serving.db import create_all
from yuyue.serving.knowledge_cli import knowledge_app
from yuyue.serving.store import Conflict

MON = date(2027, 3, 1)
TUE, WED = date(2027, 3, 2), date(2027, 3, 3)
AT_MON_10 = datetime(2027, 3, 1, 10, 0, tzinfo=kb.LOCAL_TZ)
GOOD = {
    "hospital": {
        "address": "示例路1号",
        "directions": "地铁2号线示例站3号口出，步行5分钟。",
        "bring": "身份证",
    },
    "departments": [
        {
            "name": "皮肤科",
            "bring": "以前用过的药的名称",
            "projects": [
                {"name": "痤疮治疗", "aliases": ["痘痘", "祛痘"], "price_low": 200, "price_high": 2000},
                {"name": "白癜风", "price_low": 500, "price_high": 6000, "duration": "疗程较长，需定期复诊"},
            ],
        },
        {"name": "眼科", "projects": [{"name": "近视手术", "aliases": ["近视"]}]},
    ],
    "doctors": [
        # on duty Tuesdays only
        {
            "name": "甲",
            "title": "主任医师",
            "department": "皮肤科",
            "specialties": ["白癜风"],
            "duty": [{"weekday": 2}],
        },
        # Tuesdays and Wednesdays, specialised in acne, on leave on Wednesday 2027-03-03
        {
            "name": "乙",
            "title": "副主任医师",
            "department": "皮肤科",
            "specialties": ["痤疮治疗"],
            "duty": [{"weekday": 2, "start": "13:00", "end": "17:00"}, {"weekday": 3}],
            "leave": [{"first_day": "2027-03-03", "last_day": "2027-03-05"}],
        },
        {"name": "丙", "department": "眼科", "duty": [{"weekday": 3}]},
    ],
    "activities": [
        {
            "id": "march",
            "title": "三月皮肤检查预约",
            "wording": "首次到院的皮肤检查可以提前预约时段",
            "valid_from": "2027-03-01",
            "valid_to": "2027-03-31",
            "departments": ["皮肤科"],
        },
        {
            "id": "february",
            "title": "二月预约",
            "wording": "二月的检查可以提前预约",
            "valid_from": "2027-02-01",
            "valid_to": "2027-02-28",
        },
        {
            "id": "april",
            "title": "四月预约",
            "wording": "四月的检查可以提前预约",
            "valid_from": "2027-04-01",
            "valid_to": "2027-04-30",
        },
        {
            "id": "eyes",
            "title": "眼科检查预约",
            "wording": "眼科检查可以提前预约",
            "valid_from": "2027-01-01",
            "valid_to": "2027-12-31",
            "departments": ["眼科"],
        },
        {
            "id": "vitiligo",
            "title": "白癜风复诊提醒",
            "wording": "白癜风复诊可以提前预约时段",
            "valid_from": "2027-01-01",
            "valid_to": "2027-12-31",
            "projects": ["白癜风"],
        },
    ],
}


def _index(doc: dict | None = None) -> kb.Index:
    return kb.Index.of(kb.parse(doc or GOOD), 1)


def _facts(department: str | None, texts: list[str], at: datetime = AT_MON_10, **facts) -> dict:
    index = _index()
    return kb.slot_facts(index, {"department": department, **facts}, [("visitor", t) for t in texts], at)


# ---- duty days --------------------------------------------------------------------------------
def test_a_doctor_off_that_weekday_or_on_leave_is_never_suggested() -> None:
    index = _index()
    skin = "皮肤科"
    assert [d.name for d, _ in kb.doctors_on_duty(index, skin, None, MON)] == []  # nobody works Mondays
    assert [d.name for d, _ in kb.doctors_on_duty(index, skin, None, WED)] == []  # 乙 on leave, 甲 off
    acne = kb.find_project(index, skin, None, ["脸上长痘痘"])
    assert acne is not None and acne.name == "痤疮治疗"
    # both work Tuesdays: the one whose specialties name the project first
    assert [d.name for d, _ in kb.doctors_on_duty(index, skin, acne, TUE)] == ["乙", "甲"]
    # the week after the leave, 乙 works Wednesdays again
    assert [d.name for d, _ in kb.doctors_on_duty(index, skin, acne, date(2027, 3, 10))] == ["乙"]
    # never a doctor of another department
    assert [d.name for d, _ in kb.doctors_on_duty(index, "眼科", None, WED)] == ["丙"]


def test_the_day_is_the_one_the_visitor_named_else_today_or_tomorrow() -> None:
    # named: Wednesday (乙 on leave, 甲 off) -> no doctor named at all
    f = _facts("皮肤科", ["脸上长痘痘", "周三上午能去吗"])
    assert "doctor" not in f and "doctor_intro" not in f["slots"]
    # named: Tuesday -> 乙 (acne), with the day and hours in the introduction
    f = _facts("皮肤科", ["脸上长痘痘", "明天下午可以吗"])
    assert f["doctor"] == "乙副主任医师"
    assert f["slots"]["doctor_intro"].startswith("皮肤科的乙副主任医师明天（周二）13:00–17:00出诊")
    # nothing named on a Monday: nobody today, so tomorrow's (Tuesday) doctor
    f = _facts("皮肤科", ["脸上长痘痘怎么办"])
    assert f["doctor"] == "乙副主任医师" and "明天（周二）" in f["slots"]["doctor_intro"]
    # Tuesday 18:00: today's hours are over, tomorrow (Wednesday) nobody in 皮肤科 is on duty
    late = datetime(2027, 3, 2, 18, 0, tzinfo=kb.LOCAL_TZ)
    assert "doctor" not in _facts("皮肤科", ["痘痘"], at=late)
    # the consultant's proposal counts as much as the visitor's
    msgs = [("visitor", "想看看痘痘"), ("consultant", "您周二下午方便吗"), ("visitor", "好的")]
    f = kb.slot_facts(_index(), {"department": "皮肤科"}, msgs, AT_MON_10)
    assert f["doctor"] == "乙副主任医师"


# ---- duty hours ---------------------------------------------------------------------------------
# 皮肤科 on Tuesday 2027-03-02: 早 (acne, so first) 09:00-12:00; 全 09:00-12:00 and 14:00-17:30 every duty
# day (the doctor's hours: Tuesdays and Wednesdays); 旧 a duty without hours (an older document: 08:00-17:00)
HOURS = {
    "departments": GOOD["departments"],
    "doctors": [
        {
            "name": "早",
            "department": "皮肤科",
            "specialties": ["痤疮治疗"],
            "duty": [{"weekday": 2, "hours": "09:00-12:00"}],
        },
        {
            "name": "全",
            "department": "皮肤科",
            "hours": "09:00-12:00, 14:00-17:30",
            "duty": [{"weekday": 2}, {"weekday": 3}],
        },
        {"name": "旧", "department": "皮肤科", "duty": [{"weekday": 2}]},
    ],
}


def _doctor(text: str, doc: dict = HOURS, at: datetime = AT_MON_10) -> str | None:
    index = _index(doc)
    msgs = [("visitor", "脸上长痘痘")] + ([("visitor", text)] if text else [])
    return kb.slot_facts(index, {"department": "皮肤科"}, msgs, at).get("doctor")


def test_an_hour_named_picks_a_doctor_on_duty_at_that_hour() -> None:
    assert _doctor("明天上午10点可以吗") == "早"  # inside 早's hours (and specialised)
    assert _doctor("明天下午3点可以吗") == "全"  # 早 is off by then; 全's afternoon range
    assert _doctor("明天中午12点半可以吗") == "旧"  # between 全's ranges; 旧's 08:00-17:00
    assert _doctor("明天17:15可以吗") == "全"  # after 旧's 17:00
    assert _doctor("明天晚上7点可以吗") is None  # outside everyone's hours: no name
    assert _doctor("后天下午3点可以吗") == "全"  # Wednesday: the doctor's hours on every duty day
    assert _doctor("后天上午10点可以吗") == "全"
    assert _doctor("后天晚上7点可以吗") is None


def test_a_part_of_the_day_needs_hours_within_it_and_a_day_alone_only_the_day() -> None:
    assert _doctor("明天上午可以吗") == "早"
    assert _doctor("明天下午可以吗") == "全"  # 早's 09:00-12:00 does not reach into the afternoon
    assert _doctor("明天晚上可以吗") is None
    assert _doctor("明天可以过来吗") == "早"  # no hour: the day decides (and the specialty)


def test_no_hours_given_keeps_the_older_08_to_17_and_leave_still_wins() -> None:
    old = {"departments": GOOD["departments"], "doctors": [HOURS["doctors"][2]]}
    assert _doctor("明天上午8点可以吗", old) == "旧" and _doctor("明天16:59可以吗", old) == "旧"
    assert _doctor("明天下午5点可以吗", old) is None and _doctor("明天早上7点可以吗", old) is None
    assert kb.parse(old).doctors[0].duty == [kb.Duty(weekday=2, start="08:00", end="17:00")]
    # on leave on Tuesday: never named, whatever the hour
    away = {"first_day": "2027-03-02", "last_day": "2027-03-02"}
    doc = {**HOURS, "doctors": [{**d, "leave": [away]} for d in HOURS["doctors"]]}
    for text in ("明天上午10点可以吗", "明天下午3点可以吗", "明天可以过来吗", ""):
        assert _doctor(text, doc) is None, text
    assert _doctor("后天下午3点可以吗", doc) == "全"  # back on Wednesday


def test_today_while_the_last_range_lasts_and_the_intro_names_every_range() -> None:
    tue = lambda h, m: datetime(2027, 3, 2, h, m, tzinfo=kb.LOCAL_TZ)  # noqa: E731
    assert _doctor("", at=tue(11, 0)) == "早"
    assert _doctor("", at=tue(16, 0)) == "全"  # 早 is done for the day
    assert _doctor("", at=tue(17, 40)) == "全"  # nobody left today: Wednesday's 全
    f = kb.slot_facts(_index(HOURS), {"department": "皮肤科"}, [("visitor", "明天下午3点可以吗")], AT_MON_10)
    assert f["slots"]["doctor_intro"] == "皮肤科的全明天（周二）9:00–12:00、14:00–17:30出诊"
    day = kb.on_duty(kb.parse(HOURS).doctors[1], TUE)
    assert day is not None and (day.start, day.end, day.hours) == (
        "09:00",
        "17:30",
        "09:00-12:00,14:00-17:30",
    )
    # two duties on one weekday (an older way of writing a split day): both ranges count
    split = {"name": "分", "department": "皮肤科", "duty": [{"weekday": 2, "start": "09:00", "end": "12:00"}]}
    split["duty"].append({"weekday": 2, "start": "14:00", "end": "17:00"})
    doc = {"departments": GOOD["departments"], "doctors": [split]}
    assert _doctor("明天下午3点可以吗", doc) == "分" and _doctor("明天下午1点可以吗", doc) is None


@pytest.mark.parametrize(
    ("doctor", "words"),
    [
        ({"duty": [{"weekday": 2, "hours": "9-12"}]}, ["'丁'", "'9-12'", "周二 (weekday 2)", "HH:MM-HH:MM"]),
        ({"duty": [{"weekday": 2, "hours": "09:00-12:00,25:00-26:00"}]}, ["'丁'", "'25:00-26:00'"]),
        ({"duty": [{"weekday": 3, "hours": "12:00-09:00"}]}, ["'丁'", "'12:00-09:00' does not end after"]),
        ({"duty": [{"weekday": 2, "hours": "09:00-12:00,11:00-13:00"}]}, ["'丁'", "overlap"]),
        ({"duty": [{"weekday": 2, "hours": "09:00-12:00", "start": "08:00"}]}, ["'丁'", "both hours"]),
        ({"hours": "上午", "duty": [{"weekday": 2}]}, ["'丁'", "hours '上午'"]),
        ({"hours": "09:00-12:00"}, ["'丁'", "no duty days"]),
    ],
)
def test_bad_hours_name_the_doctor_and_the_value(doctor: dict, words: list[str]) -> None:
    with pytest.raises(kb.KnowledgeError) as err:
        kb.parse({**HOURS, "doctors": [{"name": "丁", "department": "皮肤科", **doctor}]})
    [problem] = err.value.problems
    assert problem.loc == ("doctors", 0), problem
    for word in words:
        assert word in problem.msg, (word, problem.msg)


def test_hours_round_trip_through_yaml_and_json_and_older_documents_stay_valid() -> None:
    k = kb.parse(HOURS)
    text = kb.to_yaml(k)
    assert "hours: 09:00-12:00, 14:00-17:30" in text and "hours: 09:00-12:00" in text
    assert kb.parse_yaml(text) == k
    stored = k.model_dump(mode="json", exclude_none=True)  # what the store keeps
    assert kb.Knowledge.model_validate(stored) == k
    assert stored["doctors"][1]["duty"] == [{"weekday": 2}, {"weekday": 3}]
    # a document stored before hours (every duty with its start/end written out) reads the same
    older = {
        "doctors": [
            {"name": "乙", "department": "皮肤科", "duty": [{"weekday": 2, "start": "13:00", "end": "17:00"}]}
        ]
    }
    doc = kb.parse({"departments": GOOD["departments"], **older})
    assert doc.doctors[0].duty == [kb.Duty(weekday=2, start="13:00", end="17:00")]
    assert kb.on_duty(doc.doctors[0], TUE) == kb.DayDuty(((13 * 60, 17 * 60),))


# ---- activities ---------------------------------------------------------------------------------
def test_activities_only_while_valid_and_only_for_their_departments_and_projects() -> None:
    index = _index()
    acne = kb.find_project(index, "皮肤科", "痤疮治疗", [])
    vitiligo = kb.find_project(index, "皮肤科", "白癜风", [])
    ids = lambda dept, proj, day: [a.id for a in kb.activities_on(index, dept, proj, day)]  # noqa: E731
    assert ids("皮肤科", acne, MON) == ["march"]
    assert ids("皮肤科", vitiligo, MON) == ["march", "vitiligo"]
    assert ids("皮肤科", acne, date(2027, 2, 28)) == ["february"]  # march not yet valid
    assert ids("皮肤科", acne, date(2027, 4, 1)) == ["april"]  # march expired
    assert ids("眼科", None, MON) == ["eyes"]  # not the 皮肤科 one, nor the project one
    assert ids(None, None, MON) == []  # a department-limited activity needs the chat's department
    # in the reply: the visit day decides (a visit named for April gets April's)
    assert "三月皮肤检查预约" in _facts("皮肤科", ["痘痘"])["slots"]["activity"]
    assert "四月预约" in _facts("皮肤科", ["痘痘", "4月2号能去吗"])["slots"]["activity"]


# ---- prices -----------------------------------------------------------------------------------------
def test_a_price_answer_quotes_the_projects_range_with_the_caveat() -> None:
    f = _facts("皮肤科", ["脸上长痘痘", "大概多少钱"])
    assert f["slots"]["price_range"] == "200到2000元"
    assert f["project"] == "痤疮治疗"  # named by an alias in the visitor's words
    assert f["boost"]["s-knowledge_price"] > 0
    script = next(e for e in load_library() if e.id == "knowledge_price")
    text = fill_slots(script.text, {"project": f["project"], **f["slots"]})
    assert text.startswith("痤疮治疗的费用一般在200到2000元之间") and "具体费用面诊后确定" in text
    # a project without a price: no range, the library's generic price replies remain
    f = _facts("眼科", ["近视能做吗"])
    assert "price_range" not in f["slots"] and "s-knowledge_price" not in f["boost"]
    assert fill_slots(script.text, {"project": "近视手术"}) == ""


def test_hospital_facts_fill_address_directions_and_what_to_bring() -> None:
    f = _facts("皮肤科", ["怎么走"])
    assert f["slots"]["address"] == "示例路1号"
    assert f["slots"]["directions"] == "地铁2号线示例站3号口出，步行5分钟"  # the end punctuation trimmed
    assert f["slots"]["bring"] == "以前用过的药的名称"  # the department's over the hospital's
    assert _facts("眼科", ["怎么走"])["slots"]["bring"] == "身份证"


# ---- what a write must pass ---------------------------------------------------------------------
def test_an_activity_whose_wording_breaks_the_guard_is_refused_naming_the_rule() -> None:
    doc = {**GOOD, "activities": [{**GOOD["activities"][0], "wording": "保证治愈，无效全额退款"}]}
    with pytest.raises(kb.KnowledgeError) as err:
        kb.parse(doc)
    (problem,) = err.value.problems
    assert problem.loc == ("activities", 0, "wording")
    assert "compliance rule" in problem.msg and "(" in problem.msg  # the rule id and its citation


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"doctors": [{"name": "丁", "department": "口腔"}]}, "doctors.0.department"),
        (
            {"doctors": [{"name": "丁", "department": "皮肤科", "duty": [{"weekday": 8}]}]},
            "doctors.0.duty.0.weekday",
        ),
        (
            {
                "doctors": [
                    {
                        "name": "丁",
                        "department": "皮肤科",
                        "duty": [{"weekday": 1, "start": "12:00", "end": "09:00"}],
                    }
                ]
            },
            "doctors.0.duty.0",
        ),
        (
            {
                "departments": [
                    {"name": "皮肤科", "projects": [{"name": "x", "price_low": 900, "price_high": 100}]}
                ]
            },
            "departments.0.projects.0",
        ),
        ({"activities": [{**GOOD["activities"][0], "valid_to": "2027-01-01"}]}, "activities.0"),
        ({"activities": [{**GOOD["activities"][0], "departments": ["牙科"]}]}, "activities.0.departments.0"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_documents_name_the_field(change: dict, where: str) -> None:
    with pytest.raises(kb.KnowledgeError) as err:
        kb.parse({**GOOD, **change})
    assert any(".".join(map(str, p.loc)) == where for p in err.value.problems), err.value.problems


def test_the_example_is_valid_and_round_trips_through_yaml() -> None:
    example = kb.load_example()
    assert {"整形美容", "口腔", "男科", "妇科", "皮肤科", "眼科"} <= {d.name for d in example.departments}
    assert kb.parse_yaml(kb.to_yaml(example)) == example


# ---- the store: SQLite and PostgreSQL ----------------------------------------------------------------
def test_store_writes_revisions_per_hospital(engine) -> None:
    create_all(engine)
    store = kb.KnowledgeStore(engine)
    assert store.read("a").rev == 0 and store.rev("a") == 0
    first = store.write("a", kb.parse(GOOD), "root")
    assert first.rev == 1 and store.read("a").knowledge == kb.parse(GOOD)
    assert store.read("b").rev == 0  # keyed by hospital
    second = store.write("a", kb.Knowledge(), "root", expect_rev=1)
    assert second.rev == 2 and store.read("a").knowledge == kb.Knowledge()
    with pytest.raises(Conflict):
        store.write("a", kb.parse(GOOD), "root", expect_rev=1)
    assert store.read("a").rev == 2
    book = kb.KnowledgeBook(engine, "a", refresh_s=0)
    assert book.get() is None  # empty knowledge: nothing to fill
    store.write("a", kb.parse(GOOD), "other process")
    index = book.get()
    assert index is not None and index.rev == 3


# ---- yuyue knowledge import / export ----------------------------------------------------------------
def test_import_of_a_bad_file_names_the_problem_and_stores_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    runner = CliRunner()
    good = tmp_path / "good.yaml"
    good.write_text(kb.to_yaml(kb.parse(GOOD)), encoding="utf-8")
    r = runner.invoke(knowledge_app, ["import", str(good), "--url", url])
    assert r.exit_code == 0, r.output
    assert "revision 1" in r.output and "3 doctors" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        good.read_text(encoding="utf-8")
        .replace("weekday: 3", "weekday: 9")
        .replace("name: 丙", "name: 丙\n  title: 主任医师"),
        encoding="utf-8",
    )
    r = runner.invoke(knowledge_app, ["import", str(bad), "--url", url])
    assert r.exit_code == 1
    assert f"{bad}: doctors.1.duty.1.weekday:" in r.output and "nothing stored" in r.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("departments: [\n  - name: x", encoding="utf-8")
    r = runner.invoke(knowledge_app, ["import", str(broken), "--url", url])
    assert r.exit_code == 1 and "not YAML: line" in r.output
    r = runner.invoke(knowledge_app, ["export", "--url", url])
    assert r.exit_code == 0
    assert "revision 1" in r.output  # still the first import
    assert kb.parse_yaml(r.output) == kb.parse(GOOD)
