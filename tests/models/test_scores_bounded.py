"""Scores stay bounded and consistent: never 0 or 1, p(arrived) <= p(booked), no saturation by one message."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from tests.utils.records import record
from yuyue.data.contract import Conversation
from yuyue.features.rows import FeatureSpace, prefix_rows
from yuyue.features.state import replay
from yuyue.models.scorer import OutcomeScorer

TZ = timezone(timedelta(hours=8))
OPENING = [
    ("visitor", "你好，隆鼻大概多少钱"),
    ("consultant", "您好，请问怎么称呼您？"),
    ("visitor", "我姓王"),
    ("consultant", "王女士您好，您现在鼻子是什么情况呢？"),
]


@pytest.fixture(scope="module")
def rows_y():
    sim = pytest.importorskip("yuyue.data.simulator")
    convs = [Conversation.model_validate(r) for r in sim.iter_records(400, seed=32)]
    space = FeatureSpace()
    rows = prefix_rows([c.without_truth() for c in convs], space, max_open=4)
    booked = np.array(
        [int(bool(convs[g].outcome and convs[g].outcome.booked)) for g in rows.group], dtype=np.int8
    )
    arrived = np.array(
        [int(bool(convs[g].outcome and convs[g].outcome.arrived)) for g in rows.group], dtype=np.int8
    )
    return space, rows, booked, arrived


@pytest.fixture(scope="module", params=["logreg", "hgb"])
def kind(request):
    return request.param


def _fit(kind, rows, y, calib_groups=None):
    params = {"max_iter": 40} if kind == "hgb" else {}
    w = np.ones(len(rows))
    model = OutcomeScorer(kind=kind, **params).fit(rows, y, w)
    cal = np.ones(len(rows), dtype=bool) if calib_groups is None else np.isin(rows.group, calib_groups)
    return model.calibrate(rows.take(cal), y[cal], w[cal])


def test_calibrated_scores_never_reach_0_or_1(kind, rows_y):
    space, rows, y, _ = rows_y
    # 20 calibration chats: isotonic regression on so few puts whole bins at exactly 0 and 1
    model = _fit(kind, rows, y, calib_groups=np.arange(20))
    p = model.predict_proba(rows)
    assert p.min() >= 1 / 22 - 1e-12 and p.max() <= 1 - 1 / 22 + 1e-12
    assert 0.0 < p.min() and p.max() < 1.0


def test_inputs_beyond_the_training_range_are_clipped(kind, rows_y):
    space, rows, y, _ = rows_y
    model = _fit(kind, rows, y)
    j = space.index["dlg.visitor_mean_len"]
    x = rows.struct[50:51].copy()
    edge, huge = x.copy(), x.copy()
    edge[0, j] = model.clip_hi_[j]
    huge[0, j] = 10000.0
    for k in ("dlg.n_msgs", "dlg.n_visitor", "dlg.n_consultant"):
        huge[0, space.index[k]] = 300.0
        edge[0, space.index[k]] = model.clip_hi_[space.index[k]]
    text = rows.text[50]
    assert model.predict_proba_arrays(huge, text)[0] == pytest.approx(
        model.predict_proba_arrays(edge, text)[0]
    )


def test_arrived_never_above_booked(kind, rows_y):
    _, rows, booked, arrived = rows_y
    b = _fit(kind, rows, booked)
    a = _fit(kind, rows, arrived).bound_by(b)
    pa, pb = a.predict_proba(rows), b.predict_proba(rows)
    assert (pa <= pb).all()
    variants = np.repeat(rows.struct[10:11], 3, axis=0)
    variants[1] = 0.0
    with_text = np.array([True, True, False])
    assert (
        a.predict_proba_variants(variants, rows.text[10], with_text)
        <= b.predict_proba_variants(variants, rows.text[10], with_text)
    ).all()


# ---- the trained bundle ------------------------------------------------------------------


def _chat(turns, **overrides):
    start = datetime(2025, 11, 5, 14, 0, tzinfo=TZ)
    msgs = [
        {"at": (start + timedelta(seconds=40 * i)).isoformat(), "role": r, "text": t}
        for i, (r, t) in enumerate(turns)
    ]
    return Conversation.model_validate(
        record(messages=msgs, started_at=msgs[0]["at"], outcome=None, **overrides)
    )


def _scores(model, turns, closed=False, **overrides):
    h = {
        k: v
        for k, v in model.hospital.items()
        if k in ("hospital_name", "hospital_city", "hospital_province")
    }
    return model.score(replay(_chat(turns, **overrides), **h), closed=closed)


LONG = (
    "我今年三十二岁，"
    + "鼻子一直觉得有点塌，鼻头也比较大，之前在别的地方咨询过，说可以用假体也可以用自体软骨，" * 10
)


def test_one_long_message_does_not_saturate_the_score(model):
    assert len(LONG) >= 400
    before = _scores(model, OPENING)["booked"].probability
    after = _scores(model, OPENING + [("visitor", LONG)])
    assert 0.0 < after["booked"].probability < 1.0
    assert abs(after["booked"].probability - before) <= 0.3
    huge = _scores(model, OPENING + [("visitor", (LONG * 30)[:10000])])["booked"].probability
    assert 0.0 < huge < 1.0 and abs(huge - before) <= 0.3


@pytest.mark.parametrize(
    "turns",
    [
        [("visitor", "割双眼皮多少钱")],
        OPENING,
        OPENING
        + [("visitor", "好的 13812345678"), ("consultant", "明天下午两点方便来吗？"), ("visitor", "可以")],
        OPENING + [("visitor", "太贵了，算了")],
    ],
)
def test_scores_bounded_and_arrived_at_most_booked(model, turns):
    for closed in (False, True):
        s = _scores(model, turns, closed=closed)
        for scored in s.values():
            assert 0.0 < scored.probability < 1.0
        if "arrived" in s:
            assert s["arrived"].probability <= s["booked"].probability


def test_unseen_department_scores(model):
    s = _scores(model, OPENING, department="皮肤科", project="祛斑")
    assert 0.0 < s["booked"].probability < 1.0
    for r in s["booked"].reasons:
        assert "other" not in r.label and "unknown" not in r.label


def test_isotonic_calibration_is_strictly_increasing_between_its_steps():
    """Two different raw scores inside one isotonic step used to get the same probability."""
    from sklearn.isotonic import IsotonicRegression

    from yuyue.models.scorer import centred_knots

    rng = np.random.default_rng(0)
    raw = rng.normal(size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-2 * raw))).astype(int)
    iso = IsotonicRegression(out_of_bounds="clip").fit(raw, y)
    xp, fp = centred_knots(iso.X_thresholds_, iso.y_thresholds_)
    assert np.all(np.diff(xp) > 0) and np.all(np.diff(fp) > 0)
    assert set(np.round(fp, 12)) == set(np.round(iso.y_thresholds_, 12))  # every step keeps its level
    inside = np.linspace(xp[0], xp[-1], 500)
    assert np.all(np.diff(np.interp(inside, xp, fp)) > 0)
    assert len(set(iso.predict(inside).round(12))) < 500  # the step map has ties there
    # a one-step map stays one level
    assert centred_knots(np.array([0.0, 1.0]), np.array([0.3, 0.3]))[1].tolist() == [0.3]
