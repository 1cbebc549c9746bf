"""ReplySuggester: a few good next replies for the consultant's console (clicked or edited, never sent).

For the chat so far: the trigger decides whether to suggest at all (sensitive matters: nothing;
emergencies: only the fixed safety reply). Otherwise mined replies come from BM25 retrieval of
similar past contexts, scripts from their text similarity to the context plus the stages the
retrieved replies (or the caller's stage prediction) point to. Candidates are ranked (relevance,
booking prior, stage prior), filled with the chat's facts and the hospital's details, checked by the
compliance guard (its rules, then its classifier, as consultant messages are), and the best ``k``
mutually different ones are returned; nothing when none is
relevant enough.

With a neural model (:meth:`ReplySuggester.fit_hybrid`, see :mod:`models.replies.neural`) mined
candidates come from BM25 and from the dual encoder's nearest pool entries, and their relevance is the
hybrid ranker's probability (neural, char TF-IDF, BM25 and booking-prior features with weights learned
on validation chats); the booking prior then counts only through the hybrid. Without one (small data,
or ``YUYUE_NEURAL_RANKER=0``) ranking is lexical as before.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from yuyue.data.contract import STAGES
from yuyue.models.replies.guard import CombinedGuard, ComplianceGuard, default_classifier, default_combined
from yuyue.models.replies.pool import (
    PoolEntry,
    ReplyExample,
    ReplyPool,
    canonical_key,
    char_bigrams,
    jaccard,
    slot_names,
    whole_sentences,
)
from yuyue.models.replies.rank import RankWeights, candidate_score, diverse_top_k
from yuyue.models.replies.retrieve import Bm25Retriever, TfidfCharRetriever, context_text
from yuyue.models.replies.scripts import fill_slots
from yuyue.models.replies.trigger import Trigger

_SLOT = re.compile(r"\{\w*\}")
_PUNCT_RUN = re.compile(r"[,，、]\s*([。！？!?,，])")
_LEADING_PUNCT = re.compile(r"^[,，、\s]+")
_MASKED = re.compile(r"\*{2,}")  # a mined reply that held personal data is never offered

log = logging.getLogger(__name__)

# words that tie a reply to one department: a reply naming another department's and none of the
# chat's own is not offered (整形 words in a 妇科 chat)
DEPARTMENT_TERMS: dict[str, tuple[str, ...]] = {
    "整形美容": (
        "整形",
        "双眼皮",
        "隆鼻",
        "玻尿酸",
        "吸脂",
        "假体",
        "医美",
        "隆胸",
        "瘦脸",
        "割眼皮",
        "热玛吉",
        "鼻综合",
    ),
    "男科": ("男科", "前列腺", "阳痿", "早泄", "包皮", "勃起", "阴囊", "性功能", "精液", "睾丸"),
    "妇科": ("妇科", "月经", "白带", "宫颈", "阴道", "人流", "盆腔", "卵巢", "子宫", "妇检", "备孕", "经期"),
    "口腔": (
        "口腔",
        "种植",
        "矫正",
        "正畸",
        "根管",
        "牙齿",
        "洗牙",
        "补牙",
        "拔牙",
        "种牙",
        "看牙",
        "牙龈",
        "牙科",
    ),
    "皮肤科": ("皮肤科", "痘痘", "湿疹", "白癜风", "脱发", "痤疮", "皮损", "瘙痒"),
    "眼科": ("眼科", "近视", "白内障", "斜视", "散光", "眼底", "视力"),
    "肝病": ("肝病", "乙肝", "肝功能", "转氨酶", "肝炎"),
}
_GREETING = re.compile(
    r"欢迎咨询|欢迎来到|很高兴为您服务|这里是.{0,16}(?:在线|咨询)|有什么可以帮您|请问有什么|^(?:您好|你好|hi|哈喽)[，,！!。.~～\s]*$"
    r"|^(?:您好|你好|哈喽)[，,！!]?(?:我是|这里是|欢迎)",
    re.IGNORECASE,
)
_ASK_NAME = re.compile(r"称呼|贵姓|叫您什么|怎么叫您")
# what the visitor's last message asks → the concern / stage that answers it and words an answer uses
_ASKS: tuple[tuple[str, re.Pattern[str], str | None, re.Pattern[str]], ...] = (
    (
        "price",
        re.compile(r"多少钱|价格|费用|贵不贵|贵多少|收费|价位|分期"),
        "price",
        re.compile(r"价格|费用|收费|价目|报价|多少钱|分期"),
    ),
    (
        "address",
        re.compile(r"地址|在哪|怎么走|怎么过去|怎么去|停车|坐地铁|路线|位置"),
        None,
        re.compile(r"地址|位于|地铁|导航|路线|停车|\{address\}"),
    ),
    ("pain", re.compile(r"疼不疼|疼吗|痛不痛|痛吗|怕疼|会疼|会痛"), "pain", re.compile(r"疼|痛|麻醉")),
    (
        "privacy",
        re.compile(r"保密|隐私|别人知道|家里人知道|家里知道|匿名|被人看到|单独"),
        "privacy",
        re.compile(r"保密|隐私|单独|不会透露"),
    ),
    (
        "safety",
        re.compile(r"副作用|风险|安全|危险|伤牙|后遗症|影响"),
        "safety",
        re.compile(r"风险|安全|副作用|评估"),
    ),
    ("recovery", re.compile(r"恢复|请假|多久能好|上班|休息几天"), "recovery", re.compile(r"恢复|休息|请假")),
    (
        "time",
        re.compile(r"几点|下班|周末|周六|周日|营业|挂号|有医生吗"),
        "time",
        re.compile(r"时间|上班|下班|周末|预约"),
    ),
    (
        "effect",
        re.compile(r"效果|维持|能好吗|治好|反弹|有用吗|能不能好"),
        "effect",
        re.compile(r"效果|因人而异|评估"),
    ),
)
_CONFIRMED = re.compile(r"确认|登记好|约好了|预约好|帮您约|给您约|已经帮您|记下了")
_VISIT_TIME = re.compile(
    r"(?:(?:今天|明天|后天|大后天|这周|本周|下周|周|星期|礼拜)[一二三四五六日天末]?|\d{1,2}月\d{1,2}[日号]|\d{1,2}号)"
    r"(?:的)?(?:早上|上午|中午|下午|晚上|傍晚)?(?:[一二三四五六七八九十两\d]{1,3}点(?:半|\d{1,2}分?)?)?"
)
REPEAT_LIMIT = 2  # the same suggestion at most this many times in one chat
_ASK_TIME = re.compile(r"哪天|什么时间|什么时候方便|上午方便还是下午|几点方便|时间段可以约")
_STAGE_ORDER = {s: i for i, s in enumerate(STAGES)}
# the playbook between the opening and the booking, for the fallback's "where is the chat" guess
_MIDDLE = (
    "probe_status",
    "probe_expectation",
    "explain_treatment",
    "describe_outcome",
    "recommend_expert",
    "book",
    "collect_contact",
)


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


class _SuggestionGuard:
    """The consultant-message check's guard (rules, then the learned classifier) over a rule set, so a
    suggestion is never a text that check would flag; verdicts are remembered per text (filled
    replies repeat: on bench_scoring's replay 477 distinct texts made 5,523 checks)."""

    MAX_TEXTS = 4096

    def __init__(self, combined: CombinedGuard) -> None:
        self.combined = combined
        self.seen: dict[str, bool] = {}

    def allowed(self, text: str) -> bool:
        verdict = self.seen.get(text)
        if verdict is None:
            if len(self.seen) >= self.MAX_TEXTS:
                self.seen.clear()
            verdict = self.seen[text] = self.combined.check(text)["allowed"]
        return verdict


@lru_cache(maxsize=8)
def _suggestion_guard(guard: ComplianceGuard) -> _SuggestionGuard:
    """Built once per rule set (the classifier is trained once per process, about 2 s, on first use);
    kept out of the suggester so a saved bundle does not carry it."""
    combined = (
        default_combined()
        if guard is ComplianceGuard.default()
        else CombinedGuard(guard, default_classifier())
    )
    return _SuggestionGuard(combined)


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
    neural: Any = None  # models.replies.neural.NeuralReplyRanker (imported lazily: torch is heavy)
    hybrid: Any = None  # models.replies.neural.HybridRanker
    tfidf: Any = None  # models.replies.neural.CharTfidf
    neighbours: Any = None  # models.replies.neural.ContextNeighbours (the knn_* features)
    neural_status: str = "not trained"
    # review decisions made after training (serving.reviews.ReviewBook): ``refresh()`` once per
    # suggestion, ``review(entry)`` -> (status, edited text or None) | None, ``serve_unreviewed``;
    # optionally the desk's feedback: ``feedback_shift(reply id, weights)`` -> score shift and
    # ``variants(reply id)`` -> ids of pool entries consultants made of it by editing
    reviews: Any = None
    # the hospital's knowledge (serving.knowledge.KnowledgeHook): ``facts(facts, messages)`` -> the facts
    # with ``doctor`` on duty, ``slots`` (price range, activity, directions …) and ``boost`` (reply id -> score)
    knowledge: Any = None

    def __post_init__(self) -> None:
        if self.guard is None:
            self.guard = ComplianceGuard.default()
        if self.trigger is None:
            self.trigger = Trigger.default()

    @property
    def uses_hybrid(self) -> bool:
        return self.neural is not None and self.hybrid is not None and self.tfidf is not None

    # ---- fitting ---------------------------------------------------------------------------------
    def fit(self, contexts: Sequence[str], reply_ids: Sequence[str]) -> ReplySuggester:
        """Index past contexts (see :func:`context_text`) by the pool id of the reply that followed."""
        self.retriever.fit(contexts, reply_ids)
        self._rid_codes: np.ndarray | None = (
            None  # BM25's reply ids changed: the hybrid's lookup is rebuilt when needed
        )
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

    def fit_hybrid(
        self,
        examples: Sequence[ReplyExample],
        assignments: Sequence[str | None],
        *,
        config: Any = None,
        valid_fraction: float = 0.15,
        max_valid_pairs: int = 1000,
        teacher: Any = None,
        min_pairs: int | None = None,
        seed: int = 0,
        echo: Callable[[str], None] | None = None,
        trainer: Any = None,
    ) -> ReplySuggester:
        """Fit BM25 (as :meth:`fit_examples`) and, given enough pairs, the neural + hybrid ranker.

        Chats are split (``valid_fraction`` of them for validation): the dual encoder and the char
        TF-IDF learn from the rest, BM25 indexes the rest while the hybrid's weights are fitted on (up
        to ``max_valid_pairs`` of) the validation chats' pairs with 9 sampled negatives each; then BM25 indexes all pairs. With fewer
        than ``min_pairs`` (default :data:`models.replies.neural.MIN_PAIRS`) pairs only BM25 is fitted;
        :attr:`neural_status` says what happened.
        """
        from yuyue.models.replies import neural as nr

        rows = [
            (ex.conversation_id, context_text(ex.context), ex.reply, rid)
            for ex, rid in zip(examples, assignments, strict=True)
            if rid is not None and ex.context and ex.context[-1][0] == "visitor"
        ]
        need = nr.MIN_PAIRS if min_pairs is None else min_pairs
        groups = [r[0] for r in rows]
        if len(rows) < need or len(set(groups)) < 10:
            self.neural = self.hybrid = self.tfidf = None
            self.neural_status = f"skipped: {len(rows)} reply pairs (need {need})"
            return self.fit([r[1] for r in rows], [r[3] for r in rows])
        fit_idx, val_idx = nr.split_pairs(groups, valid_fraction, seed)
        tokens = [self.retriever.tokenizer(r[1]) for r in rows]  # jieba once: BM25 is fitted twice
        fit_rows = [rows[i] for i in fit_idx]
        val_rows = [rows[i] for i in val_idx]
        if len(val_rows) > max_valid_pairs:  # 4 weights: a thousand queries × 10 candidates is plenty
            val_rows = random.Random(seed).sample(val_rows, max_valid_pairs)
        self._fit_tokens([tokens[i] for i in fit_idx], [r[3] for r in fit_rows])
        cfg = config if config is not None else nr.config_for("full")
        if cfg.reply_space == "teacher":
            # the teacher embeds the pool's (masked, de-duplicated) entries, which serving indexes too
            replies = [self.pool.get(r[3]).text for r in fit_rows]  # type: ignore[union-attr]
        else:
            replies = [r[2] for r in fit_rows]
        self.neural = nr.NeuralReplyRanker(cfg).fit(
            [r[1] for r in fit_rows], replies, teacher=teacher, echo=echo, trainer=trainer
        )
        self.tfidf = nr.CharTfidf().fit([r[1] for r in fit_rows] + [r[2] for r in fit_rows])
        t0 = time.perf_counter()
        # in e5's space (a linear map exists): also the replies that followed the nearest past contexts;
        # while the hybrid learns, the neighbours are the fitting chats' only (as BM25's index is)
        knn = cfg.knn and self.neural.linear is not None
        self.neighbours = self._neighbours(fit_rows, seed) if knn else None
        self._index_pool()
        features: tuple[str, ...] = (
            nr.KNN_FEATURES if knn else nr.LINEAR_FEATURES if self.neural.linear is not None else nr.FEATURES
        )
        if not self.neural.has_encoder:  # the linear map embeds contexts: "neural" would repeat "linear"
            features = tuple(f for f in features if f != "neural")
        self.hybrid = nr.HybridRanker(features=features)
        X, y = nr.sampled_training_set(
            [r[1] for r in val_rows],
            [r[2] for r in val_rows],
            self.features,
            seed=seed,
            groups=[r[0] for r in val_rows],
        )
        if cfg.listwise:
            self.hybrid.fit_listwise(X, y)
        else:
            self.hybrid.fit(X, y)
        self._fit_tokens(tokens, [r[3] for r in rows])
        if knn:
            self.neighbours = self._neighbours(rows, seed)
        self._index_pool()
        if echo:
            echo(
                f"hybrid ranker: {len(features)} features fitted on {len(val_rows)} validation pairs "
                f"({time.perf_counter() - t0:.0f}s)"
            )
        info = self.neural.train_info_
        encoder = (
            f"{info['epochs_done']} epochs, {info['seconds']}s"
            if self.neural.has_encoder
            else "no encoder: the linear context map"
        )
        self.neural_status = (
            f"trained on {info['pairs']} pairs ({encoder}); hybrid ({len(self.hybrid.features)} features) "
            f"fitted on {len(val_rows)} validation pairs"
        )
        return self

    def _neighbours(self, rows: Sequence[tuple[str, str, str, str]], seed: int) -> Any:
        from yuyue.models.replies import neural as nr

        return nr.ContextNeighbours.build(
            [r[1] for r in rows], [r[3] for r in rows], self.tfidf, self.neural.linear, seed=seed
        )

    def _fit_tokens(self, tokens: Sequence[Sequence[str]], reply_ids: Sequence[str]) -> None:
        self.retriever.fit_tokens(tokens, reply_ids)
        self._rid_codes = None
        self._fit_scripts()

    def _index_pool(self) -> None:
        """Neural embeddings of the pool (cached once) and what maps a text to its pool entry."""
        entries = [e for e in self.pool if e.status != "blocked"]
        self._entry_ids = [e.id for e in entries]
        self._entry_grams = [char_bigrams(e.text) for e in entries]
        self._entry_by_key = {canonical_key(e.text): e.id for e in entries}
        self._entry_pos = {r: i for i, r in enumerate(self._entry_ids)}
        if self.neural is not None:
            self.neural.index(self._entry_ids, [e.text for e in entries])
            emb = self.neural._index_emb
            centre = emb.mean(0) if len(emb) else np.zeros(self.neural.dim, dtype=np.float32)
            self._centroid = centre / max(float(np.linalg.norm(centre)), 1e-9)
        if self.tfidf is not None:  # the candidates' char TF-IDF rows, computed once
            self._entry_tf = self.tfidf.vectorizer_.transform([e.text for e in entries])
        if self.neighbours is not None:  # each past context's reply as a row of the pool's embeddings
            self._nb_rows = np.asarray(
                [self._entry_pos.get(r, -1) for r in self.neighbours.reply_ids], dtype=np.int64
            )
        r = self.retriever
        # the retriever's distinct (postings column, reply) pairs grouped by reply, so each reply's best
        # column is one reduceat
        cols = np.repeat(np.arange(len(r.col_reply_ptr_) - 1), np.diff(r.col_reply_ptr_))
        codes: dict[str, int] = {}
        self._rid_codes = np.fromiter(
            (codes.setdefault(str(i), len(codes)) for i in r.col_replies_), dtype=np.int64
        )
        self._rid_index = codes
        order = np.argsort(self._rid_codes, kind="stable")
        self._pair_cols = cols[order]
        self._rid_starts = np.searchsorted(self._rid_codes[order], np.arange(len(codes)))

    def _bm25_by_reply(self, context: str) -> tuple[np.ndarray, dict[str, int]]:
        """Best BM25 score of each reply id's past contexts (indexed by ``_rid_index``)."""
        codes: np.ndarray | None = getattr(self, "_rid_codes", None)
        if codes is None or len(codes) != len(self.retriever.col_replies_):
            self._index_pool()
        scores = self._column_scores(context)
        if not len(self._pair_cols):
            return np.zeros(0), self._rid_index
        return np.maximum.reduceat(scores[self._pair_cols], self._rid_starts), self._rid_index

    def _column_scores(self, context: str) -> np.ndarray:
        """BM25's column scores of the context, remembered for the last context (asked up to 3 times)."""
        last = getattr(self, "_last_cols", None)
        if last is None or last[0] != context or last[1] is not self.retriever.postings_:
            last = self._last_cols = (
                context,
                self.retriever.postings_,
                self.retriever.column_scores(context),
            )
        return last[2]

    def _entry_for(self, text: str, emb: np.ndarray | None) -> PoolEntry | None:
        """The pool entry a reply text is (same canonical text, or nearest by embedding with
        char-bigram Jaccard ≥ 0.5); ``None`` for a reply the pool does not hold."""
        rid = self._entry_by_key.get(canonical_key(text))
        if rid is None and emb is not None and self.neural is not None and self.neural._index_emb is not None:
            j = int(np.argmax(self.neural._index_emb @ emb))
            if jaccard(char_bigrams(text), self._entry_grams[j]) >= 0.5:
                rid = self._entry_ids[j]
        return self.pool.get(rid) if rid else None

    def features(self, context: str, texts: Sequence[str]) -> np.ndarray:
        """The hybrid's features (named in ``self.hybrid.features``) of reply texts for a context."""
        texts = list(texts)
        R = self.neural.encode_replies(texts)
        bm25, codes = self._bm25_by_reply(context)
        base = self.pool.base_rate
        bm = np.zeros(len(texts))
        prior = np.zeros(len(texts))
        for i, t in enumerate(texts):
            entry = self._entry_for(t, R[i])
            if entry is not None:
                c = codes.get(entry.id)
                bm[i] = bm25[c] if c is not None else 0.0
                prior[i] = entry.booked_after - base
        last = (
            (lambda: self.tfidf.score_texts(_last_part(context), texts))
            if self._wants("tfidf_last")
            else None
        )
        return self._feature_matrix(context, R, self.tfidf.score_texts(context, texts), bm, prior, last)

    def _wants(self, feature: str) -> bool:
        return feature in self.hybrid.features

    def _feature_matrix(
        self,
        context: str,
        R: np.ndarray,
        tfidf: np.ndarray,
        bm25: np.ndarray,
        prior: np.ndarray,
        tfidf_last: Callable[[], np.ndarray] | None = None,
        q: Any = None,
    ) -> np.ndarray:
        """Columns in the hybrid's order from the candidates' reply embeddings ``R`` and the rest
        (``q``: the context's char TF-IDF n-grams and weights, when the caller has them)."""
        cols = {"tfidf_reply": tfidf, "bm25_context": bm25, "booking_prior": prior}
        if self._wants("neural"):
            cols["neural"] = R @ self.neural.encode_context(context)
        if self._wants("linear"):
            cols["linear"] = R @ self.neural.encode_context_linear(context)
        if tfidf_last is not None:
            cols["tfidf_last"] = tfidf_last()
        if self._wants("generic"):
            cols["generic"] = R @ self._centroid
        if self.neighbours is not None and self._wants("knn_tfidf"):
            cols.update(self._knn_features(context, R, q))
        return np.column_stack([cols[n] for n in self.hybrid.features]).astype(np.float64)

    KNN_K = 5  # past contexts whose replies a candidate is compared with (BM25: its max over KNN_BM25)
    KNN_BM25 = 20
    KNN_TEMPERATURE = 0.05  # softmax temperature of the linear map's neighbours' cosines

    def _knn_features(self, context: str, R: np.ndarray, q: Any = None) -> dict[str, np.ndarray]:
        """How near each candidate (embedding row of ``R``) is, in e5's reply space, to the replies that
        followed the past contexts nearest to ``context``: by BM25, char TF-IDF and the linear map;
        a similarity-weighted mean over the nearest :data:`KNN_K` and the max."""
        emb = self.neural._index_emb
        zero = np.zeros(len(R))
        out = {}

        def weighted(rows: np.ndarray, w: np.ndarray, k: int, name: str) -> None:
            ok = rows >= 0
            rows, w = rows[ok], w[ok]
            if not len(rows):
                out[name], out[name + "_max"] = zero, zero
                return
            S = R @ emb[rows].T
            out[name] = S[:, :k] @ w[:k] / max(float(w[:k].sum()), 1e-9)
            out[name + "_max"] = S.max(1)

        nb = self.retriever.query_columns(self._column_scores(context), self.KNN_BM25)
        rows = np.asarray([self._entry_pos.get(rid, -1) for rid, _ in nb], dtype=np.int64)
        weighted(rows, np.asarray([s for _, s in nb], dtype=np.float64), self.KNN_K, "knn_bm25")
        idx, sims = self.neighbours.by_tfidf(self.tfidf.query(context) if q is None else q, self.KNN_K)
        weighted(self._nb_rows[idx], np.maximum(sims, 0.0) + 1e-6, self.KNN_K, "knn_tfidf")
        idx, sims = self.neighbours.by_linear(self.neural.encode_context_linear(context), self.KNN_K)
        if len(idx):
            weighted(
                self._nb_rows[idx], np.exp((sims - sims[0]) / self.KNN_TEMPERATURE), self.KNN_K, "knn_linear"
            )
        else:
            out["knn_linear"], out["knn_linear_max"] = zero, zero
        return out

    def score_texts(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Score of each reply text for the context ``query``: the hybrid's when there is one, else BM25."""
        if self.uses_hybrid:
            decision: np.ndarray = self.hybrid.decision(self.features(query, texts))
            return decision
        return self.retriever.score_texts(query, list(texts))

    def _fit_scripts(self) -> None:
        scripts = [e for e in self.pool if e.source == "script"]
        self.script_index_: TfidfCharRetriever | None = None
        if scripts:
            texts = [_SLOT.sub(" ", e.text) for e in scripts]
            self.script_index_ = TfidfCharRetriever(ngram_range=(2, 3)).fit(texts, [e.id for e in scripts])

    # ---- suggesting ------------------------------------------------------------------------------
    def suggest(
        self,
        context_messages: Sequence[tuple[str, str]],
        facts: Mapping[str, Any] | None = None,
        k: int = 3,
        *,
        latest_visitor: str | None = None,
    ) -> list[Suggestion]:
        """Up to ``k`` suggestions for the consultant's next message; ``[]`` when nothing fits.

        ``context_messages`` are ``(role, text)`` oldest first (:meth:`YuyueModel.on_message` keeps
        the last ``CONTEXT_CHARS`` characters of each). ``facts`` may hold ``address_form``,
        ``project`` / ``projects``, ``doctor``, ``department`` and the predicted next stage as
        ``next_stage`` or ``next_stage_probs`` (stage → probability). ``latest_visitor``: the text the
        safety trigger checks (default: the visitor's messages at the end of ``context_messages``),
        for a caller that keeps only the end of long messages as context.
        """
        facts = facts or {}
        if self.reviews is not None:
            self.reviews.refresh()
        visitor_now = _latest_visitor_text(context_messages) if latest_visitor is None else latest_visitor
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
        if self.knowledge is not None:  # the hospital's doctors on duty, prices, activities
            facts = self.knowledge.facts(facts, context_messages)
        stage_probs = _stage_probs(facts)
        # the question of the visitor's newest message (not one already followed by another message)
        last = context_messages[-1] if context_messages else ("", "")
        ask = _asked(last[1] if last[0] == "visitor" else (visitor_now or "").rsplit("\n", 1)[-1])
        if ask is not None and ask[2] is not None and facts.get("concerns_open") is not None:
            facts = {**facts, "concerns_open": [*facts["concerns_open"], ask[2]]}
        candidates = self._mined_candidates(context, facts)
        candidates += self._script_candidates(context, facts, candidates, stage_probs)
        confirm = _needs_confirmation(facts, context_messages)
        # scripts that answer the visitor's question or confirm a booking are candidates however little
        # their wording overlaps the chat
        have = {c.entry.id for c in candidates}
        for e in self.pool:
            if e.source == "script" and e.id not in have and self._usable(e, facts):
                if (ask is not None and _answers(e, ask)) or (confirm and e.id.startswith("s-book_confirm")):
                    candidates.append(_Candidate(e, self.min_score))
        raw = candidates
        candidates = [c for c in candidates if _fits_chat(c.entry, facts)]
        candidates += self._edited_variants(candidates, facts)
        base = self.pool.base_rate
        # with the hybrid the booking prior is one of its learned features: not added a second time
        weights = replace(self.weights, booking=0.0) if self.uses_hybrid else self.weights
        for c in candidates:
            c.score = candidate_score(c.relevance, c.entry, base, stage_probs, weights)
            if self._status(c.entry) == "allowed":
                c.score += self.weights.reviewed
            c.score += self._feedback_shift(c.entry)
            c.score += float((facts.get("boost") or {}).get(c.entry.id, 0.0))
            if ask is not None and _answers(c.entry, ask):
                c.score += 1.0  # the visitor's question first, when anything answers it
            if confirm:
                if c.entry.id.startswith("s-book_confirm"):
                    c.score += 2.0  # a booking is confirmed (time, name) before anything else
                elif c.entry.stage in ("directions", "book", "collect_contact"):
                    c.score -= 0.6
        candidates.sort(key=lambda c: (-c.score, c.entry.id))
        values = self._slot_values(facts)
        values["visit_time"] = _visit_time(context_messages)
        filled = (c for c in candidates if self._fill(c, values))

        # fewer than k relevant ones: the stage's library scripts, then its generic mined replies, under
        # the same filters (see _fallback), so a consultant is not left with nothing to click
        def stages() -> list[str]:
            return self._fallback_stages(facts, stage_probs, raw, ask, confirm, context_messages)

        backup = self._fallback(stages, facts, {c.entry.id for c in raw}, values["visit_time"])
        backup = (c for c in backup if self._fill(c, values))
        top = diverse_top_k(
            itertools.chain(filled, backup),
            k,
            text_of=lambda c: c.text,
            max_jaccard=self.max_jaccard,
            intent_of=_intent,
        )
        return [Suggestion(c.entry.id, c.text, c.entry.source, round(c.score, 4), c.entry.stage) for c in top]

    # ---- fallback: the stage's scripts and generic replies when too few candidates are relevant ----
    def _fallback_stages(
        self,
        facts: Mapping[str, Any],
        stage_probs: Mapping[str, float] | None,
        raw: Sequence[_Candidate],
        ask: tuple[str, re.Pattern[str], str | None, re.Pattern[str]] | None,
        confirm: bool,
        messages: Sequence[tuple[str, str]],
    ) -> list[str]:
        """Stages to fill from, most fitting first: a booking to confirm, the visitor's question, the
        predicted next stage, the stages the retrieved replies point to, then the playbook's stages
        around where the chat is (by its progress: contact, time agreed, consultant turns)."""
        weight: dict[str, float] = {}

        def add(stage: str | None, w: float) -> None:
            if stage:
                weight[stage] = weight.get(stage, 0.0) + w

        if confirm:
            add("book", 3.0)
        if ask is not None:
            add("directions" if ask[0] == "address" else "resolve_concern" if ask[2] else None, 2.0)
        for stage, p in (stage_probs or {}).items():
            add(stage, float(p))
        total = sum(c.relevance for c in raw if c.entry.stage)
        for c in raw:
            if c.entry.stage and total > 0:
                add(c.entry.stage, c.relevance / total)
        for i, stage in enumerate(_progress_stages(facts, messages)):
            add(stage, 0.3 / (i + 1))
        return sorted(weight, key=lambda s: (-weight[s], _STAGE_ORDER.get(s, 99)))

    def _fallback(
        self,
        stages: Callable[[], list[str]],
        facts: Mapping[str, Any],
        seen: set[str],
        visit_time: str | None,
    ) -> Iterator[_Candidate]:
        """Fallback candidates stage by stage (computed only when the ranked ones run out): library
        scripts (the chat's department and project first, then generic ones), then mined replies of
        the stage (the department's own first, then generic ones, most used first). All pass
        ``_usable`` (department, project, review status) and ``_fits_chat`` (no late greeting, no
        asking the name once known, at most REPEAT_LIMIT times); concern scripts only for a concern
        the visitor raised."""
        open_concerns = facts.get("concerns_open")
        dept = facts.get("department")
        by_stage = self._entries_by_stage()
        time_known = bool(facts.get("visit_time_agreed") or visit_time)
        contact = bool(facts.get("contact_kinds"))
        for stage in stages():
            scripts, mined = by_stage.get(stage, ((), ()))
            # the chat's department and project first (the others are left out by _usable)
            ranked = sorted(scripts, key=lambda e: (e.department is None, e.project is None))
            own = [e for e in mined if dept and (e.department == dept or dept in (e.departments or ()))]
            generic = [e for e in mined if not e.department and not e.departments]
            for e in itertools.chain(ranked, own[: self.FALLBACK_MINED], generic[: self.FALLBACK_MINED]):
                if e.id in seen:
                    continue
                seen.add(e.id)
                if e.concern and open_concerns is not None and e.concern not in open_concerns:
                    continue
                if e.source == "mined" and (_MASKED.search(e.text) or _other_concern(e.text, open_concerns)):
                    continue
                if (time_known and _ASK_TIME.search(e.text)) or (contact and stage == "collect_contact"):
                    continue  # not asking for a time or a contact the visitor already gave
                if self._usable(e, facts) and _fits_chat(e, facts):
                    yield _Candidate(e, 0.0, score=0.0)  # after every ranked one: not relevant, only fitting

    FALLBACK_MINED = 12  # mined replies tried per stage and kind (own department, generic)

    def _entries_by_stage(self) -> dict[str, tuple[list[PoolEntry], list[PoolEntry]]]:
        """Per stage: its scripts and its mined replies (most used first); rebuilt when the pool changes."""
        cached = getattr(self, "_by_stage", None)
        if cached is None or cached[0] != len(self.pool):
            out: dict[str, tuple[list[PoolEntry], list[PoolEntry]]] = {}
            for e in self.pool:
                if e.stage and e.source in ("script", "mined"):
                    out.setdefault(e.stage, ([], []))[e.source == "mined"].append(e)
            for _, mined in out.values():
                mined.sort(key=lambda e: (-e.count, e.id))
            cached = self._by_stage = (len(self.pool), out)
        return cached[1]

    def _usable(self, entry: PoolEntry | None, facts: Mapping[str, Any]) -> bool:
        if entry is None:
            return False
        status = self._status(entry)
        allow_unreviewed = self.allow_unreviewed and (self.reviews is None or self.reviews.serve_unreviewed)
        if status == "blocked" or (status == "unreviewed" and not allow_unreviewed):
            return False
        dept = facts.get("department")
        if dept:
            if entry.department and entry.department != dept:
                return False
            named = _departments_named(entry.text)
            if named and dept not in named:
                return False
            # mined only in one or two other departments: not offered here unless this department is
            # one the pool has never seen (then only the term check above applies)
            if entry.departments and dept not in entry.departments and dept in self._pool_departments():
                return False
        project = _project(facts)
        return not (entry.project and entry.project != project)

    def _feedback_shift(self, entry: PoolEntry) -> float:
        """The desk's feedback on ``entry`` (``reviews.feedback_shift``, see rank.feedback_shift)."""
        shift = getattr(self.reviews, "feedback_shift", None)
        return float(shift(entry.id, self.weights)) if shift is not None else 0.0

    def _edited_variants(
        self, candidates: Sequence[_Candidate], facts: Mapping[str, Any]
    ) -> list[_Candidate]:
        """Replies consultants made of these candidates by editing them (``reviews.variants``), as
        relevant as the reply they edited; their feedback then decides which of the two ranks first."""
        variants = getattr(self.reviews, "variants", None)
        if variants is None:
            return []
        have = {c.entry.id for c in candidates}
        out = []
        for c in candidates:
            for rid in variants(c.entry.id):
                e = self.pool.get(rid)
                if e is not None and rid not in have and not _MASKED.search(e.text):
                    if self._usable(e, facts) and _fits_chat(e, facts):
                        have.add(rid)
                        out.append(_Candidate(e, c.relevance))
        return out

    def _status(self, entry: PoolEntry) -> str:
        """The entry's review status: a decision made since training (``reviews``) over the pool's."""
        decided = self.reviews.review(entry) if self.reviews is not None else None
        return decided[0] if decided is not None else entry.status

    def _pool_departments(self) -> frozenset[str]:
        seen = getattr(self, "_pool_depts", None)
        if seen is None or seen[0] != len(self.pool):
            depts = {d for e in self.pool for d in (e.departments or ())}
            depts |= {e.department for e in self.pool if e.department}
            seen = self._pool_depts = (len(self.pool), frozenset(depts))
        return seen[1]

    def _mined_candidates(self, context: str, facts: Mapping[str, Any]) -> list[_Candidate]:
        if self.uses_hybrid:
            return self._hybrid_candidates(context, facts)
        out = []
        for rid, s in self.retriever.query(context, self.n_candidates):
            if s < self.min_score:
                break
            entry = self.pool.get(rid)
            if self._usable(entry, facts) and not _MASKED.search(entry.text):  # type: ignore[union-attr]
                out.append(_Candidate(entry, s))  # type: ignore[arg-type]
        return out

    def _hybrid_candidates(self, context: str, facts: Mapping[str, Any]) -> list[_Candidate]:
        """BM25's and the dual encoder's best mined entries, relevance = the hybrid's probability."""
        if getattr(self, "_rid_codes", None) is None:
            self._index_pool()
        ids = [
            rid for rid, _ in self.retriever.query_columns(self._column_scores(context), self.n_candidates)
        ]
        ids += [rid for rid, _ in self.neural.query(context, 2 * self.n_candidates)]
        entries = []
        for rid in dict.fromkeys(ids):
            entry = self.pool.get(rid)
            if entry is not None and entry.source == "mined" and self._usable(entry, facts):
                if not _MASKED.search(entry.text):
                    entries.append(entry)
        if not entries:
            return []
        at = [self._entry_index(e.id) for e in entries]
        emb = self.neural._index_emb[at]
        bm25, codes = self._bm25_by_reply(context)
        base = self.pool.base_rate
        q = self.tfidf.query(context)
        qd = np.zeros(self._entry_tf.shape[1], dtype=np.float32)
        qd[q[0]] = q[1]
        E = self._entry_tf[at]
        last = (lambda: E @ self.tfidf.dense(_last_part(context))) if self._wants("tfidf_last") else None
        X = self._feature_matrix(
            context,
            emb,
            E @ qd,
            np.asarray([bm25[codes[e.id]] if e.id in codes else 0.0 for e in entries]),
            np.asarray([e.booked_after - base for e in entries]),
            last,
            q,
        )
        probs = self.hybrid.proba(X)
        return [_Candidate(e, float(p)) for e, p in zip(entries, probs, strict=True) if p >= self.min_score]

    def _entry_index(self, rid: str) -> int:
        return self._entry_pos[rid]

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
        # a concern script answers the concern the visitor raised, not another one
        open_concerns = facts.get("concerns_open")
        out = []
        for sid in index.reply_ids_:
            entry = self.pool.get(sid)
            if not self._usable(entry, facts):
                continue
            if open_concerns is not None and entry.concern and entry.concern not in open_concerns:  # type: ignore[union-attr]
                continue
            relevance = (1 - w) * sims.get(sid, 0.0) + w * support.get(entry.stage or "", 0.0)  # type: ignore[union-attr]
            if relevance >= self.min_score:
                out.append(_Candidate(entry, relevance))  # type: ignore[arg-type]
        return out

    def _slot_values(self, facts: Mapping[str, Any]) -> dict[str, str | None]:
        values: dict[str, str | None] = {k: v for k, v in self.hospital.items() if v}
        values.update({k: v for k, v in (facts.get("slots") or {}).items() if v})
        values["address_form"] = facts.get("address_form")
        values["project"] = _project(facts)
        values["doctor"] = facts.get("doctor") or self.hospital.get("doctor")
        values["consultant"] = facts.get("consultant") or self.hospital.get("consultant")
        return values

    def _fill(self, c: _Candidate, values: Mapping[str, str | None]) -> bool:
        decided = self.reviews.review(c.entry) if self.reviews is not None else None
        template = decided[1] if decided is not None and decided[1] else c.entry.text
        if c.entry.source == "mined":
            # pools mined before names were slotted: slot them now; never a half sentence
            template = whole_sentences(slot_names(template))
            if not template:
                return False
        if c.entry.source == "mined" and not values.get("address_form"):
            # mined replies were written to a named visitor: 好的{address_form}， reads better as 好的，
            template = _PUNCT_RUN.sub(r"\1", _LEADING_PUNCT.sub("", template.replace("{address_form}", "")))
        try:
            text = fill_slots(template, values)
        except ValueError:
            return False
        if not text or _SLOT.search(text):
            return False
        if not _suggestion_guard(self.guard).allowed(text):
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
        columns: list[list[str]] = [[] for _ in range(r.counts_.shape[1])]
        tf = r.counts_.tocoo()
        for t, c, n in zip(tf.row, tf.col, tf.data, strict=True):
            columns[c].extend([inv[int(t)]] * int(n))
        docs = [columns[c] for c in r.doc_of_] if r.doc_of_ is not None else columns
        with open(directory / "index.jsonl", "wb") as fh:
            header = {"k1": r.k1, "b": r.b, "n_candidates": r.n_candidates}
            fh.write(orjson.dumps(header) + b"\n")
            for toks, rid in zip(docs, r.reply_ids_, strict=True):
                fh.write(orjson.dumps({"r": rid, "t": toks}) + b"\n")
        cfg = {
            "min_score": self.min_score,
            "n_candidates": self.n_candidates,
            "allow_unreviewed": self.allow_unreviewed,
            "neural_status": self.neural_status,
        }
        (directory / "suggester.json").write_bytes(orjson.dumps(cfg))
        if self.uses_hybrid:
            self.neural.save(directory / "neural")
            hybrid = {"hybrid": self.hybrid.to_json(), "tfidf": self.tfidf.to_json()}
            (directory / "hybrid.json").write_bytes(orjson.dumps(hybrid))
            if self.neighbours is not None:
                self.neighbours.save(directory / "neighbours.npz")
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
        if (directory / "hybrid.json").exists() and (directory / "neural").is_dir():
            from yuyue.models.replies import neural as nr

            hybrid = orjson.loads((directory / "hybrid.json").read_bytes())
            cfg.setdefault("neural", nr.NeuralReplyRanker.load(directory / "neural"))
            cfg.setdefault("hybrid", nr.HybridRanker.from_json(hybrid["hybrid"]))
            cfg.setdefault("tfidf", nr.CharTfidf.from_json(hybrid["tfidf"]))
            if (directory / "neighbours.npz").exists():
                cfg.setdefault("neighbours", nr.ContextNeighbours.load(directory / "neighbours.npz"))
        sug = cls(pool=pool, retriever=retriever, **cfg)
        sug._fit_scripts()
        if sug.uses_hybrid:
            sug._index_pool()
        return sug


def _last_part(context: str) -> str:
    """The last line of a :func:`context_text` (the visitor's newest message, for a one-line message)."""
    return context.rsplit("\n", 1)[-1]


def _latest_visitor_text(messages: Sequence[tuple[str, str]]) -> str:
    texts: list[str] = []
    for role, text in reversed(messages):
        if role == "visitor":
            texts.append(text)
        elif role == "consultant":
            break
    return "\n".join(reversed(texts))


def _departments_named(text: str) -> set[str]:
    return {d for d, terms in DEPARTMENT_TERMS.items() if any(t in text for t in terms)}


def _is_greeting(entry: PoolEntry) -> bool:
    return entry.stage == "greet" or bool(_GREETING.search(entry.text))


def _fits_chat(entry: PoolEntry, facts: Mapping[str, Any]) -> bool:
    """Not an opening greeting once the chat is under way, not asking the form of address once it is
    known, not offered more than :data:`REPEAT_LIMIT` times in the chat."""
    if facts.get("consultant_spoke") and _is_greeting(entry):
        return False
    if (facts.get("address_form") or facts.get("surname")) and _ASK_NAME.search(entry.text):
        return False
    shown = facts.get("suggested") or {}
    return int(shown.get(entry.id, 0)) < REPEAT_LIMIT


def _progress_stages(facts: Mapping[str, Any], messages: Sequence[tuple[str, str]]) -> list[str]:
    """The playbook stages that fit the chat's progress, most fitting first (the fallback's last resort)."""
    if facts.get("booking_confirmed"):
        return ["directions", "close", "recommend_expert"]
    if facts.get("contact_kinds"):
        return ["book", "directions", "recommend_expert", "close"]
    if facts.get("visit_time_agreed"):
        return ["collect_contact", "book", "directions"]
    if not facts.get("consultant_spoke"):
        return ["greet", "probe_status", "explain_treatment", "recommend_expert"]
    # roughly one playbook step per consultant message: the current and next steps, then the earlier ones
    i = min(max(sum(1 for m in messages if m[0] == "consultant") - 1, 0), len(_MIDDLE) - 1)
    return [*_MIDDLE[i:], *reversed(_MIDDLE[:i])]


def _other_concern(text: str, open_concerns: Sequence[str] | None) -> bool:
    """Whether a (mined) reply speaks to a concern (price, pain …) the visitor has not raised."""
    if open_concerns is None:
        return False
    return any(c is not None and c not in open_concerns and words.search(text) for _, _, c, words in _ASKS)


def _needs_confirmation(facts: Mapping[str, Any], messages: Sequence[tuple[str, str]]) -> bool:
    """A time agreed (or named by the visitor) and a contact given, and the booking not confirmed yet."""
    if not facts.get("contact_kinds") or facts.get("booking_confirmed"):
        return False
    return (
        bool(facts.get("visit_time_agreed"))
        or _visit_time([m for m in messages if m[0] == "visitor"]) is not None
    )


def booking_confirmed(text: str) -> bool:
    """Whether a consultant message confirms a booking (确认 / 登记好 / 约好了 …)."""
    return bool(_CONFIRMED.search(text))


def _asked(text: str) -> tuple[str, re.Pattern[str], str | None, re.Pattern[str]] | None:
    for ask in _ASKS:
        if ask[1].search(text):
            return ask
    return None


def _answers(entry: PoolEntry, ask: tuple[str, re.Pattern[str], str | None, re.Pattern[str]]) -> bool:
    kind, _, concern, words = ask
    if _is_greeting(entry):
        return False
    if entry.source == "script":
        if kind == "address":
            return entry.stage == "directions" and bool(words.search(entry.text))
        return concern is not None and entry.concern == concern
    return bool(words.search(entry.text))


def _intent(c: _Candidate) -> str | None:
    """What a suggestion is for: its stage (and concern); a mined reply without a stage is its own."""
    e = c.entry
    if not e.stage:
        return None
    return f"{e.stage}:{e.concern}" if e.concern else e.stage


def _visit_time(messages: Sequence[tuple[str, str]]) -> str | None:
    """The last visit time named in the chat (明天上午十点, 周六, 3月5号下午), for the confirmation."""
    for _, text in reversed(messages):
        found = [m.group(0) for m in _VISIT_TIME.finditer(text) if len(m.group(0)) >= 2]
        if found:
            return found[-1]
    return None


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


__all__ = [
    "DEPARTMENT_TERMS",
    "REPEAT_LIMIT",
    "ReplySuggester",
    "Suggestion",
    "booking_confirmed",
    "hospital_slots",
]
