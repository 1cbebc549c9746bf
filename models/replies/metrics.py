"""Quality measures of reply suggestion.

- R10@1 and MRR: the true next consultant reply ranked among itself and 9 replies drawn at random
  from other conversations (the Ubuntu-corpus protocol); a scorer sees the context and the 10
  candidate texts and returns one score per candidate.
- hit@3: whether any of the top-3 suggestions is near the reply the consultant actually sent
  (char-bigram Jaccard ≥ 0.5, the pool's near-duplicate measure).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from yuyue.data.contract import Conversation
from yuyue.models.replies.pool import bigram_jaccard

Scorer = Callable[[str, Sequence[str]], Sequence[float] | np.ndarray]  # a score per candidate


@dataclass(frozen=True)
class ReplyPair:
    """A context and the consultant reply that followed it, with the chat it came from."""

    conversation_id: str
    context: str
    reply: str


def r10_at_1_and_mrr(
    pairs: Sequence[ReplyPair | tuple[str, str, str]],
    scorer: Scorer,
    seed: int = 0,
    n_candidates: int = 10,
) -> dict[str, float]:
    """R10@1 and MRR of ``scorer`` over ``pairs`` (``(conversation_id, context, reply)``).

    Distractors are replies of other conversations that differ from the true one. Ties count
    against the true reply (it must score strictly higher to be ranked above a distractor), so a
    constant scorer gets R10@1 = 0 rather than a lucky 1.
    """
    items = [p if isinstance(p, ReplyPair) else ReplyPair(*p) for p in pairs]
    if len(items) < 2:
        raise ValueError("need at least two pairs from different conversations")
    rng = random.Random(seed)
    hits, rr = 0, 0.0
    for i, p in enumerate(items):
        distractors: list[str] = []
        tries = 0
        while len(distractors) < n_candidates - 1 and tries < 50 * n_candidates:
            tries += 1
            j = rng.randrange(len(items))
            q = items[j]
            if j == i or q.conversation_id == p.conversation_id or q.reply == p.reply:
                continue
            distractors.append(q.reply)
        scores = np.asarray(scorer(p.context, [p.reply, *distractors]), dtype=float)
        rank = 1 + int(np.sum(scores[1:] >= scores[0]))
        hits += rank == 1
        rr += 1.0 / rank
    n = len(items)
    return {"r10@1": hits / n, "mrr": rr / n, "n": float(n)}


def hit_at_3(
    examples: Iterable[tuple[Any, str]],
    suggest: Callable[[Any], Sequence[str]],
    threshold: float = 0.5,
    k: int = 3,
) -> dict[str, float]:
    """Share of ``(context, actual_reply)`` whose top-``k`` suggestions hold one near the actual reply.

    ``suggest`` maps a context to suggestion texts; also reported: how often it suggested anything.
    """
    n = hit = answered = 0
    for context, actual in examples:
        n += 1
        texts = list(suggest(context))[:k]
        answered += bool(texts)
        hit += any(bigram_jaccard(t, actual) >= threshold for t in texts)
    return {"hit@3": hit / n if n else 0.0, "coverage": answered / n if n else 0.0, "n": float(n)}


def split_conversations(
    records: Sequence[Conversation | dict[str, Any]], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Any], list[Any]]:
    """A seeded conversation-level train/test split (no chat contributes to both sides)."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_test = int(round(len(records) * test_fraction))
    test = set(order[:n_test])
    train = [r for i, r in enumerate(records) if i not in test]
    return train, [records[i] for i in sorted(test)]


def reply_pairs(records: Iterable[Conversation | dict[str, Any]], max_context: int = 6) -> list[ReplyPair]:
    """(context, next consultant reply) pairs of ``records``, context as :func:`context_text` builds it.

    Only replies that follow at least one visitor message and differ from the previous consultant
    message count (the first of a run of consultant messages answers the visitor).
    """
    from yuyue.models.replies.pool import iter_reply_examples
    from yuyue.models.replies.retrieve import context_text

    out = []
    for ex in iter_reply_examples(records, max_context=max_context):
        if not ex.context or ex.context[-1][0] != "visitor":
            continue
        out.append(ReplyPair(ex.conversation_id, context_text(ex.context), ex.reply))
    return out


def evaluate_lexical_baselines(
    records: Sequence[Conversation | dict[str, Any]], seed: int = 0, test_fraction: float = 0.2
) -> dict[str, dict[str, float]]:
    """R10@1 / MRR of BM25 (jieba) and char n-gram TF-IDF, fitted on the train split, on the test split.

    Each baseline scores a candidate by its lexical similarity to the context with statistics
    (idf) learned from the training contexts and replies.
    """
    from yuyue.models.replies.retrieve import Bm25Retriever, TfidfCharRetriever

    train, test = split_conversations(records, test_fraction, seed)
    train_pairs, test_pairs = reply_pairs(train), reply_pairs(test)
    corpus = [p.context for p in train_pairs] + [p.reply for p in train_pairs]
    ids = [str(i) for i in range(len(corpus))]
    bm25 = Bm25Retriever().fit(corpus, ids)
    tfidf = TfidfCharRetriever().fit(corpus, ids)
    return {
        "bm25_jieba": r10_at_1_and_mrr(test_pairs, bm25.score_texts, seed),
        "tfidf_char": r10_at_1_and_mrr(test_pairs, tfidf.score_texts, seed),
    }


__all__ = [
    "ReplyPair",
    "Scorer",
    "evaluate_lexical_baselines",
    "hit_at_3",
    "r10_at_1_and_mrr",
    "reply_pairs",
    "split_conversations",
]
