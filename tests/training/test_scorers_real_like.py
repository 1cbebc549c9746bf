"""fit_target on data shaped like real exports: booked only (no contact, no arrival), an unknown department."""

from __future__ import annotations

import numpy as np
import pytest

from tests.utils.records import write_lines
from yuyue.features.rows import FeatureSpace
from yuyue.training.dataset import build_rows, scan, split_by_time
from yuyue.training.scorers import MIN_AUC_GAIN, UnusableDataError, fit_target, increasing_columns


@pytest.fixture(scope="module")
def service_like(tmp_path_factory):
    sim = pytest.importorskip("yuyue.data.simulator")
    recs = []
    for r in sim.iter_records(400, seed=33):
        r = dict(r, department="客服", visit=None, project=None, truth=None)
        r["outcome"] = {"booked": bool(r["outcome"]["booked"])}
        recs.append(r)
    path = write_lines(tmp_path_factory.mktemp("svc") / "svc.jsonl", recs)
    scan_ = split_by_time(scan(path))
    space = FeatureSpace()
    return space, build_rows(scan_, space, workers=1, max_open=4)


def test_booked_scorer_trains_on_booked_only_data(service_like):
    space, rows = service_like
    choice = fit_target("booked", rows, feature_names=space.names)
    assert choice.kind in choice.valid_auc
    p = choice.scorer.predict_proba(rows["test"].rows)
    assert np.isfinite(p).all() and 0.0 < p.min() and p.max() < 1.0


def test_arrived_without_any_known_arrival_is_named_not_a_crash(service_like):
    space, rows = service_like
    with pytest.raises(UnusableDataError, match="arrived"):
        fit_target("arrived", rows, feature_names=space.names)


def test_buying_signals_are_increasing_columns():
    names = FeatureSpace().names
    inc = {names[j] for j in increasing_columns(names)}
    assert {"sig.v.asks_address", "sig.v.asks_time", "ent.has_contact", "ent.visit_time_agreed"} <= inc
    assert "sig.v.hesitation" not in inc and "dlg.n_msgs" not in inc


def test_small_data_compares_candidates_by_cross_validation(service_like):
    space, rows = service_like
    choice = fit_target("booked", rows, feature_names=space.names)
    assert "CV" in choice.selection
    assert set(choice.valid_auc) == {"logreg", "hgb_small", "hgb"}
    assert all(0.5 < choice.valid_auc[name] <= 1.0 for name in choice.valid_auc)
    # the kept family is the cheapest that no later one beats by the margin
    order = list(choice.valid_auc)
    kept = order.index(choice.kind)
    assert all(choice.valid_auc[n] <= choice.valid_auc[choice.kind] + MIN_AUC_GAIN for n in order[kept + 1 :])
    single = fit_target("booked", rows, feature_names=space.names, cv_max_conversations=0)
    assert single.selection == "the validation split"
