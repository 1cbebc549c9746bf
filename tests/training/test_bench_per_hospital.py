"""bench/bench_per_hospital.py's data (issue 17): two hospitals from two simulator worlds, one time-ordered
file that :func:`training.per_hospital.split_hospitals` splits back into the two. No training here (the
bench's numbers are docs/benchmarks.md's; test_per_hospital.py tests the fits and the rule)."""

from __future__ import annotations

import orjson

from tests.utils.bench import load_bench
from yuyue.training import per_hospital as ph

bench = load_bench("bench_per_hospital")


def test_the_bench_merges_a_default_and_a_shifted_hospital_in_time_order(tmp_path):
    data = tmp_path / "chats.jsonl"
    rates = bench.write_hospitals(data, 40)
    assert {h: r["world"] for h, r in rates.items()} == {"hz-a": "default", "sh-b": "shifted"}
    recs = [orjson.loads(line) for line in data.read_bytes().splitlines()]
    assert len(recs) == 80 and len({r["conversation_id"] for r in recs}) == 80
    starts = [r["started_at"] for r in recs]
    assert starts == sorted(starts)
    # interleaved, not one hospital after the other: both hospitals among the earliest and the latest chats
    assert {r["hospital"] for r in recs[:20]} == {r["hospital"] for r in recs[-20:]} == {"hz-a", "sh-b"}
    # the shifted world's chats are the shifted hospital's (its simulator names its chats "simshift…")
    for r in recs:
        assert r["conversation_id"].startswith("simshift") == (r["hospital"] == "sh-b")

    counts, files, held_out = ph.split_hospitals(data, tmp_path / "split", min_chats=30)
    assert sorted(files) == ["hz-a", "sh-b"] and sum(counts.values()) == 80
    for h, path in files.items():
        assert {orjson.loads(line)["hospital"] for line in path.read_bytes().splitlines()} == {h}
    assert len(held_out) == 8  # the latest 10 % of the merged file


def test_the_auc_standard_error_shrinks_with_more_positives():
    few, many = bench.hanley_se(0.8, 17, 233), bench.hanley_se(0.8, 170, 2330)
    assert few is not None and many is not None and 0 < many < few < 0.1
    assert bench.hanley_se(None, 10, 10) is None and bench.hanley_se(0.8, 0, 10) is None
