"""Ranking of reply candidates: relevance, booking prior and stage prior, then a diverse top k."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from yuyue.models.replies.pool import PoolEntry, char_bigrams, jaccard

T = TypeVar("T")


@dataclass(frozen=True)
class RankWeights:
    """How much each signal moves a candidate's score (relevance counts 1)."""

    booking: float = 0.5  # × (entry.booked_after − pool base rate): prefer replies followed by bookings
    stage: float = 0.2  # × probability of the entry's stage being next
    popularity: float = 0.02  # × log1p(count): a tie-breaker towards well-tried replies
    script_stage: float = 0.5  # share of a script's relevance that comes from stage support
    reviewed: float = 0.05  # bonus for entries a supervisor (or the script library) allowed
    feedback: float = 0.5  # the most the desk's feedback moves a score, up or down (feedback_shift)
    feedback_strength: float = 10.0  # pseudo-answers at the desk's overall rate: a few clicks move little


def candidate_score(
    relevance: float,
    entry: PoolEntry,
    base_rate: float,
    stage_probs: Mapping[str, float] | None = None,
    weights: RankWeights = RankWeights(),
) -> float:
    """The ranking score of one candidate given its relevance to the chat (in [0, 1])."""
    score = relevance + weights.booking * (entry.booked_after - base_rate)
    if stage_probs and entry.stage:
        score += weights.stage * float(stage_probs.get(entry.stage, 0.0))
    if entry.count:
        score += weights.popularity * math.log1p(entry.count) / 10.0
    return score


def feedback_shift(
    accepted: float, answered: float, p0: float, weights: RankWeights = RankWeights()
) -> float:
    """How much the consultants' feedback moves an entry's score, in ``[-feedback, +feedback]``.

    ``accepted`` of ``answered`` suggestions of the entry were used (edited ones count half); ``p0`` is
    the desk's rate over all answered suggestions. The entry's smoothed rate
    ``(accepted + a·p0) / (answered + a)`` (``a = feedback_strength``) above ``p0`` lifts it, below
    sinks it, scaled so that only a rate of 1 (or 0) after many answers reaches the bound."""
    if answered <= 0 or weights.feedback == 0:
        return 0.0
    p0 = min(max(p0, 0.05), 0.95)
    a = weights.feedback_strength
    rate = (min(accepted, answered) + a * p0) / (answered + a)
    span = (1.0 - p0) if rate >= p0 else p0
    return weights.feedback * (rate - p0) / span


def diverse_top_k(
    items: Iterable[T],
    k: int,
    text_of: Callable[[T], str],
    max_jaccard: float = 0.5,
    intent_of: Callable[[T], str | None] | None = None,
) -> list[T]:
    """The first ``k`` of ``items`` (already best first) such that no two texts have
    char-bigram Jaccard ≥ ``max_jaccard`` and, given ``intent_of``, no two share an intent
    (``None``: an intent of its own)."""
    chosen: list[T] = []
    grams: list[frozenset[str]] = []
    intents: set[str] = set()
    for item in items:
        intent = intent_of(item) if intent_of is not None else None
        if intent is not None and intent in intents:
            continue
        g = char_bigrams(text_of(item))
        if any(jaccard(g, h) >= max_jaccard for h in grams):
            continue
        if intent is not None:
            intents.add(intent)
        chosen.append(item)
        grams.append(g)
        if len(chosen) == k:
            break
    return chosen


__all__ = ["RankWeights", "candidate_score", "diverse_top_k", "feedback_shift"]
