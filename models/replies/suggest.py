"""ReplySuggester: a few good next replies for the consultant's console (clicked or edited, never sent).

For the chat so far: the trigger decides whether to suggest at all (sensitive matters: nothing;
emergencies: only the fixed safety reply). Otherwise mined replies come from BM25 retrieval of
similar past contexts, scripts from their text similarity to the context plus the stages the
retrieved replies (or the caller's stage prediction) point to. Candidates are ranked (relevance,
booking prior, stage prior), filled with the chat's facts and the hospital's details, checked by the
compliance guard, and the best ``k`` mutually different ones are returned; nothing when none is
relevant enough.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from models.replies.guard import ComplianceGuard
from models.replies.pool import PoolEntry, ReplyExample, ReplyPool
from models.replies.rank import RankWeights, candidate_score, diverse_top_k
from models.replies.retrieve import Bm25Retriever, TfidfCharRetriever, context_text
from models.replies.scripts import fill_slots
from models.replies.trigger import Trigger

_SLOT = re.compile(r"\{\w*\}")
_PUNCT_RUN = re.compile(r"[,，、]\s*([。！？!?,，])")
_LEADING_PUNCT = re.compile(r"^[,，、\s]+")
_MASKED = re.compile(r"\*{2,}")  # a mined reply that held personal data is never offered


@dataclass(frozen=True)
class Suggestion:
    """One reply offered to the consultant."""

    id: str
    text: str
    source: str  # 'mined' | 'script' | 'safety'
    score: float
    stage: str | None = None


@dataclass
class _Candidate:
    entry: PoolEntry
    relevance: float
    score: float = 0.0
    text: str = ""


def hospital_slots(settings: Any) -> dict[str, str]:
    """Slot values from the hospital settings (``config.Settings``)."""
    return {
        "hospital": getattr(settings, "hospital_name", "") or "",
        "address": getattr(settings, "hospital_address", "") or "",
        "phone": getattr(settings, "hospital_phone", "") or "",
    }


@dataclass
class ReplySuggester:
    """Retrieval + ranking + guard over a :class:`ReplyPool`; fit on (context, reply id) pairs."""

    pool: ReplyPool
    retriever: Bm25Retriever = field(default_factory=Bm25Retriever)
    guard: ComplianceGuard | None = None
    trigger: Trigger | None = None
    hospital: Mapping[str, str] = field(default_factory=dict)
    weights: RankWeights = field(default_factory=RankWeights)
    min_score: float = 0.2
    n_candidates: int = 30
    allow_unreviewed: bool = True
    max_jaccard: float = 0.5

    def __post_init__(self) -> None:
        if self.guard is None:
            self.guard = ComplianceGuard.default()
        if self.trigger is None:
            self.trigger = Trigger.default()

    # ---- fitting ---------------------------------------------------------------------------------
    def fit(self, contexts: Sequence[str], reply_ids: Sequence[str]) -> ReplySuggester:
        """Index past contexts (see :func:`context_text`) by the pool id of the reply that followed."""
        self.retriever.fit(contexts, reply_ids)
        self._fit_scripts()
        return self

    def fit_examples(
        self, examples: Sequence[ReplyExample], assignments: Sequence[str | None]
    ) -> ReplySuggester:
        """Fit from :func:`build_pool`'s examples and assignments (replies that open a turn only)."""
        contexts, ids = [], []
        for ex, rid in zip(examples, assignments, strict=True):
            if rid is None or not ex.context or ex.context[-1][0] != "visitor":
                continue
            contexts.append(context_text(ex.context))
            ids.append(rid)
        return self.fit(contexts, ids)

    def _fit_scripts(self) -> None:
        scripts = [e for e in self.pool if e.source == "script"]
        self.script_index_: TfidfCharRetriever | None = None
        if scripts:
            texts = [_SLOT.sub(" ", e.text) for e in scripts]
            self.script_index_ = TfidfCharRetriever(ngram_range=(2, 3)).fit(texts, [e.id for e in scripts])

    # ---- suggesting ------------------------------------------------------------------------------
    def suggest(
        self, context_messages: Sequence[tuple[str, str]], facts: Mapping[str, Any] | None = None, k: int = 3
    ) -> list[Suggestion]:
        """Up to ``k`` suggestions for the consultant's next message; ``[]`` when nothing fits.

        ``context_messages`` are ``(role, text)`` oldest first. ``facts`` may hold ``address_form``,
        ``project`` / ``projects``, ``doctor``, ``department`` and the predicted next stage as
        ``next_stage`` or ``next_stage_probs`` (stage → probability).
        """
        facts = facts or {}
        visitor_now = _latest_visitor_text(context_messages)
        if visitor_now:
            verdict = self.trigger.check(visitor_now)  # type: ignore[union-attr]
            if verdict.action == "none":
                return []
            if verdict.action == "emergency":
                reply = self.trigger.safety_reply  # type: ignore[union-attr]
                return [Suggestion("safety", reply, "safety", 1.0, None)]
        context = context_text(context_messages)
        if not context.strip():
            return []
        stage_probs = _stage_probs(facts)
        candidates = self._mined_candidates(context, facts)
        candidates += self._script_candidates(context, facts, candidates, stage_probs)
        base = self.pool.base_rate
        for c in candidates:
            c.score = candidate_score(c.relevance, c.entry, base, stage_probs, self.weights)
            if c.entry.status == "allowed":
                c.score += self.weights.reviewed
        candidates.sort(key=lambda c: (-c.score, c.entry.id))
        values = self._slot_values(facts)
        filled = (c for c in candidates if self._fill(c, values))
        top = diverse_top_k(filled, k, text_of=lambda c: c.text, max_jaccard=self.max_jaccard)
        return [Suggestion(c.entry.id, c.text, c.entry.source, round(c.score, 4), c.entry.stage) for c in top]

    def _usable(self, entry: PoolEntry | None, facts: Mapping[str, Any]) -> bool:
        if entry is None:
            return False
        if entry.status == "blocked" or (entry.status == "unreviewed" and not self.allow_unreviewed):
            return False
        dept = facts.get("department")
        if dept and entry.department and entry.department != dept:
            return False
        project = _project(facts)
        return not (entry.project and entry.project != project)

    def _mined_candidates(self, context: str, facts: Mapping[str, Any]) -> list[_Candidate]:
        out = []
        for rid, s in self.retriever.query(context, self.n_candidates):
            if s < self.min_score:
                break
            entry = self.pool.get(rid)
            if self._usable(entry, facts) and not _MASKED.search(entry.text):  # type: ignore[union-attr]
                out.append(_Candidate(entry, s))  # type: ignore[arg-type]
        return out

    def _script_candidates(
        self,
        context: str,
        facts: Mapping[str, Any],
        mined: list[_Candidate],
        stage_probs: Mapping[str, float] | None,
    ) -> list[_Candidate]:
        index = getattr(self, "script_index_", None)
        if index is None:
            return []
        # stages the retrieved replies point to, weighted by relevance; the caller's prediction wins
        support: dict[str, float] = {}
        if stage_probs:
            support = dict(stage_probs)
        else:
            total = sum(c.relevance for c in mined if c.entry.stage)
            for c in mined:
                if c.entry.stage and total > 0:
                    support[c.entry.stage] = support.get(c.entry.stage, 0.0) + c.relevance / total
        sims = dict(index.query(context, len(index.reply_ids_)))
        w = self.weights.script_stage
        out = []
        for sid in index.reply_ids_:
            entry = self.pool.get(sid)
            if not self._usable(entry, facts):
                continue
            relevance = (1 - w) * sims.get(sid, 0.0) + w * support.get(entry.stage or "", 0.0)  # type: ignore[union-attr]
            if relevance >= self.min_score:
                out.append(_Candidate(entry, relevance))  # type: ignore[arg-type]
        return out

    def _slot_values(self, facts: Mapping[str, Any]) -> dict[str, str | None]:
        values: dict[str, str | None] = {k: v for k, v in self.hospital.items() if v}
        values["address_form"] = facts.get("address_form")
        values["project"] = _project(facts)
        values["doctor"] = facts.get("doctor") or self.hospital.get("doctor")
        return values

    def _fill(self, c: _Candidate, values: Mapping[str, str | None]) -> bool:
        template = c.entry.text
        if c.entry.source == "mined" and not values.get("address_form"):
            # mined replies were written to a named visitor: 好的{address_form}， reads better as 好的，
            template = _PUNCT_RUN.sub(r"\1", _LEADING_PUNCT.sub("", template.replace("{address_form}", "")))
        try:
            text = fill_slots(template, values)
        except ValueError:
            return False
        if not text or _SLOT.search(text):
            return False
        if not self.guard.check(text).allowed:  # type: ignore[union-attr]
            return False
        c.text = text
        return True

    # ---- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the pool and the retrieval index (masked tokens, never raw text) to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.pool.save(directory / "pool.jsonl")
        r = self.retriever
        inv = {i: t for t, i in r.vocabulary_.items()}
        docs: list[list[str]] = [[] for _ in range(len(r.reply_ids_))]
        tf = r.counts_.tocoo()
        for t, d, n in zip(tf.row, tf.col, tf.data, strict=True):
            docs[d].extend([inv[int(t)]] * int(n))
        with open(directory / "index.jsonl", "wb") as fh:
            header = {"k1": r.k1, "b": r.b, "n_candidates": r.n_candidates}
            fh.write(orjson.dumps(header) + b"\n")
            for toks, rid in zip(docs, r.reply_ids_, strict=True):
                fh.write(orjson.dumps({"r": rid, "t": toks}) + b"\n")
        cfg = {
            "min_score": self.min_score,
            "n_candidates": self.n_candidates,
            "allow_unreviewed": self.allow_unreviewed,
        }
        (directory / "suggester.json").write_bytes(orjson.dumps(cfg))
        return directory

    @classmethod
    def load(cls, directory: str | Path, **kwargs: Any) -> ReplySuggester:
        """A suggester saved by :meth:`save`; ``kwargs`` (guard, trigger, hospital …) override."""
        directory = Path(directory)
        pool = ReplyPool.load(directory / "pool.jsonl")
        with open(directory / "index.jsonl", "rb") as fh:
            header = orjson.loads(fh.readline())
            rows = [orjson.loads(ln) for ln in fh if ln.strip()]
        retriever = Bm25Retriever(**header).fit_tokens([r["t"] for r in rows], [r["r"] for r in rows])
        cfg = orjson.loads((directory / "suggester.json").read_bytes())
        cfg.update(kwargs)
        sug = cls(pool=pool, retriever=retriever, **cfg)
        sug._fit_scripts()
        return sug


def _latest_visitor_text(messages: Sequence[tuple[str, str]]) -> str:
    texts: list[str] = []
    for role, text in reversed(messages):
        if role == "visitor":
            texts.append(text)
        elif role == "consultant":
            break
    return "\n".join(reversed(texts))


def _project(facts: Mapping[str, Any]) -> str | None:
    if facts.get("project"):
        return str(facts["project"])
    projects = facts.get("projects") or ()
    return str(projects[0]) if projects else None


def _stage_probs(facts: Mapping[str, Any]) -> dict[str, float] | None:
    probs = facts.get("next_stage_probs")
    if probs:
        return {str(k): float(v) for k, v in dict(probs).items()}
    if facts.get("next_stage"):
        return {str(facts["next_stage"]): 1.0}
    return None


__all__ = ["ReplySuggester", "Suggestion", "hospital_slots"]
