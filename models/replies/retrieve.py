"""Lexical retrieval of replies: chat context → similar past contexts → the replies that followed them.

Two baselines over an inverted index (a terms × documents sparse matrix, so a query touches only
the postings of its own terms):

- :class:`Bm25Retriever`: BM25 over jieba word tokens (personal data replaced by type placeholders);
- :class:`TfidfCharRetriever`: cosine similarity of char n-gram TF-IDF vectors.

Both follow the estimator contract: ``fit(contexts, reply_ids)`` learns, ``query(context, k)``
returns up to ``k`` ``(reply_id, score)`` pairs, best first, each reply scored by its best
matching past context. Scores lie in [0, 1]: BM25 is divided by the most the query's terms could
score, so a threshold means the same for short and long queries. ``score_texts`` scores arbitrary
texts against a query with the fitted statistics (used for R10@1, where candidates are unseen).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from yuyue.features.normalize import normalize
from yuyue.features.pii import find_pii
from yuyue.features.state import redact
from yuyue.features.tokenize import tokenize

ContextMessages = Sequence[tuple[str, str]]


def context_text(messages: ContextMessages, max_visitor: int = 3) -> str:
    """The retrieval context of a chat: the visitor's latest messages plus the consultant's message before them.

    ``messages`` are ``(role, text)`` oldest first; the text is what the next consultant reply answers.
    """
    visitor: list[str] = []
    consultant: str | None = None
    for role, text in reversed(messages):
        if role == "visitor":
            if consultant is not None:
                break
            if len(visitor) < max_visitor:
                visitor.append(text)
        elif role == "consultant":
            if consultant is None:
                consultant = text
            if visitor:
                break
    parts = ([consultant] if consultant else []) + list(reversed(visitor))
    return "\n".join(parts)


def text_tokens(text: str) -> list[str]:
    """Word tokens for retrieval: normalised, personal data as placeholders, jieba with the domain dictionary."""
    norm = normalize(text)
    return tokenize(redact(norm, find_pii(norm)))


@lru_cache(maxsize=20000)
def _cached_tokens(tokenizer: Callable[[str], list[str]], text: str) -> tuple[str, ...]:
    # candidates repeat across queries when ranking (R10@1 draws distractors from the same replies)
    return tuple(tokenizer(text))


def _accumulate(
    postings: sp.csr_matrix, term_ids: np.ndarray, weights: np.ndarray, n_docs: int
) -> np.ndarray:
    """Sum over query terms of weight × that term's row of ``postings`` (terms × docs)."""
    if len(term_ids) == 0:
        return np.zeros(n_docs)
    indptr, indices, data = postings.indptr, postings.indices, postings.data
    starts, ends = indptr[term_ids], indptr[term_ids + 1]
    lens = ends - starts
    if lens.sum() == 0:
        return np.zeros(n_docs)
    # positions of all the terms' postings, without a Python loop over terms
    pos = np.arange(lens.sum()) + np.repeat(starts - (np.cumsum(lens) - lens), lens)
    idx = indices[pos]
    vals = data[pos] * np.repeat(weights, lens)
    return np.bincount(idx, weights=vals, minlength=n_docs)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest positive ``scores``, best first (ties in index order)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    top = top[np.argsort(-scores[top], kind="stable")]
    return top[scores[top] > 0]


class _InvertedIndexRetriever:
    """Shared query logic: column scores from postings, then best score per reply id.

    The postings' columns are the fitted contexts, or (``doc_of_`` set) the distinct ones:
    context ``i`` is column ``doc_of_[i]``, and ``col_replies_`` lists each column's reply ids.
    """

    n_candidates: int
    postings_: sp.csr_matrix
    reply_ids_: np.ndarray
    doc_of_: np.ndarray | None = None
    # with doc_of_: column j's reply ids are col_replies_[col_reply_ptr_[j] : col_reply_ptr_[j + 1]]
    col_reply_ptr_: np.ndarray
    col_replies_: np.ndarray

    def _query_vector(self, context: str) -> tuple[np.ndarray, np.ndarray, float]:
        raise NotImplementedError

    def column_scores(self, context: str) -> np.ndarray:
        """Score of every postings column against ``context`` (in [0, 1])."""
        term_ids, weights, norm = self._query_vector(context)
        scores = _accumulate(self.postings_, term_ids, weights, self.postings_.shape[1])
        if norm > 0:
            scores /= norm
        np.minimum(scores, 1.0, out=scores)
        return scores

    def doc_scores(self, context: str) -> np.ndarray:
        """Score of every fitted context against ``context`` (in [0, 1])."""
        scores = self.column_scores(context)
        return scores if self.doc_of_ is None else scores[self.doc_of_]

    def _replies_of(self, col: int) -> Iterable[str]:
        if self.doc_of_ is None:
            return (self.reply_ids_[col],)
        ptr = self.col_reply_ptr_
        return self.col_replies_[ptr[col] : ptr[col + 1]]

    def query(self, context: str, k: int = 10) -> list[tuple[str, float]]:
        """Up to ``k`` reply ids with their best context score, best first."""
        return self.query_columns(self.column_scores(context), k)

    def query_columns(self, scores: np.ndarray, k: int = 10) -> list[tuple[str, float]]:
        """:meth:`query` from already computed :meth:`column_scores`."""
        best: dict[str, float] = {}
        for col in _top(scores, max(k, self.n_candidates)):
            s = float(scores[col])
            for rid in self._replies_of(int(col)):
                if rid not in best:
                    best[rid] = s
                    if len(best) == k:
                        return list(best.items())
        return list(best.items())


class Bm25Retriever(_InvertedIndexRetriever):
    """BM25 over word tokens of the context (Okapi BM25, Lucene idf)."""

    def __init__(
        self,
        k1: float = 1.2,
        b: float = 0.75,
        n_candidates: int = 100,
        tokenizer: Callable[[str], list[str]] = text_tokens,
    ):
        self.k1 = k1
        self.b = b
        self.n_candidates = n_candidates
        self.tokenizer = tokenizer

    def fit(self, contexts: Sequence[str], reply_ids: Sequence[str]) -> Bm25Retriever:
        return self.fit_tokens([self.tokenizer(c) for c in contexts], reply_ids)

    def fit_tokens(self, docs: Sequence[Sequence[str]], reply_ids: Sequence[str]) -> Bm25Retriever:
        """Fit from already tokenised contexts (what a saved model keeps instead of text).

        Contexts with the same tokens score the same, so each distinct bag of tokens is one
        postings column (templated openings repeat by the thousand); idf and the average length
        still count every context.
        """
        if len(docs) != len(reply_ids):
            raise ValueError("contexts and reply_ids differ in length")
        vocab: dict[str, int] = {}
        col_of: dict[tuple[int, ...], int] = {}
        doc_of = np.empty(len(docs), dtype=np.int64)
        rows, cols = [], []
        for d, toks in enumerate(docs):
            ids = sorted(vocab.setdefault(t, len(vocab)) for t in toks)
            key = tuple(ids)
            col = col_of.get(key)
            if col is None:
                col = col_of[key] = len(col_of)
                rows.extend(ids)
                cols.extend([col] * len(ids))
            doc_of[d] = col
        n_docs, n_cols = len(docs), len(col_of)
        tf = sp.csr_matrix(
            (np.ones(len(rows)), (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
            shape=(len(vocab), n_cols),
        )
        tf.sum_duplicates()
        mult = np.bincount(doc_of, minlength=n_cols).astype(np.float64)  # contexts per column
        col_len = np.asarray(tf.sum(axis=0)).ravel()
        avgdl = float(col_len @ mult / n_docs) if n_docs else 1.0
        df = np.asarray(
            sp.csr_matrix((mult[tf.indices], tf.indices, tf.indptr), shape=tf.shape).sum(axis=1)
        ).ravel()
        self.idf_ = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        self.max_idf_ = float(np.log1p((n_docs + 0.5) / 0.5))
        self.counts_ = tf.copy()  # raw term counts of each column (what a saved model keeps)
        # BM25 weight of each (term, column); idf is applied at query time
        denom = tf.data + self.k1 * (1 - self.b + self.b * col_len[tf.indices] / (avgdl or 1.0))
        tf.data = tf.data * (self.k1 + 1) / denom
        self.postings_ = tf
        self.vocabulary_ = vocab
        self.avgdl_ = avgdl
        self.reply_ids_ = np.asarray(reply_ids, dtype=object)
        self.doc_of_ = doc_of
        # each column's distinct reply ids, in the order their contexts came
        _, reply_code = np.unique(self.reply_ids_.astype(str), return_inverse=True)
        _, first = np.unique(doc_of * (reply_code.max(initial=0) + 1) + reply_code, return_index=True)
        first = first[np.lexsort((first, doc_of[first]))]  # by column, then by first occurrence
        self.col_reply_ptr_ = np.concatenate([[0], np.cumsum(np.bincount(doc_of[first], minlength=n_cols))])
        self.col_replies_ = self.reply_ids_[first]
        return self

    def _query_vector(self, context: str) -> tuple[np.ndarray, np.ndarray, float]:
        tokens = set(self.tokenizer(context))
        ids = {self.vocabulary_[t] for t in tokens if t in self.vocabulary_}
        term_ids = np.fromiter(ids, dtype=np.int64, count=len(ids))
        weights = self.idf_[term_ids]
        # words never seen in training count at the highest idf: a query made of them matches nothing
        unseen = (len(tokens) - len(ids)) * self.max_idf_
        return term_ids, weights, float((weights.sum() + unseen) * (self.k1 + 1))

    def score_texts(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """BM25 of each text (as a document) for ``query``, with the fitted idf and average length."""
        q = {t for t in self.tokenizer(query) if t in self.vocabulary_}
        out = np.zeros(len(texts))
        for i, text in enumerate(texts):
            toks = _cached_tokens(self.tokenizer, text)
            counts: dict[str, int] = {}
            for t in toks:
                counts[t] = counts.get(t, 0) + 1
            norm = self.k1 * (1 - self.b + self.b * len(toks) / (self.avgdl_ or 1.0))
            out[i] = sum(
                self.idf_[self.vocabulary_[t]] * counts[t] * (self.k1 + 1) / (counts[t] + norm)
                for t in q
                if t in counts
            )
        return out


class TfidfCharRetriever(_InvertedIndexRetriever):
    """Cosine similarity of char n-gram TF-IDF vectors (sublinear tf, l2-normalised)."""

    def __init__(self, ngram_range: tuple[int, int] = (1, 3), n_candidates: int = 100, min_df: int = 1):
        self.ngram_range = ngram_range
        self.n_candidates = n_candidates
        self.min_df = min_df

    def _vectorizer(self) -> TfidfVectorizer:
        return TfidfVectorizer(
            analyzer="char",
            ngram_range=self.ngram_range,
            sublinear_tf=True,
            min_df=self.min_df,
            preprocessor=_char_preprocess,
            dtype=np.float32,
        )

    def fit(self, contexts: Sequence[str], reply_ids: Sequence[str]) -> TfidfCharRetriever:
        if len(contexts) != len(reply_ids):
            raise ValueError("contexts and reply_ids differ in length")
        self.vectorizer_ = self._vectorizer()
        X = self.vectorizer_.fit_transform(contexts)
        self.postings_ = X.T.tocsr()
        self.reply_ids_ = np.asarray(reply_ids, dtype=object)
        return self

    def _query_vector(self, context: str) -> tuple[np.ndarray, np.ndarray, float]:
        # what vectorizer_.transform([context]) computes (counts of known n-grams, 1 + log tf,
        # × idf, l2 norm), without its per-call validation and sparse-matrix assembly
        v = self.vectorizer_
        if not (v.sublinear_tf and v.use_idf and v.norm == "l2"):
            q = v.transform([context])
            return q.indices.astype(np.int64), q.data.astype(np.float64), 1.0
        vocab = v.vocabulary_
        counts: dict[int, int] = {}
        for gram in self._analyzer()(context):
            j = vocab.get(gram)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0), 1.0
        ids = np.fromiter(counts, dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        weights = (np.log(tf) + 1.0) * v.idf_[ids]
        return ids, weights / np.sqrt(weights @ weights), 1.0

    def _analyzer(self) -> Callable[[str], list[str]]:
        analyzer: Callable[[str], list[str]] | None = getattr(self, "_analyzer_cache", None)
        if analyzer is None:
            analyzer = self._analyzer_cache = self.vectorizer_.build_analyzer()
        return analyzer

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_analyzer_cache", None)  # derived; rebuilt on first use
        return state

    def score_texts(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each text to ``query`` in the fitted TF-IDF space."""
        q = self.vectorizer_.transform([query])
        X = self.vectorizer_.transform(list(texts))
        return np.asarray((X @ q.T).todense()).ravel()


def _char_preprocess(text: str) -> str:
    norm = normalize(text)
    return redact(norm, find_pii(norm)).lower()


__all__ = ["Bm25Retriever", "TfidfCharRetriever", "context_text", "text_tokens"]
