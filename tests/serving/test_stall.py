"""No message stalls the server (issue 15), end to end: ``yuyue serve`` (one worker, SQLite) gets
adversarial 10,000-character messages (the issue's ``"qq号是12345 " * 1000`` and other kinds of
``bench/bench_adversarial.py``) as the visitor's and as the consultant's message, while a thread polls
``/healthz`` every 10 ms (``bench/bench_stall.py``, which prints the timings).

No absolute time limits here (those are the bench's targets): every message and the short message
after it get a 200, and ``/healthz`` keeps answering while the message is processed -- relative to how
long it took: a message that held the event loop (or the GIL, in one long regex search) for a second
would see one ``/healthz`` poll hang instead of dozens answered.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.utils.bench import load_bench

pytestmark = pytest.mark.integration
POLL_S = 0.010
# a free event loop answers a poll every POLL_S plus its latency (at most about POLL_S more when the
# message's thread holds the GIL): ask for a quarter of that (a loaded 2-core machine), and allow the
# poll in flight at each end of the message
SHARE = 0.25
SLACK = 2


def _bench_stall():
    return load_bench("bench_stall")


@pytest.fixture(scope="module")
def served(request, tmp_path_factory):
    if os.environ.get("YUYUE_TEST_MODEL_DIR"):
        bundle = Path(os.environ["YUYUE_TEST_MODEL_DIR"])
    else:
        bundle = request.getfixturevalue("model").save(tmp_path_factory.mktemp("stall") / "bundle")
    with _bench_stall().server(bundle) as (base_url, key):
        yield base_url, key


@pytest.mark.parametrize(
    "kind",
    [
        "qq",
        "phone",
        "wechat",
        "time",
        "mixed",
        "digits",  # the guard's numeral runs were unbounded (\\d+): seconds per consultant message
    ],
)
def test_an_adversarial_message_does_not_stall_healthz(served, kind):
    bench = _bench_stall()
    base_url, key = served
    texts = bench.adversarial_texts(10_000, (kind,))
    if kind == "qq":
        assert texts["qq"] == "qq号是12345 " * 1000  # the message
    rows = bench.run(base_url, key, texts, POLL_S)
    print("\n" + bench.table(rows))  # the timings, for the record (-s)
    assert [(r.role, r.status, r.next_status) for r in rows] == [
        ("visitor", 200, 200),
        ("consultant", 200, 200),
    ]
    for r in rows:
        assert r.healthz_bad == 0, r
        expected = SHARE * (r.message_ms / 1000) / (2 * POLL_S)
        assert r.healthz_done_inside >= expected - SLACK, (
            f"{kind} as {r.role}: {r.message_ms:.0f} ms, /healthz answered only {r.healthz_done_inside} "
            f"times meanwhile (worst {r.healthz_worst_ms:.0f} ms)"
        )
