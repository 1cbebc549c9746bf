"""Retrieval, ranking, slot filling, guard filtering and metrics of reply suggestion."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from yuyue.models.replies.metrics import ReplyPair, hit_at_3, r10_at_1_and_mrr, split_conversations
from yuyue.models.replies.pool import ReplyExample, bigram_jaccard, build_pool
from yuyue.models.replies.rank import diverse_top_k
from yuyue.models.replies.retrieve import Bm25Retriever, TfidfCharRetriever, context_text
from yuyue.models.replies.suggest import ReplySuggester

MEDQA = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "medqa_dev.jsonl"

CHATS = [
    ("隆鼻多少钱", "隆鼻的费用要看方案，面诊后医生会给您出明细。", True),
    ("隆鼻大概要多少钱啊", "隆鼻的费用要看方案，面诊后医生会给您出明细哦。", True),
    ("你们医院在哪里", "医院地址发您了，坐地铁很方便。", False),
    ("做完会不会很疼", "手术全程有麻醉，术后会有一点胀痛，一般几天就缓解了。", False),
    ("疼不疼啊", "保证不疼，百分之百成功，做完一定满意。", True),  # non-compliant
    ("疼不疼啊", "保证不疼，百分之百成功，做完一定满意。", True),
    ("请问你们周末上班吗", "好的张女士，我们周末也正常接诊，可以提前预约。", False),
]
SCRIPTS = [
    SimpleNamespace(
        id="dir_1", stage="directions", text="我们医院在{address}。地址在哪里都好找，到了打{phone}。"
    ),
]


def _examples() -> list[ReplyExample]:
    return [
        ReplyExample(f"c{i}", (("consultant", "您好，有什么可以帮您？"), ("visitor", q)), a, None, b)
        for i, (q, a, b) in enumerate(CHATS)
    ]


@pytest.fixture(scope="module")
def suggester() -> ReplySuggester:
    examples = _examples()
    pool, assign = build_pool(examples, SCRIPTS)
    hospital = {"hospital": "西湖医院", "address": "文三路188号"}
    return ReplySuggester(pool, hospital=hospital, min_score=0.2).fit_examples(examples, assign)


def chat(text: str) -> list[tuple[str, str]]:
    return [("consultant", "您好，有什么可以帮您？"), ("visitor", text)]


def test_context_text_takes_latest_visitor_turn_and_previous_consultant_message() -> None:
    msgs = [("visitor", "a"), ("consultant", "b"), ("visitor", "c"), ("visitor", "d")]
    assert context_text(msgs) == "b\nc\nd"


@pytest.mark.parametrize("cls", [Bm25Retriever, TfidfCharRetriever])
def test_retrieval_finds_the_exact_context(cls) -> None:
    contexts = ["隆鼻多少钱", "医院地址在哪里", "周末上班吗", "术后多久恢复"]
    r = cls().fit(contexts, ["r1", "r2", "r3", "r4"])
    top = r.query("请问医院地址在哪里", k=2)
    assert top[0][0] == "r2" and 0 < top[0][1] <= 1
    assert r.query("完全无关的内容xyz", k=3) == [] or r.query("完全无关的内容xyz", k=3)[0][1] < 0.3


def test_tfidf_scores_equal_the_vectorizers_cosine() -> None:
    contexts = [
        "隆鼻多少钱？",
        "医院地址在哪里",
        "周末上班吗 周末",
        "术后多久恢复，疼不疼",
        "隆鼻隆鼻 价格 13812345678",
    ]
    r = TfidfCharRetriever().fit(contexts, ["r1", "r2", "r3", "r4", "r5"])
    for query in ["隆鼻大概多少钱 隆鼻", "地址", "我的电话13900001111", "xyz", "周末"]:
        ref = (r.vectorizer_.transform(contexts) @ r.vectorizer_.transform([query]).T).toarray().ravel()
        np.testing.assert_allclose(r.doc_scores(query), np.minimum(ref, 1.0), atol=1e-6)


def _bm25_reference(docs: list[list[str]], query: list[str], k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """Okapi BM25 (Lucene idf) of every doc, written out longhand, normalised as the retriever does."""
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    q = set(query)
    idf = {t: np.log1p((n - sum(t in d for d in docs) + 0.5) / (sum(t in d for d in docs) + 0.5)) for t in q}
    known = [t for t in q if any(t in d for d in docs)]
    norm = (sum(idf[t] for t in known) + (len(q) - len(known)) * np.log1p((n + 0.5) / 0.5)) * (k1 + 1)
    out = []
    for d in docs:
        s = sum(
            idf[t] * d.count(t) * (k1 + 1) / (d.count(t) + k1 * (1 - b + b * len(d) / avgdl)) for t in known
        )
        out.append(min(s / norm, 1.0) if norm else 0.0)
    return np.asarray(out)


def test_bm25_scores_repeated_contexts_once_and_exactly() -> None:
    # templated chats repeat contexts: each distinct bag of tokens is one postings column, but the
    # scores (idf, average length) still count every context, and every reply of a repeated one is found
    docs = [
        ["隆鼻", "多少", "钱"],
        ["地址", "在", "哪里"],
        ["隆鼻", "多少", "钱"],
        ["周末", "上班"],
        ["钱", "隆鼻", "多少"],
        ["地址", "在", "哪里"],
        ["术后", "恢复", "多久", "隆鼻"],
    ]
    ids = ["r1", "r2", "r3", "r4", "r1", "r5", "r6"]
    r = Bm25Retriever(tokenizer=str.split).fit_tokens(docs, ids)
    assert r.postings_.shape[1] == 4
    for query in (["隆鼻", "多少"], ["地址"], ["周末", "上班", "陌生"], ["xyz"]):
        np.testing.assert_allclose(r.doc_scores(" ".join(query)), _bm25_reference(docs, query), atol=1e-9)
    assert [rid for rid, _ in r.query("隆鼻 多少 钱", k=3)] == ["r1", "r3", "r6"]
    assert dict(r.query("地址 在 哪里", k=5)).keys() >= {"r2", "r5"}


def test_suggestions_fill_slots_and_prefer_matching_replies(suggester: ReplySuggester) -> None:
    out = suggester.suggest(chat("你们医院地址在哪里"), {"address_form": "王女士"}, k=5)
    texts = [s.text for s in out]
    assert "我们医院在文三路188号。" in texts  # {phone} unknown: its sentence is left out
    assert all("{" not in t and "打" not in t for t in texts)
    out = suggester.suggest(chat("请问你们周末上班吗"), {"address_form": "王女士"})
    assert out[0].text.startswith("好的王女士,我们周末")
    out = suggester.suggest(chat("请问你们周末上班吗"), {})
    assert out[0].text.startswith("好的,我们周末")


def test_missing_address_drops_the_sentence_or_the_reply() -> None:
    examples = _examples()
    pool, assign = build_pool(examples, SCRIPTS)
    sug = ReplySuggester(pool, hospital={}).fit_examples(examples, assign)
    out = sug.suggest(chat("医院地址在哪里"), {}, k=5)
    assert out and all("{" not in s.text and "s-dir_1" != s.id for s in out)


def test_guard_drops_promises_of_results(suggester: ReplySuggester) -> None:
    for s in suggester.suggest(chat("疼不疼啊"), {}, k=5):
        assert "保证" not in s.text and "百分之百" not in s.text


def test_blocked_replies_are_never_suggested(suggester: ReplySuggester) -> None:
    top = suggester.suggest(chat("隆鼻多少钱"), {})
    assert top
    suggester.pool.set_status([top[0].id], "blocked", save=False)
    try:
        assert top[0].id not in {s.id for s in suggester.suggest(chat("隆鼻多少钱"), {}, k=10)}
    finally:
        suggester.pool.set_status([top[0].id], "unreviewed", save=False)


def test_suggestions_are_diverse(suggester: ReplySuggester) -> None:
    out = suggester.suggest(chat("隆鼻多少钱，医院在哪，疼不疼，周末上班吗"), {}, k=5)
    for i, a in enumerate(out):
        for b in out[i + 1 :]:
            assert bigram_jaccard(a.text, b.text) < 0.5


def test_diverse_top_k_skips_near_duplicates() -> None:
    items = ["请问怎么称呼您", "请问怎么称呼您呢", "我们医院在文三路"]
    assert diverse_top_k(items, 2, text_of=str) == ["请问怎么称呼您", "我们医院在文三路"]


def test_nothing_fits_gives_no_suggestions(suggester: ReplySuggester) -> None:
    assert suggester.suggest(chat("qwerty zxcv"), {}) == []


def test_trigger_overrides_suggestions(suggester: ReplySuggester) -> None:
    assert suggester.suggest(chat("不想活了"), {}) == []
    out = suggester.suggest(chat("现在大出血了怎么办"), {})
    assert len(out) == 1 and out[0].source == "safety" and "120" in out[0].text


def test_save_and_load_round_trip(suggester: ReplySuggester, tmp_path: Path) -> None:
    suggester.save(tmp_path / "m")
    again = ReplySuggester.load(tmp_path / "m", hospital=dict(suggester.hospital))
    q = chat("你们医院地址在哪里")
    assert [s.id for s in again.suggest(q, {})] == [s.id for s in suggester.suggest(q, {})]


def test_r10_and_mrr_on_a_crafted_set() -> None:
    pairs = [ReplyPair(f"c{i}", f"q{i}", f"a{i}") for i in range(12)]

    def oracle(ctx: str, cands: list[str]) -> list[float]:
        return [1.0 if c[1:] == ctx[1:] else 0.0 for c in cands]

    def worst(ctx: str, cands: list[str]) -> list[float]:
        return [0.0 if c[1:] == ctx[1:] else 1.0 for c in cands]

    assert r10_at_1_and_mrr(pairs, oracle, seed=1)["r10@1"] == 1.0
    res = r10_at_1_and_mrr(pairs, worst, seed=1)
    assert res["r10@1"] == 0.0 and math.isclose(res["mrr"], 0.1)
    assert r10_at_1_and_mrr(pairs, lambda c, xs: [0.0] * len(xs))["r10@1"] == 0.0


def test_hit_at_3_on_a_crafted_set() -> None:
    examples = [("x", "请问怎么称呼您"), ("y", "我们医院在文三路")]
    res = hit_at_3(examples, lambda ctx: ["请问怎么称呼您呢"] if ctx == "x" else [])
    assert res["hit@3"] == 0.5 and res["coverage"] == 0.5


def test_split_is_by_conversation_and_seeded() -> None:
    recs = [{"conversation_id": str(i)} for i in range(50)]
    a_train, a_test = split_conversations(recs, 0.2, seed=3)
    b_train, b_test = split_conversations(recs, 0.2, seed=3)
    assert a_test == b_test and len(a_test) == 10
    assert not {r["conversation_id"] for r in a_train} & {r["conversation_id"] for r in a_test}


@pytest.mark.skipif(not MEDQA.exists(), reason="shared real data not available")
def test_lexical_baselines_beat_chance_on_real_medqa() -> None:
    rows = [orjson.loads(line) for line in MEDQA.read_bytes().splitlines()[:400]]
    train, test = split_conversations(rows, 0.25, seed=0)
    from yuyue.models.replies.metrics import reply_pairs

    pairs = reply_pairs(test)
    tfidf = TfidfCharRetriever().fit([p.context for p in reply_pairs(train)], [""] * len(reply_pairs(train)))
    assert r10_at_1_and_mrr(pairs, tfidf.score_texts, seed=0)["r10@1"] > 0.3
