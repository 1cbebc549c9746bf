"""Outcome scorers of both kinds: fast paths equal the reference computation, reasons are exact differences."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from yuyue.data.contract import Conversation
from yuyue.features.rows import FeatureSpace, prefix_rows
from yuyue.models.reasons import ReasonExplainer
from yuyue.models.scorer import OutcomeScorer


@pytest.fixture(scope="module")
def rows_y():
    sim = pytest.importorskip("yuyue.data.simulator")
    convs = [Conversation.model_validate(r) for r in sim.iter_records(500, seed=31)]
    space = FeatureSpace()
    rows = prefix_rows([c.without_truth() for c in convs], space, max_open=4)
    y = np.array([int(bool(convs[g].outcome and convs[g].outcome.booked)) for g in rows.group], dtype=np.int8)
    w = np.ones(len(rows))
    return space, rows, y, w


@pytest.fixture(scope="module", params=["logreg", "hgb"])
def scorer(request, rows_y):
    _, rows, y, w = rows_y
    params = {"max_iter": 40} if request.param == "hgb" else {}
    return OutcomeScorer(kind=request.param, **params).fit(rows, y, w).calibrate(rows, y, w)


def _stacked(
    scorer: OutcomeScorer, struct: np.ndarray, text: sp.csr_matrix, with_text: np.ndarray
) -> np.ndarray:
    empty = sp.csr_matrix(text.shape, dtype=text.dtype)
    return scorer.predict_proba_arrays(
        struct, sp.vstack([text if t else empty for t in with_text], format="csr")
    )


def test_variants_equal_stacked_rows(scorer, rows_y):
    _, rows, _, _ = rows_y
    rng = np.random.default_rng(0)
    for i in rng.choice(len(rows), 30, replace=False):
        struct = np.repeat(rows.struct[i : i + 1], 5, axis=0)
        struct[1:, rng.choice(struct.shape[1], 4)] = 0.0
        with_text = np.array([True, True, False, True, False])
        fast = scorer.predict_proba_variants(struct, rows.text[i], with_text)
        np.testing.assert_allclose(fast, _stacked(scorer, struct, rows.text[i], with_text), atol=1e-9)


def test_reasons_are_score_differences_against_the_baseline(scorer, rows_y):
    space, rows, _, _ = rows_y
    explainer = ReasonExplainer(space.names, ReasonExplainer.fit_baseline(rows.struct, space.names))
    seen = 0
    for i in range(0, len(rows), max(1, len(rows) // 60)):
        x, text = rows.struct[i : i + 1], rows.text[i]
        p, reasons = explainer.explain(scorer, x, text, top=50, min_abs=0.0)
        assert p == pytest.approx(float(scorer.predict_proba_arrays(x, text)[0]), abs=1e-9)
        for r in reasons:
            group = next(g for g in explainer.groups if g.id == r.group)
            if group.text:
                ref = scorer.predict_proba_arrays(x, sp.csr_matrix(text.shape, dtype=text.dtype))[0]
            else:
                v = x.copy()
                v[0, group.columns] = explainer.baseline[group.columns]
                ref = scorer.predict_proba_arrays(v, text)[0]
                assert not np.array_equal(x[0, group.columns], explainer.baseline[group.columns])
            assert r.delta == pytest.approx(p - ref, abs=1e-9)
            seen += 1
    assert seen > 0


def test_flat_forest_equals_sklearn_trees(rows_y):
    from yuyue.models.scorer import FlatForest

    _, rows, y, w = rows_y
    model = OutcomeScorer(kind="hgb", max_iter=30, use_text=False).fit(rows, y, w).model_
    forest = FlatForest(model)
    X = rows.struct[:200].astype(np.float64)
    # values exactly on split thresholds go left, as in sklearn
    thresholds = forest.threshold[~forest.leaf]
    features = forest.feature[~forest.leaf]
    X[np.arange(len(thresholds)) % len(X), features] = thresholds
    assert forest.supports(X)
    np.testing.assert_allclose(forest.raw(X), model._raw_predict(X).ravel(), rtol=0, atol=1e-12)
    X[0, features[0]] = np.nan
    assert not forest.supports(X)  # missing values take sklearn's own path
