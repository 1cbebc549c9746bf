"""Prefix rows: sampled prefixes equal the full rows; text rows equal the state's cumulative bags."""

from __future__ import annotations

import numpy as np
import pytest

from yuyue.data.contract import Conversation
from yuyue.features.rows import FeatureSpace, prefix_rows
from yuyue.features.state import replay


@pytest.fixture(scope="module")
def convs() -> list[Conversation]:
    sim = pytest.importorskip("yuyue.data.simulator")
    return [Conversation.model_validate(r).without_truth() for r in sim.iter_records(40, seed=8)]


def test_text_rows_equal_cumulative_bags(convs):
    rows = prefix_rows(convs[:10], include_closed=False)
    bags = []
    for conv in convs[:10]:
        bags.append(({}, {}))
        bags += [replay(conv, upto=k).text_bag() for k in range(1, len(conv.messages) + 1)]
    ref = FeatureSpace.text(bags)
    assert ref.shape == rows.text.shape
    assert abs(ref - rows.text).max() < 1e-6


def test_sampled_rows_equal_full_rows(convs):
    full = prefix_rows(convs)
    sampled = prefix_rows(convs, max_open=4)
    assert len(sampled) < len(full)
    for g in range(len(convs)):
        f, s = full.group == g, sampled.group == g
        assert (sampled.closed[s] == 0).sum() == min(4, len(convs[g].messages)) + 1  # + the empty row
        by_prefix = {
            int(n): i
            for i, n in zip(np.flatnonzero(f), full.n_messages[f], strict=True)
            if not full.closed[i]
        }
        for i in np.flatnonzero(s):
            j = (
                int(np.flatnonzero(f & (full.closed == 1))[0])
                if sampled.closed[i]
                else by_prefix[int(sampled.n_messages[i])]
            )
            assert np.array_equal(sampled.struct[i], full.struct[j])
            assert abs(sampled.text[i] - full.text[j]).max() < 1e-6


def test_sampling_is_deterministic(convs):
    a, b = prefix_rows(convs, max_open=3, seed=1), prefix_rows(convs, max_open=3, seed=1)
    assert np.array_equal(a.n_messages, b.n_messages)
    c = prefix_rows(convs, max_open=3, seed=2)
    assert not np.array_equal(a.n_messages, c.n_messages)


def test_unknown_feature_names_are_ignored_known_ones_placed():
    space = FeatureSpace(["a", "b"])
    X = space.struct([{"a": 1.0, "zzz": 5.0}, {"b": 2.0}])
    assert X.tolist() == [[1.0, 0.0], [0.0, 2.0]]


def test_one_text_row_equals_the_batch_text(convs):
    for conv in convs[:10]:
        for k in (0, 1, len(conv.messages) // 2, len(conv.messages)):
            bags = replay(conv, upto=k).text_bag()
            one, ref = FeatureSpace.text_row(*bags), FeatureSpace.text([bags])
            assert one.shape == ref.shape == (1, ref.shape[1]) and one.nnz == ref.nnz
            assert abs(one - ref).max() < 1e-6 if ref.nnz else one.nnz == 0
