"""Reasons are true (absent inputs are no reason), tempo never crowds out the rest, buying signals never lower."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import scipy.sparse as sp

from tests.utils.records import record
from yuyue.data.contract import Conversation
from yuyue.features.rows import FeatureSpace
from yuyue.features.state import replay
from yuyue.models.reasons import ReasonExplainer

TZ = timezone(timedelta(hours=8))
OPENING = [
    ("visitor", "你好，隆鼻大概多少钱"),
    ("consultant", "您好，请问怎么称呼您？"),
    ("visitor", "我姓王"),
    ("consultant", "王女士您好，价格要看方案，医生面诊后会给您详细说明。方便留个电话吗？"),
    ("visitor", "好的 13812345678"),
    ("consultant", "好的王女士，明天下午两点您方便来院面诊吗？"),
]
BUYING = ["你们医院地址在哪里？怎么过去？", "明天下午几点可以过去？", "去的时候需要带什么吗？"]


def _scores(model, turns, closed=False, **overrides):
    start = datetime(2025, 11, 5, 14, 0, tzinfo=TZ)
    msgs = [
        {"at": (start + timedelta(seconds=40 * i)).isoformat(), "role": r, "text": t}
        for i, (r, t) in enumerate(turns)
    ]
    conv = Conversation.model_validate(
        record(messages=msgs, started_at=msgs[0]["at"], outcome=None, **overrides)
    )
    h = {
        k: v
        for k, v in model.hospital.items()
        if k in ("hospital_name", "hospital_city", "hospital_province")
    }
    return model.score(replay(conv, **h), closed=closed, top=50)


class _Flat:
    """A scorer stand-in: p = 0.5 + 0.01 * sum(struct), the same for every variant kind."""

    def predict_proba_variants(self, struct, text, with_text):
        return 0.5 + 0.01 * np.asarray(struct, dtype=float).sum(axis=1)


def test_absent_one_hot_inputs_are_no_reason():
    space = FeatureSpace()
    base = np.zeros(space.n_struct, dtype=np.float32)
    base[space.index["visit.landing=case"]] = 1.0  # the training set's most common landing page
    explainer = ReasonExplainer(space.names, base)
    x = np.zeros((1, space.n_struct), dtype=np.float32)
    x[0, space.index["visit.landing=none"]] = 1.0  # a chat opened with no pages at all
    x[0, space.index["dlg.n_msgs"]] = 3.0
    _, reasons = explainer.explain(_Flat(), x, sp.csr_matrix((1, 8)), top=50, min_abs=0.0)
    assert "pages" not in {r.group for r in reasons}
    x[0, space.index["visit.pages_n"]] = 4.0
    _, reasons = explainer.explain(_Flat(), x, sp.csr_matrix((1, 8)), top=50, min_abs=0.0)
    assert "pages" in {r.group for r in reasons}


def test_tempo_reasons_come_after_the_others():
    space = FeatureSpace()
    explainer = ReasonExplainer(space.names, np.zeros(space.n_struct, dtype=np.float32))
    x = np.zeros((1, space.n_struct), dtype=np.float32)
    x[0, space.index["dlg.n_msgs"]] = 40.0  # the largest contribution by far
    x[0, space.index["ent.has_contact"]] = 1.0
    x[0, space.index["sig.v.asks_address"]] = 1.0
    _, reasons = explainer.explain(_Flat(), x, sp.csr_matrix((1, 8)), top=2, min_abs=0.0)
    assert [r.group for r in reasons] == ["contact", "asks"]
    _, reasons = explainer.explain(_Flat(), x, sp.csr_matrix((1, 8)), top=3, min_abs=0.0)
    assert reasons[-1].group == "engagement"


def test_no_pages_reason_for_a_chat_without_a_visit_trace(model):
    for closed in (False, True):
        s = _scores(model, OPENING, closed=closed, visit=None)
        for scored in s.values():
            assert "pages" not in {r.group for r in scored.reasons}


@pytest.mark.parametrize("question", BUYING)
def test_a_buying_signal_never_lowers_the_score(model, question):
    for cut in (4, len(OPENING)):
        before = _scores(model, OPENING[:cut])["booked"].probability
        after = _scores(model, OPENING[:cut] + [("visitor", question)])["booked"].probability
        assert after >= before - 1e-9, (cut, question, before, after)
