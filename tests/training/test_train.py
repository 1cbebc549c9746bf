"""Training: what gets trained from which data, calibration, no leakage, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import SHARED
from tests.utils.records import record, write_lines
from yuyue.data.io import read_conversations, write_jsonl
from yuyue.features.state import replay
from yuyue.models.bundle import YuyueModel
from yuyue.training.evaluate import evaluate
from yuyue.training.scorers import UnusableDataError
from yuyue.training.train import train


def test_trains_everything_from_labelled_annotated_chats(trained):
    assert set(trained.model.scorers) == {"booked", "arrived"}
    assert trained.model.stage_model is not None and trained.model.suggester is not None
    m = trained.metrics
    for key in (
        "booked.auc",
        "booked.ece",
        "booked.brier",
        "arrived.auc",
        "booked.auc_oracle",
        "stage.macro_f1",
    ):
        assert key in m, key
    assert set(m["booked.auc_by_visitor_turn"]) == {"1", "2", "3", "5", "10"}
    # well above chance, and no better than the simulator's own probabilities could be by much
    assert 0.7 < m["booked.auc"] <= m["booked.auc_oracle"] + 0.03


def test_scores_are_calibrated_on_held_out_chats(model, tmp_path_factory):
    # a fresh simulated desk the model never saw, large enough that binning noise stays well under the bound
    from yuyue.data.simulator import generate_file

    path = tmp_path_factory.mktemp("fresh") / "fresh.jsonl"
    generate_file(path, n=3000, seed=202, workers=2)
    m = evaluate(model, path)
    assert m["booked.ece"] < 0.05, m["booked.ece"]
    assert m["arrived.ece"] < 0.05, m["arrived.ece"]
    assert m["booked.ece_open"] < 0.05, m["booked.ece_open"]


def test_scores_for_a_prefix_do_not_depend_on_later_messages(model, sim_path):
    convs = [c.without_truth() for c, _ in zip(read_conversations(sim_path), range(12), strict=False)]
    for conv in convs:
        for k in (1, len(conv.messages) // 2, len(conv.messages)):
            cut = conv.model_copy(update={"messages": conv.messages[:k], "outcome": None})
            a = model.score(replay(cut, **_h(model)))
            b = model.score(replay(conv, upto=k, **_h(model)))
            for target in a:
                assert a[target].probability == pytest.approx(b[target].probability, abs=1e-12)


def test_outcome_is_never_a_feature(model, sim_path):
    conv = next(iter(read_conversations(sim_path)))
    flipped = conv.model_copy(
        update={"outcome": conv.outcome.model_copy(update={"booked": not conv.outcome.booked})}
    )
    assert (
        model.score(replay(conv, **_h(model)))["booked"].probability
        == model.score(replay(flipped, **_h(model)))["booked"].probability
    )


def test_reasons_are_signed_and_worded(model, sim_path):
    contact_deltas, without = [], 0
    chats = [c for c, _ in zip(read_conversations(sim_path), range(200), strict=False) if c.outcome.contact]
    for conv in chats:
        reasons = model.score(replay(conv, **_h(model)), closed=True)["booked"].reasons
        # on a flat step of the isotonic calibration no single group moves the probability: no reasons
        without += not reasons
        for r in reasons:
            assert r.render().endswith(f"{abs(r.delta):.2f}")
            assert r.label and not r.label.startswith("{")
        contact_deltas += [r.delta for r in reasons if r.group == "contact"]
    # leaving contact details is among the top reasons of most such chats, and always pushes the score up
    assert without <= len(chats) / 10, f"{without} of {len(chats)} chats without reasons"
    assert len(contact_deltas) > len(chats) / 2
    assert min(contact_deltas) > 0


def _h(model: YuyueModel) -> dict[str, str]:
    return {
        k: v
        for k, v in model.hospital.items()
        if k in ("hospital_name", "hospital_city", "hospital_province")
    }


def _small(sim_path, tmp_path, n=600, **update):
    out = tmp_path / "small.jsonl"
    recs = []
    for conv, _ in zip(read_conversations(sim_path), range(n), strict=False):
        rec = conv.to_record()
        for k, v in update.items():
            if v is None:
                rec.pop(k, None)
            else:
                rec[k] = v
        recs.append(rec)
    write_jsonl(out, recs)
    return out


def test_data_without_outcomes_trains_no_scorer(sim_path, tmp_path, test_settings):
    path = _small(sim_path, tmp_path, outcome=None, truth=None)
    res = train(path, settings=test_settings, out_dir=tmp_path / "b", echo=lambda _: None)
    assert res.model.scorers == {}
    assert any("scorer" in s for s in res.skipped)
    assert res.model.stage_model is not None and res.model.suggester is not None
    assert "booked.auc" not in res.metrics and "stage.macro_f1" in res.metrics


def test_reply_pairs_alone_train_the_reply_ranker(tmp_path, test_settings):
    src = SHARED / "data" / "real" / "medqa_dev.jsonl"
    if not src.exists():
        pytest.skip("../shared not present")
    path = tmp_path / "qa.jsonl"
    write_jsonl(path, [c for c, _ in zip(read_conversations(src), range(800), strict=False)])
    res = train(path, settings=test_settings, out_dir=tmp_path / "b", echo=lambda _: None)
    assert res.model.scorers == {}
    assert res.model.suggester is not None
    assert any("script library alone" in s for s in res.skipped)
    assert res.metrics["reply.r10_at_1"] > 0.3  # 10 candidates: chance is 0.1


@pytest.mark.parametrize(
    "lines, words",
    [
        ([], "no valid conversations"),
        ([b"{broken"], "no valid conversations (1 invalid records skipped)"),
        (
            [
                record(
                    conversation_id=f"c{i}",
                    messages=[{"at": "2025-03-05T14:02:11+08:00", "role": "visitor", "text": "在吗"}],
                )
                for i in range(5)
            ],
            "no consultant messages",
        ),
        (
            [record(conversation_id=f"c{i}", outcome={"booked": False}) for i in range(60)],
            "all 60 labelled conversations are not booked",
        ),
    ],
)
def test_unusable_data_gets_a_clear_error(tmp_path, test_settings, lines, words):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(UnusableDataError, match=words.replace("(", r"\(").replace(")", r"\)")):
        train(path, settings=test_settings, out_dir=tmp_path / "b", echo=lambda _: None)


def test_bundle_round_trip_gives_the_same_predictions(trained, sim_path, tmp_path):
    loaded = YuyueModel.load(trained.model.save(tmp_path / "copy"))
    for conv, _ in zip(read_conversations(sim_path), range(5), strict=False):
        a = trained.model.score(replay(conv, **_h(trained.model)))
        b = loaded.score(replay(conv, **_h(loaded)))
        assert {k: v.probability for k, v in a.items()} == {k: v.probability for k, v in b.items()}


def test_evaluate_on_a_file_reports_the_documented_keys(model, sim_path, tmp_path):
    path = _small(sim_path, tmp_path, n=300)
    m = evaluate(model, path)
    assert m["n_conversations"] == 300
    for key in (
        "booked.auc",
        "arrived.auc",
        "booked.auc_oracle",
        "reply.r10_at_1",
        "reply.mrr",
        "reply.hit_at_3",
        "pii.recall",
        "pii.precision",
        "stage.macro_f1",
    ):
        assert key in m, key
    json.dumps({k: v for k, v in m.items() if not k.startswith("_")})


def test_pii_metrics_count_planted_entities(sim_path):
    from yuyue.training.evaluate import pii_metrics

    convs = [c for c, _ in zip(read_conversations(sim_path), range(300), strict=False)]
    m = pii_metrics(convs)
    assert m["pii.n_planted"] == sum(len(c.truth.entities) for c in convs)
    assert m["pii.precision"] > 0.9


def test_prefix_rows_weight_each_conversation_once(sim_path):
    from yuyue.features.rows import FeatureSpace
    from yuyue.training.dataset import build_rows, scan, split_by_time

    s = split_by_time(scan(_first(sim_path, 200)))
    rows = build_rows(s, FeatureSpace(), ("train",), workers=1)["train"]
    closed = rows.rows.closed == 1
    per_conv = np.bincount(rows.rows.group[~closed], weights=rows.weight[~closed])
    assert np.allclose(per_conv, 1.0)
    assert np.allclose(rows.weight[closed], 1.0)
    assert closed.sum() == len(rows.conv_index)


def _first(path, n):
    out = path.parent / f"first{n}.jsonl"
    if not out.exists():
        write_jsonl(out, [c for c, _ in zip(read_conversations(path), range(n), strict=False)])
    return out


def test_time_split_puts_latest_chats_in_test(sim_path):
    from yuyue.training.dataset import scan, split_by_time

    s = split_by_time(scan(_first(sim_path, 500)))
    ts = {name: [m.started_ts for m in s.metas if s.split[m.index] == name] for name in ("train", "test")}
    assert max(ts["train"]) <= min(ts["test"])


def test_a_row_budget_builds_rows_of_a_seeded_sample_in_every_split(sim_path):
    """Above ``max_chats`` labelled chats the rows come from a seeded sample of that many, each split
    keeping about its share and the time split unchanged; below it every labelled chat."""
    from yuyue.features.rows import FeatureSpace
    from yuyue.training.dataset import build_rows, fit_sample, n_rows_conversations, scan, split_by_time

    s = split_by_time(scan(_first(sim_path, 400)))
    every = fit_sample(s)
    assert len(every) == s.n_labelled == n_rows_conversations(s, max_chats=10_000)
    sample = fit_sample(s, max_chats=200)
    assert len(sample) == 200 == n_rows_conversations(s, max_chats=200)
    assert sample == fit_sample(s, max_chats=200)  # seeded: the same chats every time
    assert all(every[i] == split for i, split in sample.items())  # a chat keeps its split
    for split in ("train", "test"):
        share = sum(v == split for v in every.values()) / len(every)
        assert abs(sum(v == split for v in sample.values()) / 200 - share) < 0.1, split
    rows = build_rows(s, FeatureSpace(), workers=1, max_chats=200)
    assert sorted(i for r in rows.values() for i in r.conv_index) == sorted(sample)


def test_evaluation_of_a_large_split_reads_a_bounded_sample(model, sim_path):
    from yuyue.training.dataset import scan, split_by_time
    from yuyue.training.evaluate import evaluate

    s = split_by_time(scan(_first(sim_path, 400)))
    s.split = {i: "test" for i in s.split}  # every chat in the test split
    m = evaluate(model, s.path, scan_=s, split="test", workers=1, max_conversations=150)
    assert m["n_conversations"] == 150 and len(m["_chats"]) == 150
