"""Reply suggestions pass the same combined guard (rules, then the classifier) that checks what
consultants type: a suggestion is never a text the consultant-message check would flag."""

from __future__ import annotations

import pytest

from yuyue.models.replies import suggest as suggest_module
from yuyue.models.replies.guard import ComplianceGuard, check_consultant_message
from yuyue.models.replies.pool import ReplyExample, build_pool
from yuyue.models.replies.suggest import ReplySuggester

# a fear appeal the rules do not know; only the classifier flags it
FEAR = "您要是一直不管它，以后连孩子都要不上了，到时候哭都没地方哭"
HONEST = "建议您尽早来面诊，医生检查后会告诉您需不需要治疗、怎么治。"
QUESTION = "这个不治会怎么样啊"


def _chat(text: str) -> list[tuple[str, str]]:
    return [("consultant", "您好，有什么可以帮您？"), ("visitor", text)]


@pytest.fixture(scope="module")
def suggester() -> ReplySuggester:
    rows = [(QUESTION, FEAR)] * 3 + [
        (QUESTION + "，严重吗", HONEST),
        ("医院在哪里", "医院地址发您了，坐地铁很方便。"),
    ]
    examples = [
        ReplyExample(f"c{i}", (("consultant", "您好，有什么可以帮您？"), ("visitor", q)), a, None, True)
        for i, (q, a) in enumerate(rows)
    ]
    pool, assign = build_pool(examples, [])
    return ReplySuggester(pool, min_score=0.05).fit_examples(examples, assign)


def test_premise_only_the_classifier_flags_the_fear_appeal():
    assert ComplianceGuard.default().check(FEAR).allowed  # the rules alone would let it through
    flagged = check_consultant_message(FEAR)
    assert not flagged["allowed"] and flagged["rules"][0]["source"] == "classifier"


def _pool_id(suggester, fragment: str) -> str:
    ids = [e.id for e in suggester.pool if fragment in e.text]
    assert len(ids) == 1, ids
    return ids[0]


def test_a_reply_only_the_classifier_flags_is_never_suggested(suggester, monkeypatch):
    fear, honest = _pool_id(suggester, "孩子都要不上"), _pool_id(suggester, "需不需要治疗")
    ids = [s.id for s in suggester.suggest(_chat(QUESTION), {}, k=5)]
    assert fear not in ids
    assert honest in ids  # the compliant answer to the same question still is

    # the premise: with the rules alone the fear appeal would be the first suggestion
    class RulesOnly:
        def allowed(self, text: str) -> bool:
            return ComplianceGuard.default().check(text).allowed

    monkeypatch.setattr(suggest_module, "_suggestion_guard", lambda guard: RulesOnly())
    assert [s.id for s in suggester.suggest(_chat(QUESTION), {}, k=5)][0] == fear


@pytest.mark.parametrize("question", [QUESTION, QUESTION + "，严重吗", "医院在哪里", "多少钱"])
def test_no_suggestion_is_flagged_by_the_consultant_message_check(suggester, question):
    for s in suggester.suggest(_chat(question), {}, k=5):
        assert check_consultant_message(s.text)["allowed"], s.text
