"""yuyue.compat: the private APIs Yuyue reads, their guards, and the public path they fall back to."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from yuyue import compat
from yuyue.models.scorer import FlatForest


@pytest.mark.parametrize(
    ("pattern", "plain", "width"),
    [
        ("不要?$", True, 2),
        ("(?:没有|会不会)[^，。]{0,3}$", True, 6),
        ("a.*$", False, None),  # unbounded
        ("ab", False, None),  # not anchored
        ("(?<=x)ab$", True, None),  # looks behind
        ("(?<=x)ab$", False, 2),
        ("(a)\\1$", True, None),  # group reference
        ("x{0,2000}$", False, None),  # over `below`
    ],
)
def test_end_anchored_width(pattern: str, plain: bool, width: int | None) -> None:
    assert compat.end_anchored_width(pattern, below=1000, plain=plain) == width


def test_the_width_bounds_every_match() -> None:
    # the promise callers rely on: a match ending at the end spans at most `width` characters
    pattern = "(?:没有|会不会|担心)[^，。]{0,3}$"
    width = compat.end_anchored_width(pattern, below=1000, plain=True)
    assert width is not None
    for text in ["我没有", "会不会很疼啊", "其实我担心会痛", "担心，但"]:
        m = re.search(pattern, text)
        if m:
            assert m.end() - m.start() <= width


def test_bad_pattern_is_reported() -> None:
    with pytest.raises(re.error):
        compat.parse_regex("a(b")


def test_without_the_private_parser_callers_take_the_public_path() -> None:
    # a Python whose re._parser is gone (a real ImportError in a fresh interpreter)
    code = textwrap.dedent(
        """
        import json, re, sys
        sys.modules["re._parser"] = None
        from yuyue import compat
        from yuyue.models.replies.guard import check_consultant_message
        from yuyue.models.replies.trigger import Trigger
        try:
            compat.parse_regex("a(b")
            bad = "accepted"
        except re.error:
            bad = "re.error"
        t = Trigger.default()
        texts = ["我真的不想活了", "没有想死的意思", "胸口剧烈疼痛喘不上气", "我今年十六岁", "隆鼻多少钱"]
        said = SAID
        print(json.dumps({
            "parser": compat.sre_parser is None,
            "width": compat.end_anchored_width("ab?$", below=10),
            "parse": compat.parse_regex("ab"),
            "bad": bad,
            "verdicts": [[r.action, r.reason] for r in map(t.check, texts)],
            "guard": [sorted(r["id"] for r in check_consultant_message(m)["rules"]) for m in said],
        }))
        """
    )
    said = ["我们保证100%治愈，无效退款", "术后第二天就能上班", "这是最安全的疗法，零风险"]
    code = code.replace("SAID", json.dumps(said, ensure_ascii=False))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    got = json.loads(out)
    assert got["parser"] is True and got["width"] is None and got["parse"] is None
    assert got["bad"] == "re.error"
    from yuyue.models.replies.trigger import Trigger

    t = Trigger.default()
    texts = ["我真的不想活了", "没有想死的意思", "胸口剧烈疼痛喘不上气", "我今年十六岁", "隆鼻多少钱"]
    assert got["verdicts"] == [[r.action, r.reason] for r in map(t.check, texts)]
    # the compliance guard, whose rules lose their first-character filter, flags the same rules
    from yuyue.models.replies.guard import check_consultant_message

    expected = [sorted(r["id"] for r in check_consultant_message(m)["rules"]) for m in said]
    assert any(expected), "the sample should trip at least one rule"
    assert got["guard"] == expected


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=400) > 0).astype(int)
    return X, y


def test_binary_trees_are_read(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    model = HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(X, y)
    read = compat.hgb_binary_trees(model)
    assert read is not None
    trees, baseline = read
    assert len(trees) == model.n_iter_
    forest = FlatForest(model)
    np.testing.assert_allclose(forest.raw(X[:20]), model.decision_function(X[:20]), rtol=0, atol=1e-12)
    assert baseline == pytest.approx(forest.baseline)


def test_unreadable_trees_give_none(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    assert compat.hgb_binary_trees(HistGradientBoostingClassifier()) is None  # not fitted
    three = HistGradientBoostingClassifier(max_iter=5).fit(X, np.digitize(X[:, 0], [-0.5, 0.5]))
    assert compat.hgb_binary_trees(three) is None  # one tree per class
    assert FlatForest.of(three) is None
    with pytest.raises(ValueError, match="cannot be read"):
        FlatForest(three)
    # a layout whose node records lost a field (as a future scikit-learn might)
    model = HistGradientBoostingClassifier(max_iter=5).fit(X, y)
    nodes = model._predictors[0][0].nodes
    renamed = nodes.astype([(("split" if n == "num_threshold" else n), t) for n, t in nodes.dtype.descr])
    model._predictors[0][0].nodes = renamed
    assert compat.hgb_binary_trees(model) is None


def test_signals_without_the_private_parser_are_the_same() -> None:
    # features/signals.py expands keyword patterns with the private parser (through compat); without
    # it every pattern stays a regex, slower but finding the same signals
    texts = [
        "请问隆鼻多少钱？",
        "做完会不会很疼",
        "不算贵吧",
        "你们医院地址在哪里，周六上班吗",
        "有点担心安全",
    ]
    code = textwrap.dedent(
        """
        import json, sys
        sys.modules["re._parser"] = None
        from yuyue.features.signals import expand_pattern, visitor_signals
        from yuyue.features.tokenize import tokenize
        texts = TEXTS
        print(json.dumps({
            "expanded": expand_pattern("多少钱|价格"),
            "signals": [sorted(visitor_signals(t, tokenize(t))) for t in texts],
        }))
        """
    ).replace("TEXTS", json.dumps(texts, ensure_ascii=False))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    got = json.loads(out)
    from yuyue.features.signals import expand_pattern, visitor_signals
    from yuyue.features.tokenize import tokenize

    assert expand_pattern("多少钱|价格") == ["价格", "多少钱"]  # expanded here, with the parser
    assert got["expanded"] is None
    expected = [sorted(visitor_signals(t, tokenize(t))) for t in texts]
    assert sum(map(len, expected)) >= 4, expected
    assert got["signals"] == expected
