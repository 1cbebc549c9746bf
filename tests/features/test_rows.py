"""Prefix rows: sampled prefixes equal the full rows; text rows equal the state's cumulative bags."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from yuyue.data.contract import Conversation
from yuyue.features.rows import FeatureSpace, prefix_rows
from yuyue.features.state import replay


@pytest.fixture(scope="module")
def convs() -> list[Conversation]:
    sim = pytest.importorskip("yuyue.data.simulator")
    return [Conversation.model_validate(r).without_truth() for r in sim.iter_records(40, seed=8)]


def test_text_rows_equal_the_live_text_row(convs):
    """A training row's text equals what the service computes from the live state of the same prefix."""
    space = FeatureSpace()
    rows = prefix_rows(convs[:10], space, include_closed=False)
    live = []
    for conv in convs[:10]:
        live += [space.state_text(replay(conv, upto=k)) for k in range(len(conv.messages) + 1)]
    ref = sp.vstack(live).tocsr()
    assert ref.shape == rows.text.shape
    assert abs(ref - rows.text).max() < 1e-6


def test_text_rows_are_the_cumulative_bag_plus_the_latest_messages(convs):
    conv = convs[0]
    rows = prefix_rows([conv], FeatureSpace(recent_grams=False), include_closed=False)
    whole = FeatureSpace.text([replay(conv, upto=k).text_bag() for k in range(len(conv.messages) + 1)])
    assert (
        abs(prefix_rows([conv], FeatureSpace(recent_text=False), include_closed=False).text - whole).max()
        < 1e-6
    )
    recent = (rows.text - whole).tocsr()
    recent.eliminate_zeros()
    # after a message the latest-message part is non-empty; each side's part has unit norm
    assert recent[0].nnz == 0
    k = len(conv.messages)
    state = replay(conv, upto=k)
    last_v, last_c = state.recent_bag()
    expected = sum(1.0 for b in (last_v, last_c) if b)
    assert np.isclose(recent[k].multiply(recent[k]).sum(), expected, atol=1e-4)
    # the latest visitor message's bag is that message's tokens alone, not the chat's
    assert 0 < len(last_v) < len(state.text_bag()[0])


def test_text_rows_add_the_latest_messages_character_grams(convs):
    conv = convs[1]
    words = prefix_rows([conv], FeatureSpace(recent_grams=False), include_closed=False).text
    grams = (prefix_rows([conv], include_closed=False).text - words).tocsr()
    grams.eliminate_zeros()
    assert grams[0].nnz == 0  # before any message
    for k in range(1, len(conv.messages) + 1):
        parts = [b for b in replay(conv, upto=k).recent_grams() if b]
        # one unit-norm part per side with a latest message (hash collisions aside)
        assert np.isclose(grams[k].multiply(grams[k]).sum(), len(parts), atol=0.05), k


def test_a_punctuation_only_message_gets_the_same_text_live_and_in_training():
    from tests.utils.records import record

    turns = [("visitor", "你好"), ("consultant", "您好"), ("visitor", "？？？")]
    at = "2025-03-05T14:02:{:02d}+08:00"
    msgs = [{"at": at.format(10 * i), "role": r, "text": t} for i, (r, t) in enumerate(turns)]
    conv = Conversation.model_validate(record(messages=msgs, started_at=msgs[0]["at"]))
    space = FeatureSpace()
    rows = prefix_rows([conv], space, include_closed=False)
    live = space.state_text(replay(conv, upto=3))
    assert abs(live - rows.text[3]).max() < 1e-6


def test_spaces_pickled_before_recent_text_keep_the_old_rows():
    import pickle

    space = FeatureSpace(["a"])
    state = space.__getstate__()
    del state["recent_text"]
    old = FeatureSpace.__new__(FeatureSpace)
    old.__setstate__(state)
    assert old.recent_text is False
    assert pickle.loads(pickle.dumps(space)).recent_text is True
    del state["recent_grams"]
    state["recent_text"] = True
    before_grams = FeatureSpace.__new__(FeatureSpace)
    before_grams.__setstate__(state)
    assert before_grams.recent_grams is False  # a bundle saved before the grams scores as it did
    assert pickle.loads(pickle.dumps(space)).recent_grams is True


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
