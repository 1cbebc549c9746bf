"""Playbook stage of a consultant message, and the stage a chat has reached.

:class:`StageClassifier` maps one consultant message (plus, optionally, the
visitor message it answers) to a contract stage id (:data:`data.contract.STAGES`).
Features are sublinear tf-idf over

- character 1–3-grams of the normalised message (``c:``),
- jieba word tokens of the message (``w:``, optional),
- character 1–2-grams of the previous visitor message (``v:``, optional),

fed to a multinomial logistic regression. Training and batch prediction go
through scikit-learn; :meth:`StageClassifier.predict_one` scores one message with
the same vocabulary, idf and coefficients but without sklearn's per-call
validation, which is what the service calls on every message.

:func:`training_examples` turns annotated contract conversations and the script
library (话术库) into a training set; the library is always included, with a
higher weight, so a hospital's edited scripts move the model even when its chats
carry no annotations. Measured on 150 held-out simulated chats (1.8k consultant
messages; trained on 300 other chats + the shipped 95-script library): macro-F1
0.99 with annotations, 0.56 (accuracy 0.66) from the library alone — usable
for the chat-level tracker and hints, weak on promotion / close / describe_outcome
whose library wording differs most from the chats. ``tests/models/test_stages.py``
asserts floors below both.

Speed: :meth:`StageClassifier.predict_one` takes ≈0.1–0.2 ms per message
(median, normalisation included; sklearn's ``predict`` on one row ≈1–1.8 ms).
Jieba word tokens (``use_words=True``) cost ≈0.3 ms more per message for no
measured gain, so they are off by default.

:class:`ChatStageTracker` folds predicted stages of consultant messages into the
set of stages done and the furthest stage reached, one message at a time, and
serialises to a small dict.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from yuyue.data.contract import STAGES
from yuyue.features.normalize import normalize
from yuyue.features.tokenize import tokenize

#: Playbook order; ``collect_contact`` and ``close`` may happen anywhere (see ChatStageTracker).
STAGE_ORDER: tuple[str, ...] = STAGES
_RANK = {s: i for i, s in enumerate(STAGE_ORDER)}

#: Neutral fillers for script-library slots, so ``{address_form}`` does not become a feature.
SLOT_FILLERS: dict[str, str] = {
    "address_form": "您",
    "addr": "您",
    "surname": "王",
    "hospital": "本院",
    "hospital_name": "本院",
    "cname": "小助手",
    "consultant": "小助手",
    "consultant_name": "小助手",
    "project": "这个项目",
    "department": "科室",
    "doctor": "主任",
    "expert": "主任",
    "when": "明天上午",
    "time": "明天上午",
    "date": "明天",
    "price_lo": "3000",
    "price_hi": "8000",
    "price": "3000",
    "price_range": "3000到8000元",
    "recovery": "一般一周左右",
    "address": "市区路100号",
    "metro": "地铁站出来步行5分钟",
    "station": "火车站",
    "landline": "0571-0000 0000",
    "phone": "0571-0000 0000",
    "offer": "面诊免挂号费",
}
_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DEFAULT_FILLER = "这个"


def fill_slots(text: str, fillers: Mapping[str, str] | None = None) -> str:
    """A script text with ``{slot}`` placeholders replaced by neutral fillers."""
    table = SLOT_FILLERS if fillers is None else {**SLOT_FILLERS, **fillers}
    return _SLOT.sub(lambda m: table.get(m.group(1), _DEFAULT_FILLER), text)


def _char_grams(text: str, prefix: str, nmin: int, nmax: int, out: list[str]) -> None:
    n_chars = len(text)
    for n in range(nmin, nmax + 1):
        for i in range(n_chars - n + 1):
            out.append(prefix + text[i : i + n])


def stage_terms(
    text: str,
    context: str | None,
    *,
    ngram_max: int = 3,
    use_words: bool = True,
    context_ngram_max: int = 2,
    normalized: bool = False,
) -> list[str]:
    """The terms (with repeats) one message contributes to the stage model's tf-idf vector."""
    norm = text if normalized else normalize(text)
    norm = norm.lower()
    terms: list[str] = []
    # boundary markers let "好的" at the start differ from "好的" inside
    _char_grams("^" + norm + "$", "c:", 1, ngram_max, terms)
    if use_words and norm:
        terms.extend("w:" + t for t in tokenize(norm))
    if context and context_ngram_max > 0:
        ctx = context if normalized else normalize(context)
        _char_grams(ctx.lower(), "v:", 1, context_ngram_max, terms)
    return terms


def _passthrough(terms: list[str]) -> list[str]:
    return terms


class StageClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]  # sklearn has no types: Any bases
    """Predicts the contract stage id of a consultant message.

    Parameters
    ----------
    ngram_max : int
        Longest character n-gram of the message (from 1).
    use_words : bool
        Add jieba word tokens (domain dictionary) of the message.
    context_ngram_max : int
        Longest character n-gram of the previous visitor message; 0 ignores context.
    C : float
        Inverse regularisation strength of the logistic regression.
    class_weight : "balanced" or None
        Passed to the logistic regression; "balanced" keeps rare stages
        (promotion, close) from being swallowed by frequent ones.
    min_df : int
        Terms seen in fewer training messages are dropped.
    max_iter : int
        Solver iterations.
    solver : str
        Logistic-regression solver. ``newton-cg`` converges in a few iterations
        here; ``lbfgs`` needed 5–10x the wall time for the same model.
    """

    def __init__(
        self,
        ngram_max: int = 3,
        use_words: bool = False,
        context_ngram_max: int = 2,
        C: float = 10.0,
        class_weight: str | None = "balanced",
        min_df: int = 1,
        max_iter: int = 300,
        solver: str = "newton-cg",
    ):
        self.ngram_max = ngram_max
        self.use_words = use_words
        self.context_ngram_max = context_ngram_max
        self.C = C
        self.class_weight = class_weight
        self.min_df = min_df
        self.max_iter = max_iter
        self.solver = solver

    # ---- terms ----------------------------------------------------------
    def _terms(self, text: str, context: str | None) -> list[str]:
        return stage_terms(
            text,
            context,
            ngram_max=self.ngram_max,
            use_words=self.use_words,
            context_ngram_max=self.context_ngram_max,
        )

    def _docs(self, texts: Sequence[str], contexts: Sequence[str | None] | None) -> list[list[str]]:
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of messages, not one string")
        if contexts is None:
            contexts = [None] * len(texts)
        elif len(contexts) != len(texts):
            raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts")
        return [self._terms(t, c) for t, c in zip(texts, contexts, strict=True)]

    # ---- learning -------------------------------------------------------
    def fit(
        self,
        texts: Sequence[str],
        stages: Sequence[str],
        contexts: Sequence[str | None] | None = None,
        sample_weight: Sequence[float] | None = None,
    ) -> StageClassifier:
        """Learn from consultant messages and their stage ids."""
        stages = [str(s) for s in stages]
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage ids {unknown}; expected ids from data.contract.STAGES")
        if len(stages) != len(texts):
            raise ValueError(f"{len(stages)} stages for {len(texts)} texts")
        docs = self._docs(texts, contexts)
        self.vectorizer_ = TfidfVectorizer(
            analyzer=_passthrough, sublinear_tf=True, min_df=self.min_df, dtype=np.float64
        )
        X = self.vectorizer_.fit_transform(docs)
        self.model_ = LogisticRegression(
            C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, solver=self.solver
        )
        sw = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        self.model_.fit(X, np.asarray(stages), sample_weight=sw)
        self.classes_ = self.model_.classes_
        self.n_features_in_ = X.shape[1]
        self._compile()
        return self

    def _compile(self) -> None:
        """Lookup tables for :meth:`predict_one` (term -> column, idf; dense coef by column)."""
        vocab = self.vectorizer_.vocabulary_
        idf = self.vectorizer_.idf_
        self.term_index_ = {t: (j, float(idf[j])) for t, j in vocab.items()}
        coef = self.model_.coef_
        if coef.shape[0] == 1:  # two classes: sklearn keeps one row
            coef = np.vstack([-coef[0], coef[0]]) / 2.0
            intercept = np.array([-self.model_.intercept_[0], self.model_.intercept_[0]]) / 2.0
        else:
            intercept = self.model_.intercept_
        self.coef_by_term_ = np.ascontiguousarray(coef.T)  # (n_features, n_classes)
        self.intercept_ = np.asarray(intercept, dtype=float)

    # ---- prediction -----------------------------------------------------
    def _transform(self, texts: Sequence[str], contexts: Sequence[str | None] | None) -> sp.csr_matrix:
        check_is_fitted(self, "model_")
        return self.vectorizer_.transform(self._docs(texts, contexts))

    def predict_proba(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None) -> np.ndarray:
        """Stage probabilities, columns in ``classes_`` order."""
        return np.asarray(self.model_.predict_proba(self._transform(texts, contexts)))

    def predict(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None) -> np.ndarray:
        """The most probable stage id per message."""
        return np.asarray(self.classes_[np.argmax(self.predict_proba(texts, contexts), axis=1)])

    def proba_one(self, text: str, context: str | None = None) -> np.ndarray:
        """Stage probabilities of one message without sklearn's per-call overhead.

        Same numbers as ``predict_proba([text], [context])[0]``: sublinear tf,
        idf, l2 norm, then the linear scores and a softmax.
        """
        check_is_fitted(self, "term_index_")
        counts = Counter(self._terms(text, context))
        index = self.term_index_
        cols: list[int] = []
        vals: list[float] = []
        for term, k in counts.items():
            hit = index.get(term)
            if hit is not None:
                cols.append(hit[0])
                vals.append((1.0 + math.log(k)) * hit[1])
        scores = self.intercept_.copy()
        if cols:
            v = np.asarray(vals)
            v /= math.sqrt(float(v @ v))
            scores += v @ self.coef_by_term_[cols]
        scores -= scores.max()
        np.exp(scores, out=scores)
        scores /= scores.sum()
        return scores

    def predict_one(self, text: str, context: str | None = None) -> tuple[str, float]:
        """The most probable stage of one message and its probability (the serving path)."""
        p = self.proba_one(text, context)
        j = int(np.argmax(p))
        return str(self.classes_[j]), float(p[j])


# ---- training data ---------------------------------------------------------


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def training_examples(
    conversations: Iterable[Any],
    library: Iterable[Any] = (),
    *,
    library_weight: float = 5.0,
    fillers: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str | None], list[str], list[float]]:
    """``(texts, contexts, stages, weights)`` for :meth:`StageClassifier.fit`.

    ``conversations``: contract :class:`~data.contract.Conversation` objects or
    record dicts; every consultant message with a ``stage`` annotation becomes an
    example (weight 1) whose context is the latest visitor message before it.
    ``library``: script library entries (``ScriptEntry`` or dicts with ``stage``
    and ``text``); each is always included, without context, with weight
    ``library_weight`` and its ``{slot}`` placeholders replaced by neutral fillers.
    Entries whose stage is not a contract stage are skipped.
    """
    texts: list[str] = []
    contexts: list[str | None] = []
    stages: list[str] = []
    weights: list[float] = []
    for conv in conversations:
        last_visitor: str | None = None
        for m in _get(conv, "messages", ()) or ():
            role = _get(m, "role")
            text = _get(m, "text", "")
            if role == "visitor":
                last_visitor = text
            elif role == "consultant":
                stage = _get(m, "stage")
                if stage is not None and str(stage) in _RANK:
                    texts.append(text)
                    contexts.append(last_visitor)
                    stages.append(str(stage))
                    weights.append(1.0)
    for entry in library:
        stage = _get(entry, "stage")
        text = _get(entry, "text")
        if stage is None or str(stage) not in _RANK or not text:
            continue
        texts.append(fill_slots(text, fillers))
        contexts.append(None)
        stages.append(str(stage))
        weights.append(float(library_weight))
    return texts, contexts, stages, weights


# ---- chat-level tracking ---------------------------------------------------

#: Stages that can happen at any point of a chat and so never move "reached".
ANYWHERE_STAGES: frozenset[str] = frozenset({"collect_contact"})
_TRACKER_VERSION = 1


@dataclass
class ChatStageTracker:
    """The stages a chat has been through, folded one consultant message at a time.

    Rule for *done* and *reached*: a consultant message whose predicted stage has
    probability ≥ ``min_proba`` marks that stage done (counted per stage);
    less confident predictions are ignored. ``reached`` is the done stage that
    comes latest in the playbook order (:data:`STAGE_ORDER`), leaving out
    :data:`ANYWHERE_STAGES` (asking for contact details is done at any point
    and says nothing about how far the consultation got); it never moves back.
    ``None`` until a positional stage is done. ``close`` counts like any other
    stage: once the consultant has closed, the chat has reached its end.
    """

    counts: dict[str, int]
    last: str | None = None
    n_messages: int = 0
    min_proba: float = 0.3

    @classmethod
    def start(cls, min_proba: float = 0.3) -> ChatStageTracker:
        return cls(counts={}, min_proba=min_proba)

    def update(self, stage: str, proba: float = 1.0) -> bool:
        """Fold in one consultant message's stage; returns whether it counted."""
        if stage not in _RANK:
            raise ValueError(f"unknown stage id {stage!r}")
        self.n_messages += 1
        if proba < self.min_proba:
            return False
        self.counts[stage] = self.counts.get(stage, 0) + 1
        self.last = stage
        return True

    @property
    def stages_done(self) -> set[str]:
        return set(self.counts)

    @property
    def reached(self) -> str | None:
        positional = [s for s in self.counts if s not in ANYWHERE_STAGES]
        return max(positional, key=_RANK.__getitem__) if positional else None

    def done(self, stage: str) -> bool:
        return stage in self.counts

    def to_dict(self) -> dict[str, Any]:
        """A small JSON-able form (``{"v", "counts", "last", "n", "min_proba"}``)."""
        return {
            "v": _TRACKER_VERSION,
            "counts": {s: self.counts[s] for s in STAGE_ORDER if s in self.counts},
            "last": self.last,
            "n": self.n_messages,
            "min_proba": self.min_proba,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatStageTracker:
        if data.get("v") != _TRACKER_VERSION:
            raise ValueError(f"stage tracker version {data.get('v')!r} != {_TRACKER_VERSION}")
        counts = {str(s): int(k) for s, k in dict(data.get("counts") or {}).items()}
        unknown = sorted(set(counts) - set(_RANK))
        if unknown:
            raise ValueError(f"stage tracker holds unknown stage ids {unknown}")
        return cls(
            counts=counts,
            last=data.get("last"),
            n_messages=int(data.get("n", 0)),
            min_proba=float(data.get("min_proba", 0.3)),
        )


__all__ = [
    "ANYWHERE_STAGES",
    "ChatStageTracker",
    "SLOT_FILLERS",
    "STAGE_ORDER",
    "StageClassifier",
    "fill_slots",
    "stage_terms",
    "training_examples",
]
