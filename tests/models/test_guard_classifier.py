"""Red-team set, the learned classifier on top of the rules, and consultant-message checks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from yuyue.features.normalize import normalize
from yuyue.models.replies.cli import compliance_app
from yuyue.models.replies.guard import (
    CLASSIFIER_THRESHOLD,
    OK,
    PHRASE_MIN,
    REDTEAM_HOLDOUT,
    REDTEAM_HOLDOUT2,
    REDTEAM_MORE,
    RULE_VETO,
    Category,
    CombinedGuard,
    ComplianceGuard,
    category_citations,
    check_consultant_message,
    compliant_alternative,
    default_classifier,
    default_combined,
    load_dev,
    load_redteam,
    redteam_split,
    training_data,
)
from yuyue.models.replies.scripts import fill_slots, load_library

ALL = load_redteam()
REAL_SERVICE = Path("/work/shared/data/real/service_dev.jsonl")


def test_redteam_set_is_big_and_covers_every_category() -> None:
    counts = Counter(label for label, _ in ALL)
    assert counts[OK] >= 300
    assert sum(n for label, n in counts.items() if label != OK) >= 300
    assert {c.value for c in Category} <= set(counts)  # >= 12 categories, each with texts
    assert len(Category) >= 12 and all(counts[c.value] >= 15 for c in Category)
    assert len({t for _, t in ALL}) == len(ALL), "duplicate texts"


def test_every_category_cites_its_article() -> None:
    cites = category_citations()
    assert set(cites) == {c.value for c in Category}
    assert all("《" in cite and "第" in cite for cite in cites.values())


def test_heldout_split_is_fixed_and_only_the_blind_set_is_kept_out_of_training() -> None:
    held = load_redteam(split="heldout")
    dev = load_redteam(split="dev")
    assert len(held) + len(dev) == len(ALL)
    assert 0.15 < len(held) / len(ALL) < 0.35
    assert all(redteam_split(t) == "heldout" for _, t in held)
    # the old held-out split and the first blind set were read while tuning: development data since
    # 2026-11-30; only redteam_holdout2.tsv stays out
    _, texts = training_data()
    assert {t for _, t in held + dev + load_redteam(REDTEAM_HOLDOUT)} <= set(texts)
    assert not {t for _, t in load_redteam(REDTEAM_HOLDOUT2)} & set(texts)


def test_redteam_file_errors_name_the_line(tmp_path) -> None:
    bad = tmp_path / "rt.tsv"
    bad.write_text("# c\nok\t好的\nwhatever\t保证治好\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3: unknown label 'whatever'"):
        load_redteam(bad)
    bad.write_text("ok 没有制表符\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: expected LABEL<TAB>TEXT"):
        load_redteam(bad)
    with pytest.raises(ValueError, match="split"):
        load_redteam(split="test")


def test_classifier_scores_like_the_sklearn_pipeline_it_was_fit_with() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    clf = default_classifier()
    labels, texts = training_data()
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, lowercase=False)
    vec.fit([normalize(t) for t in texts])
    assert len(vec.vocabulary_) == len(clf.vocab)
    for text in ["我们保证效果", "价格要看方案", "今天特价只要999", "您好"]:
        x = vec.transform([normalize(text)]).toarray().ravel()
        z = np.zeros(len(clf.coef))
        for gram, j in vec.vocabulary_.items():
            z[clf.vocab[gram]] = x[j]
        expected = 1 / (1 + np.exp(-(clf.coef @ z + clf.bias)))
        assert clf.p_prohibited(normalize(text)) == pytest.approx(expected, abs=1e-9)


def _held_rates(held: list[tuple[str, str]]) -> tuple[float, float, float]:
    """(blocked, passed) of the combined guard and blocked of the rules alone on ``held``."""
    guard = default_combined()
    blocked = [not guard.check(t)["allowed"] for _, t in held]
    bad = [b for (label, _), b in zip(held, blocked, strict=True) if label != OK]
    good = [not b for (label, _), b in zip(held, blocked, strict=True) if label == OK]
    rules_only = [not ComplianceGuard.default().check(t).allowed for label, t in held if label != OK]
    return sum(bad) / len(bad), sum(good) / len(good), sum(rules_only) / len(rules_only)


def test_blind_set_rates_of_rules_plus_classifier() -> None:
    """Issue 14 on the blind set redteam_holdout2.tsv (written 2026-11-30 before the guard was run on it,
    never tuned on). Measured (bench/bench_guard.py): before that day's changes 94.1 % blocked (174/185),
    97.0 % passed (163/168); after them 94.6 % (175/185) / 96.4 % (162/168); rules alone 68.1 % / 90.5 %.
    The blocked target (0.97) is NOT met; the passed target (0.95) is. Bounds: the measurement minus a
    margin."""
    blocked, passed, rules_only = _held_rates(load_redteam(REDTEAM_HOLDOUT2))
    assert blocked > rules_only + 0.15  # the classifier adds what the rules miss
    assert blocked >= 0.93  # target 0.97, not met
    assert passed >= 0.95  # target 0.95, met


def test_red_team_files_are_big_disjoint_and_the_blind_set_is_kept_out_of_training() -> None:
    more, first, blind = (load_redteam(p) for p in (REDTEAM_MORE, REDTEAM_HOLDOUT, REDTEAM_HOLDOUT2))
    for pairs, n in ((more, 300), (first, 150), (blind, 150)):
        counts = Counter(label for label, _ in pairs)
        assert counts[OK] >= n and sum(c for label, c in counts.items() if label != OK) >= n
        assert {c.value for c in Category} <= set(counts)
    texts = [[t for _, t in pairs] for pairs in (ALL, more, first, blind)]
    assert sum(len(set(t)) for t in texts) == len(set().union(*texts)), "a text is in two red-team files"
    _, train = training_data()
    assert not {t for _, t in blind} & set(train)
    assert {t for _, t in load_dev()} <= set(train)


def test_the_classifier_needs_phrase_evidence_not_just_casual_register() -> None:
    """Off-topic help-desk chatter scored P >= threshold on single characters (就, 了, "...") and the
    intercept; without a prohibited phrase it now passes. A claim the rules miss is still caught."""
    clf, guard = default_classifier(), default_combined()
    for text in (
        "....我最近营养不良..被禁止了减肥",
        "OK,能用就好么么哒",
        "...................暂时还没这个项目~",
    ):
        norm = normalize(text)
        assert clf.p_prohibited(norm) >= CLASSIFIER_THRESHOLD  # the probability alone would block it
        assert clf.phrase_evidence(norm) < PHRASE_MIN
        assert clf.predict(norm)[0] is None and guard.check(text)["allowed"], text
    claim = "您要是一直不管它，以后连孩子都要不上了，到时候哭都没地方哭"
    assert clf.phrase_evidence(normalize(claim)) >= PHRASE_MIN
    assert not guard.check(claim)["allowed"]


class _FixedP:
    """A classifier stand-in that gives every text the same P(prohibited)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def p_prohibited(self, norm: str) -> float:
        return self.p

    def predict(self, norm: str) -> tuple[str | None, float]:
        return ("promise_result" if self.p >= CLASSIFIER_THRESHOLD else None), self.p


def test_rule_hits_are_cleared_only_when_the_classifier_is_sure_the_text_is_compliant() -> None:
    text = "说保证效果的医院您要小心"  # a rule fires on the quoted claim
    assert not ComplianceGuard.default().check(text).allowed
    rules = ComplianceGuard.default()
    assert CombinedGuard(rules, _FixedP(RULE_VETO - 0.01)).check(text) == {"allowed": True, "rules": []}
    hits = CombinedGuard(rules, _FixedP(RULE_VETO + 0.01)).check(text)["rules"]
    assert not CombinedGuard(rules, _FixedP(RULE_VETO + 0.01)).check(text)["allowed"]
    assert all(h["source"] == "rule" for h in hits)
    # short texts stay with the rules whatever the classifier says
    assert not CombinedGuard(rules, _FixedP(0.0)).check("保证治好")["allowed"]
    # no rule: the classifier decides at its threshold
    plain = "这个您来了就明白了"
    assert CombinedGuard(rules, _FixedP(CLASSIFIER_THRESHOLD - 0.01)).check(plain)["allowed"]
    hit = CombinedGuard(rules, _FixedP(CLASSIFIER_THRESHOLD)).check(plain)["rules"][0]
    assert hit["id"] == "classifier_promise_result" and hit["citation"]


@pytest.mark.skipif(not REAL_SERVICE.exists(), reason="real service chats not available")
def test_real_help_desk_messages_nearly_all_pass() -> None:
    """Airline/telecom help-desk replies make no medical claims. Measured: 1.50 % blocked (63/4194), almost
    all classifier false blocks on out-of-domain text; 0.83 % (35/4194) since the classifier needs phrase
    evidence (2026-11-30). The bound is that plus a margin."""
    guard = default_combined()
    msgs = []
    with REAL_SERVICE.open(encoding="utf-8") as f:
        for line in f:
            msgs += [m["text"] for m in json.loads(line)["messages"] if m["role"] == "consultant"]
    assert len(msgs) > 1000
    assert sum(not guard.check(t)["allowed"] for t in msgs) / len(msgs) <= 0.012


def test_every_block_names_a_rule_category_and_citation() -> None:
    guard = default_combined()
    for _label, text in load_redteam(split="heldout"):
        verdict = guard.check(text)
        for hit in verdict["rules"]:
            assert hit["id"] and hit["citation"] and Category(hit["category"])
            if hit["source"] == "classifier":
                assert hit["id"] == f"classifier_{hit['category']}" and 0.5 <= hit["score"] <= 1


def test_the_script_library_passes_rules_and_classifier() -> None:
    guard = default_combined()
    for e in load_library():
        text = fill_slots(e.text, {})
        assert guard.check(text)["allowed"], (e.id, guard.check(text))


def test_short_texts_and_negated_claims_are_left_to_the_rules() -> None:
    guard = default_combined()
    assert guard.check("好的")["allowed"]
    assert guard.check("我们不搞限时促销，您想好了随时来都是这个价")["allowed"]
    assert not guard.check("限时促销，今天来最划算")["allowed"]


def test_rules_without_classifier_behave_as_before() -> None:
    guard = CombinedGuard(ComplianceGuard.default(), None)
    assert guard.check("我们保证效果") == {
        "allowed": False,
        "rules": [
            {
                "id": "guarantee_result",
                "category": "promise_result",
                "citation": ComplianceGuard.default().rules_by_id["guarantee_result"].cite,
                "source": "rule",
            }
        ],
    }


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("放心，我们保证效果", "promise_result"),
        ("今天特价，双眼皮只要九百九", "price_bait"),
        ("这个病只有我们医院能治", "exclusive_cure"),
        ("公立医院的大夫根本不管你", "disparage"),
        ("三天就能治好，不耽误上班", "cure_timeframe"),
        ("这个项目绝对安全，没有任何风险", "guarantee_safety"),
    ],
)
def test_consultant_message_check_with_alternative(text: str, category: str) -> None:
    out = check_consultant_message(text)
    assert out["allowed"] is False
    assert category in {r["category"] for r in out["rules"]}
    alt = out["alternative"]
    assert alt and default_combined().check(alt)["allowed"] and "{" not in alt


def test_compliant_consultant_message_has_no_alternative() -> None:
    assert check_consultant_message("恢复期一般一到两周，效果因人而异，需要面诊后医生判断") == {
        "allowed": True,
        "rules": [],
        "alternative": None,
    }
    with pytest.raises(TypeError, match="text must be a str"):
        check_consultant_message(None)  # type: ignore[arg-type]


def test_alternatives_exist_for_every_category() -> None:
    for c in Category:
        alt = compliant_alternative(c.value, "")
        assert alt and ComplianceGuard.default().check(alt).allowed, c


def test_cli_check_reports_classifier_hits_and_rules_only_skips_them(tmp_path) -> None:
    path = tmp_path / "in.txt"
    text = "您要是一直不管它，以后连孩子都要不上了"
    path.write_text(f"我们保证效果\n{text}\n", encoding="utf-8")
    runner = CliRunner()
    out = [json.loads(x) for x in runner.invoke(compliance_app, ["check", str(path)]).output.splitlines()]
    assert out[0] == {"text": "我们保证效果", "allowed": False, "rules": ["guarantee_result"]}
    assert out[1]["allowed"] is False and out[1]["rules"][0].startswith("classifier_")
    res = runner.invoke(compliance_app, ["check", "--rules-only", str(path)])
    assert [json.loads(x)["allowed"] for x in res.output.splitlines()] == [False, True]
