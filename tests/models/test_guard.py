"""Compliance guard: the rule file's own examples, a table of compliant consultant sentences, the CLI."""

from __future__ import annotations

import itertools
import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from yuyue.cli.main import app as yuyue_app
from yuyue.features.normalize import normalize
from yuyue.models.replies.cli import compliance_app
from yuyue.models.replies.guard import (
    DEFAULT_RULES,
    Category,
    ComplianceGuard,
    ComplianceRule,
    RulesFileError,
    Verdict,
    load_rules,
)

GUARD = ComplianceGuard.default()
RULES = load_rules()

POSITIVE = [(r.id, t) for r in RULES for t in r.examples.positive]
NEGATIVE = [(r.id, t) for r in RULES for t in r.examples.negative]

# Honest consultant sentences that must pass: the guard must not be overzealous.
COMPLIANT = [
    "我们不能保证效果，需要医生面诊后评估",
    "价格因方案不同在几千到一万多",
    "很多人第一次来都会紧张",
    "效果因人而异，医生会根据您的情况给出建议",
    "任何手术都有一定风险，医生会在术前跟您讲清楚",
    "您的个人信息我们会严格保密",
    "建议您尽早到医院做个检查，让医生看看",
    "您最好提前一天预约，到了不用等太久",
    "术后第一周注意休息，不要剧烈运动",
    "恢复期一般在一到两周，具体因人而异",
    "没有医生能保证百分之百的效果",
    "这个问题问得很好，我帮您问一下医生",
    "如果您比较怕疼，可以提前告诉医生",
    "费用会在面诊后由医生根据方案报价，各项收费都有公示",
    "您可以多了解、多比较，考虑清楚再决定",
    "不着急，您回去跟家人商量一下也可以",
    "我们医院的地址在人民路88号，坐地铁2号线可以到",
    "方便留一个电话吗？预约成功后会短信提醒您",
    "您之前有没有在其他医院做过检查？",
    "有没有副作用要看个人体质，医生会评估",
    "一般不会很痛，打麻药后多数人能耐受",
    "医生会告诉您可能的风险和术后注意事项",
    "这类情况规范治疗后多数能得到控制，但需要医生检查后判断",
    "检查在单独的诊室进行，会注意保护您的隐私",
    "现在有面诊活动，但是否适合做还是要以医生面诊为准",
    "活动的具体规则以医院公布的为准",
    "您肯定是想先了解清楚再决定吧",
    "第一步是做检查，第二步医生再出方案",
    "唯一需要注意的是术后三天别沾水",
    "为了确保安全，术前需要做血常规检查",
    "留电话不是必须的，您在这里咨询也可以",
    "术后要保证充足睡眠",
    "我看到消息会第一时间回复您",
    "大部分情况下不会癌变，不用太担心，但建议检查确认",
    "王医生从事鼻整形十多年，您面诊时可以详细沟通",
    "种植牙的费用和种植体品牌、是否植骨有关",
    "祝您早日康复",
    "效果最好是等三个月消肿后再评估",
    "成功率因人而异，需要检查后由医生评估",
    "我们不提供无效退款这种承诺",
    "会不会复发和生活习惯有关系，按时复查很重要",
    "这个病目前没有办法根治，但规范治疗可以控制症状",
    "不能保证完全不留疤，疤痕和体质有关",
    "您的鼻子条件其实不错，做不做完全看您自己",
    "术后别错过复查时间",
    "其他医院的检查报告也可以带过来",
    "我们不评价别的医院，您可以多了解多比较",
    "麻醉方式医生会根据项目和您的情况来选",
    "您好，请问怎么称呼您？",
    "好的王女士，我帮您登记一下",
]

# Non-compliant sentences (beyond the rule file's examples), with the category that must fire.
NON_COMPLIANT = [
    ("我们保证效果", Category.promise_result),
    ("这个手术保证一次成功", Category.promise_result),
    ("包您满意", Category.promise_result),
    ("一次根治永不复发", Category.promise_result),
    ("肯定能治好", Category.promise_result),
    ("一定会满意的", Category.promise_result),
    ("百分之百有效", Category.promise_result),
    ("无效退款", Category.promise_result),
    ("治愈率高达95%", Category.cure_rate),
    ("很多患者都治好了", Category.patient_testimonial),
    ("我们是全市最好的医院", Category.absolute_claim),
    ("全国第一的技术", Category.absolute_claim),
    ("国家级专家", Category.absolute_claim),
    ("我们是唯一能做的", Category.absolute_claim),
    ("零风险无副作用", Category.guarantee_safety),
    ("完全不痛", Category.guarantee_safety),
    ("术后不会留疤", Category.guarantee_safety),
    ("绝对安全", Category.guarantee_safety),
    ("别的医院都是骗人的", Category.disparage),
    ("那家医院不正规", Category.disparage),
    ("我们比别的医院便宜", Category.disparage),
    ("再不治就晚了", Category.fear_pressure),
    ("您这样下去会不孕", Category.fear_pressure),
    ("名额只剩两个", Category.fear_pressure),
    ("今天不定就没了", Category.fear_pressure),
    ("错过今天就没有这个价了", Category.fear_pressure),
    ("你太丑了", Category.appearance_anxiety),
    ("整容改变命运", Category.appearance_anxiety),
    ("明星同款", Category.endorsement),
    ("免费做手术", Category.inducement),
    ("零首付分期就能做", Category.inducement),
    # width and script variants are normalised before matching
    ("我們保證效果", Category.promise_result),
    ("成功率高達９５％", Category.cure_rate),
    ("ＮＯ．１的整形醫院", Category.absolute_claim),
]


def _fired(text: str) -> list[str]:
    return GUARD.check(text).rules


@pytest.mark.parametrize(("rule_id", "text"), POSITIVE, ids=[f"{r}:{t[:12]}" for r, t in POSITIVE])
def test_rule_fires_on_its_positive_examples(rule_id: str, text: str) -> None:
    verdict = GUARD.check(text)
    assert rule_id in verdict.rules, f"{rule_id} did not fire on {text!r} (fired: {verdict.rules})"
    assert not verdict.allowed


@pytest.mark.parametrize(("rule_id", "text"), NEGATIVE, ids=[f"{r}:{t[:12]}" for r, t in NEGATIVE])
def test_rule_is_silent_on_its_negative_examples(rule_id: str, text: str) -> None:
    assert rule_id not in _fired(text)


@pytest.mark.parametrize("text", COMPLIANT)
def test_compliant_consultant_sentences_pass(text: str) -> None:
    verdict = GUARD.check(text)
    assert verdict == Verdict(True, []), f"{text!r} blocked by {verdict.rules}"


@pytest.mark.parametrize(("text", "category"), NON_COMPLIANT, ids=[t for t, _ in NON_COMPLIANT])
def test_non_compliant_sentences_are_blocked(text: str, category: Category) -> None:
    verdict = GUARD.check(text)
    assert not verdict.allowed
    categories = {GUARD.rules_by_id[r].category for r in verdict.rules}
    assert category in categories, f"{text!r}: fired {verdict.rules}"


def test_compliant_table_is_big_enough() -> None:
    assert len(COMPLIANT) >= 25


def test_every_category_has_a_rule_and_every_rule_has_examples() -> None:
    assert {r.category for r in RULES} == set(Category)
    for rule in RULES:
        assert rule.examples.positive and rule.examples.negative, rule.id
        assert "《" in rule.cite, f"{rule.id}: cite should name the law"


def test_negation_suppresses_only_the_overlapping_match() -> None:
    assert GUARD.check("我们不能保证效果").allowed
    assert "guarantee_result" in _fired("我们不能保证效果，但是包您满意")
    assert "guarantee_result" in _fired("不敢说百分百，但我保证效果好")


def test_rules_come_back_once_and_in_file_order() -> None:
    order = [r.id for r in RULES]
    fired = _fired("保证效果，保证成功，治愈率95%，全国第一，零风险，别的医院都是骗人的")
    assert len(fired) == len(set(fired)) >= 4
    assert fired == sorted(fired, key=order.index)


def test_filter_and_check_many() -> None:
    texts = ["价格要看方案", "保证效果", "很多人第一次来都会紧张", "再拖就晚了"]
    assert GUARD.filter(texts) == [True, False, True, False]
    assert [v.allowed for v in GUARD.check_many(texts)] == [True, False, True, False]
    assert GUARD.filter([]) == []
    assert GUARD.check("") == Verdict(True, [])


def _brute_force(text: str) -> list[str]:
    """Rules applied without the guard's speed-ups (no pre-filter, groups kept), for comparison."""
    norm = normalize(text)
    fired = []
    for rule in RULES:
        hits = [m.span() for p in rule.patterns for m in re.finditer(p, norm, re.IGNORECASE)]
        spans = [
            m.span()
            for p in rule.unless
            for start in range(len(norm) + 1)
            if (m := re.compile(p, re.IGNORECASE).match(norm, start))
        ]
        if any(all(e <= us or s >= ue for us, ue in spans) for s, e in hits):
            fired.append(rule.id)
    return fired


def test_speed_ups_do_not_change_verdicts() -> None:
    samples = [t for _, t in POSITIVE + NEGATIVE] + COMPLIANT + [t for t, _ in NON_COMPLIANT]
    pairs = ["，".join(p) for p in itertools.islice(itertools.combinations(samples, 2), 0, None, 37)]
    mismatches = [(t, g, b) for t in samples + pairs if (g := _fired(t)) != (b := _brute_force(t))]
    assert not mismatches, mismatches[:5]


# ---------------------------------------------------------------- constructing guards


def _rule(**overrides: object) -> ComplianceRule:
    data: dict[str, object] = {
        "id": "test_rule",
        "category": "promise_result",
        "cite": "《广告法》第十六条",
        "patterns": ["保证"],
        "unless": ["不能保证"],
        "examples": {"positive": ["保证"], "negative": ["不能保证"]},
    }
    data.update(overrides)
    return ComplianceRule.model_validate(data)


def test_guard_from_custom_rules() -> None:
    guard = ComplianceGuard([_rule()])
    assert guard.check("我保证") == Verdict(False, ["test_rule"])
    assert guard.check("我不能保证") == Verdict(True, [])
    assert ComplianceGuard([]).check("保证效果") == Verdict(True, [])


def test_guard_rejects_duplicate_ids_and_bad_patterns() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        ComplianceGuard([_rule(), _rule()])
    with pytest.raises(ValueError, match="invalid regex"):
        _rule(patterns=["(保证"])
    with pytest.raises(ValueError, match="named groups"):
        _rule(patterns=["(?P<x>保证)"])
    with pytest.raises(ValueError, match="back-references"):
        _rule(patterns=["(保)\\1"])
    with pytest.raises(ValueError):
        _rule(category="not_a_category")


def test_brackets_and_groups_in_patterns_survive_the_rewrite() -> None:
    guard = ComplianceGuard([_rule(patterns=[r"[(]保证[)]", r"(?:包|保)\(好\)", r"[]a]x"], unless=[])])
    assert not guard.check("(保证)").allowed
    assert not guard.check("包(好)").allowed
    assert not guard.check("]x").allowed
    assert guard.check("保证").allowed


def _write_rules(tmp_path, rules: object):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"rules": rules}, allow_unicode=True), encoding="utf-8")
    return path


def test_rules_file_errors_name_the_rule_and_field(tmp_path) -> None:
    good = yaml.safe_load(DEFAULT_RULES.read_text(encoding="utf-8"))["rules"][0]
    bad = dict(good, patterns=["(unclosed"])
    with pytest.raises(RulesFileError, match=r"rule #2 \(guarantee_result\): field 'patterns'"):
        load_rules(_write_rules(tmp_path, [dict(good, id="other"), bad]))
    with pytest.raises(RulesFileError, match="field 'id': duplicate id"):
        load_rules(_write_rules(tmp_path, [good, good]))
    with pytest.raises(RulesFileError, match="field 'cite'"):
        load_rules(_write_rules(tmp_path, [{k: v for k, v in good.items() if k != "cite"}]))
    with pytest.raises(RulesFileError, match="'rules' list"):
        load_rules(_write_rules(tmp_path, "nope"))
    with pytest.raises(RulesFileError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- CLI

runner = CliRunner()


def _json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


def test_cli_check_file_prints_one_json_line_per_input_line(tmp_path) -> None:
    path = tmp_path / "replies.txt"
    path.write_text("\ufeff我们保证效果\r\n价格因方案不同\n\n再拖就晚了\n", encoding="utf-8")
    result = runner.invoke(compliance_app, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert _json_lines(result.stdout) == [
        {"text": "我们保证效果", "allowed": False, "rules": ["guarantee_result"]},
        {"text": "价格因方案不同", "allowed": True, "rules": []},
        {"text": "", "allowed": True, "rules": []},
        {"text": "再拖就晚了", "allowed": False, "rules": ["scare_consequence", "fear_future"]},
    ]
    assert "保证" in result.stdout  # ensure_ascii=False


def test_cli_check_reads_stdin() -> None:
    result = runner.invoke(
        compliance_app, ["check", "-"], input="名额只剩最后3个了\n很多人第一次来都会紧张\n"
    )
    assert result.exit_code == 0, result.output
    lines = _json_lines(result.stdout)
    assert [r["allowed"] for r in lines] == [False, True]
    assert lines[0]["rules"] == ["scarcity_pressure"]


def test_cli_check_usage_errors_exit_2(tmp_path) -> None:
    result = runner.invoke(compliance_app, ["check", str(tmp_path / "missing.txt")])
    assert result.exit_code == 2
    assert "no such file" in result.stderr
    bad = tmp_path / "bad.txt"
    bad.write_bytes("保证效果\n".encode() + b"\xff\xfe oops\n")
    result = runner.invoke(compliance_app, ["check", str(bad)])
    assert result.exit_code == 2
    assert "line 2 is not valid UTF-8" in result.stderr
    assert runner.invoke(compliance_app, ["check"]).exit_code == 2
    assert runner.invoke(compliance_app, ["check", str(tmp_path)]).exit_code == 2


def test_cli_is_registered_as_yuyue_compliance() -> None:
    result = runner.invoke(yuyue_app, ["compliance", "check", "-"], input="包治百病\n")
    assert result.exit_code == 0, result.output
    assert _json_lines(result.stdout)[0]["rules"] == ["cure_all"]


def test_cli_rules_lists_every_rule() -> None:
    result = runner.invoke(compliance_app, ["rules"])
    assert result.exit_code == 0
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [r.id for r in RULES]
