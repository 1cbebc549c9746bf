"""Calibrated booking / arrival probability of a chat so far.

:class:`OutcomeScorer` follows the scikit-learn contract (the constructor only
stores hyperparameters; ``fit`` sets attributes ending in ``_``). Two model
families are offered and compared by the trainer:

- ``kind="logreg"``: logistic regression on standardised structured features
  plus the hashed token bag;
- ``kind="hgb"``: histogram gradient boosting on the structured features plus
  one stacked column, the out-of-fold score of a logistic model on the token bag.

Both are calibrated on held-out rows (isotonic by default, Platt optional).

Scores hold up outside the training data: structured inputs are clipped to the range
the training rows cover (a 10,000-character message scores like the longest ones seen),
calibrated probabilities stay inside ``[1/(n+2), 1-1/(n+2)]`` for ``n`` calibration chats
(never exactly 0 or 1), buying-signal columns (``increasing``) can only raise the score,
and :meth:`OutcomeScorer.bound_by` keeps one score under another (p(arrived) <= p(booked)).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler

from yuyue.compat import hgb_binary_trees
from yuyue.features.rows import PrefixRows

# rows up to which FlatForest beats sklearn's per-tree loop (one message's score and reasons: ~10-30 rows).
# Measured on the 100k model's 200 trees, unrelated rows: 16 rows 0.73 vs 5.05 ms, 64 rows 2.0 vs 2.9 ms,
# 256 rows 9.5 vs 7.5 ms.
FLAT_FOREST_MAX_ROWS = 64


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(p / (1 - p)))


def centred_knots(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of an isotonic map through the centre of each flat step (centred isotonic regression).

    Pool-adjacent-violators gives steps: every raw score inside one step gets the same probability,
    so in the console a visitor giving a phone number could leave the score exactly where it was.
    Interpolating between the steps' centres keeps each step's level and makes the map strictly
    increasing between the first and the last centre (flat beyond them, as before).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return x, y
    starts = np.r_[0, np.flatnonzero(np.diff(y) != 0) + 1]
    ends = np.r_[starts[1:], len(y)] - 1
    return (x[starts] + x[ends]) / 2.0, y[starts]


class TextScorer(BaseEstimator):  # type: ignore[misc]  # sklearn has no types: an Any base
    """Logistic regression on the hashed token bag; its logit is a stacked feature."""

    def __init__(self, C: float = 2.0, max_iter: int = 40):
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: sp.csr_matrix, y: np.ndarray, sample_weight: np.ndarray | None = None) -> TextScorer:
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter, solver="lbfgs")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # capped on purpose (see OutcomeScorer)
            self.model_.fit(X, y, sample_weight=sample_weight)
        return self

    def decision_function(self, X: sp.csr_matrix) -> np.ndarray:
        # X @ w + b without sklearn's input validation (it dominates the cost of one row)
        return np.asarray(X @ self.model_.coef_.ravel(), dtype=np.float64) + float(self.model_.intercept_[0])


class FlatForest:
    """The trees of a fitted binary ``HistGradientBoostingClassifier``, as flat arrays.

    :meth:`raw` walks every (row, tree) pair down one level per numpy step and
    drops the pairs that reached a leaf, instead of sklearn's one Python call per
    tree: the same raw scores (to float rounding) for a handful of rows at a
    fraction of the cost, which is what scoring one message needs. Numerical splits
    only, rows without missing values (:meth:`supports` says when to use it).
    """

    def __init__(self, model: HistGradientBoostingClassifier):
        read = hgb_binary_trees(model)  # private attributes: yuyue.compat guards them
        if read is None:
            raise ValueError(
                "the boosted model's trees cannot be read here (see yuyue.compat.hgb_binary_trees)"
            )
        trees, baseline = read
        starts = np.cumsum([0] + [len(t) for t in trees[:-1]]).astype(np.int64)
        nodes = np.concatenate(trees)
        self.categorical = bool(nodes["is_categorical"].any())
        self.roots = starts
        self.leaf = nodes["is_leaf"].astype(bool)
        self.feature = np.where(self.leaf, 0, nodes["feature_idx"]).astype(np.int64)
        self.threshold = nodes["num_threshold"].astype(np.float64)
        self.left = np.concatenate(
            [t["left"].astype(np.int64) + o for t, o in zip(trees, starts, strict=True)]
        )
        self.right = np.concatenate(
            [t["right"].astype(np.int64) + o for t, o in zip(trees, starts, strict=True)]
        )
        self.value = nodes["value"].astype(np.float64)
        self.baseline = baseline
        self.n_features = int(model.n_features_in_)

    @classmethod
    def of(cls, model: HistGradientBoostingClassifier) -> FlatForest | None:
        """The flat trees of ``model``, or None where its trees cannot be read (sklearn's own path)."""
        try:
            return cls(model)
        except ValueError:
            return None

    def supports(self, X: np.ndarray) -> bool:
        return not self.categorical and not np.isnan(X).any()

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Raw (log-odds) predictions, one per row, equal to sklearn's ``_raw_predict``.

        Rows after the first are walked only through the trees that split on a column
        where they differ from the first row (elsewhere they reach the same leaf): the
        reasons' perturbed variants of one row change a few columns each.
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        n, n_cols = X.shape
        n_trees = len(self.roots)
        need = np.ones((n, n_trees), dtype=bool)
        if n > 1:
            changed = (X[1:] != X[:1]).astype(np.float32)
            need[1:] = (changed @ self._uses()) > 0
        pairs = np.flatnonzero(need.ravel())
        node = self.roots[pairs % n_trees]
        offset = (pairs // n_trees) * n_cols
        pair = np.arange(len(pairs))
        reached = node.copy()
        flat = X.ravel()
        while len(node):
            left = flat[offset + self.feature[node]] <= self.threshold[node]
            node = np.where(left, self.left[node], self.right[node])
            done = self.leaf[node]
            if done.any():
                reached[pair[done]] = node[done]
                keep = ~done
                node, offset, pair = node[keep], offset[keep], pair[keep]
        leaves = np.tile(reached[:n_trees], n)  # row 0 walked every tree: its leaves are the default
        leaves[pairs] = reached
        return np.asarray(self.value[leaves].reshape(n, n_trees).sum(axis=1) + self.baseline)

    def _uses(self) -> np.ndarray:
        """(features, trees): 1 where the tree splits on the feature."""
        uses = getattr(self, "_uses_cache", None)
        if uses is None:
            tree_of = np.repeat(np.arange(len(self.roots)), np.diff(np.r_[self.roots, len(self.leaf)]))
            uses = np.zeros((self.n_features, len(self.roots)), dtype=np.float32)
            inner = ~self.leaf
            uses[self.feature[inner], tree_of[inner]] = 1.0
            self._uses_cache = uses
        return uses


class OutcomeScorer(BaseEstimator):  # type: ignore[misc]  # sklearn has no types: an Any base
    """P(outcome | chat prefix), calibrated on held-out conversations."""

    def __init__(
        self,
        kind: Literal["hgb", "logreg"] = "hgb",
        calibration: Literal["isotonic", "platt"] = "isotonic",
        use_text: bool = True,
        C: float = 1.0,
        text_C: float = 2.0,
        max_iter: int = 300,
        linear_max_iter: int = 200,
        learning_rate: float = 0.08,
        max_leaf_nodes: int = 31,
        l2_regularization: float = 1.0,
        text_max_iter: int = 40,
        increasing: tuple[int, ...] = (),
        clip_quantile: float = 0.995,
        random_state: int = 0,
    ):
        self.kind = kind
        self.calibration = calibration
        self.use_text = use_text
        self.C = C
        self.text_C = text_C
        self.max_iter = max_iter
        self.linear_max_iter = linear_max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.l2_regularization = l2_regularization
        self.text_max_iter = text_max_iter
        self.increasing = increasing
        self.clip_quantile = clip_quantile
        self.random_state = random_state

    # ---- fitting -------------------------------------------------------
    def fit(self, rows: PrefixRows, y: np.ndarray, sample_weight: np.ndarray) -> OutcomeScorer:
        """Fit the uncalibrated model; call :meth:`calibrate` on held-out rows afterwards."""
        y = np.asarray(y, dtype=np.int8)
        if len(np.unique(y)) < 2:
            raise ValueError("only one class in the labels: need both positive and negative conversations")
        self._fit_clip(rows.struct)
        rows = self._clipped_rows(rows)
        if self.kind == "logreg":
            # scale without centring so zeros stay zeros: the features are mostly sparse flags
            self.scaler_ = StandardScaler(with_mean=False).fit(
                sp.csr_matrix(rows.struct), sample_weight=sample_weight
            )
            # 200 lbfgs iterations: closed-chat test AUC of the booked score on 40k simulated chats was
            # 0.8621 at 40, 0.8675 at 200, 0.8672 at 400 and 0.8673 at convergence (638), for 5, 21, 38
            # and 65 s of fitting (bench/bench_linear_iters.py, 2026-11-23)
            self.model_ = LogisticRegression(C=self.C, max_iter=self.linear_max_iter, solver="lbfgs")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.model_.fit(self._linear_X(rows), y, sample_weight=sample_weight)
            if self.increasing:
                # a buying signal never lowers the score: no negative weight on those columns
                coef = self.model_.coef_
                idx = np.asarray(self.increasing, dtype=np.int64)
                coef[0, idx] = np.maximum(coef[0, idx], 0.0)
        elif self.kind == "hgb":
            extra = None
            if self.use_text:
                extra, self.text_models_ = self._oof_text(rows, y, sample_weight)
            self.model_ = HistGradientBoostingClassifier(
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes,
                l2_regularization=self.l2_regularization,
                monotonic_cst=self._monotonic_cst(rows.struct.shape[1] + (extra is not None)),
                early_stopping=False,
                random_state=self.random_state,
            )
            X = rows.struct if extra is None else np.column_stack([rows.struct, extra])
            self.model_.fit(X, y, sample_weight=sample_weight)
        else:
            raise ValueError(f"unknown kind {self.kind!r}: expected 'hgb' or 'logreg'")
        self.calibrator_: IsotonicRegression | LogisticRegression | None = None
        return self

    def _oof_text(
        self, rows: PrefixRows, y: np.ndarray, w: np.ndarray
    ) -> tuple[np.ndarray, list[TextScorer]]:
        """Out-of-fold text logits (folds by conversation, so no chat scores its own rows).

        The fold models are kept: at prediction time their mean is the text score.
        """
        out = np.zeros(len(rows), dtype=np.float32)
        models = []
        for tr, te in GroupKFold(n_splits=2).split(rows.struct, y, groups=rows.group):
            if len(np.unique(y[tr])) < 2:
                raise ValueError("a text fold has only one class: too few conversations of one outcome")
            m = TextScorer(C=self.text_C, max_iter=self.text_max_iter).fit(rows.text[tr], y[tr], w[tr])
            out[te] = m.decision_function(rows.text[te])
            models.append(m)
        return out, models

    def _monotonic_cst(self, n_cols: int) -> list[int] | None:
        if not self.increasing:
            return None
        cst = [0] * n_cols
        for j in self.increasing:
            cst[j] = 1
        return cst

    def _fit_clip(self, struct: np.ndarray) -> None:
        """Per-column range of the training rows (upper end at ``clip_quantile`` of the non-zero values).

        Inputs beyond it (a 10,000-character message, 300 turns) are scored as the edge of what
        training saw, so no single unusual message pushes a linear model far outside its data.
        """
        X = np.asarray(struct, dtype=np.float64)
        hi = np.zeros(X.shape[1])
        lo = np.minimum(X.min(axis=0), 0.0)
        for j in range(X.shape[1]):
            nz = X[:, j][X[:, j] != 0]
            if len(nz):
                hi[j] = max(float(np.quantile(nz, self.clip_quantile)), 1.0 if nz.max() >= 1 else nz.max())
        self.clip_lo_, self.clip_hi_ = lo.astype(np.float32), hi.astype(np.float32)

    def _clip(self, struct: np.ndarray) -> np.ndarray:
        lo = getattr(self, "clip_lo_", None)
        if lo is None:  # bundles saved before clipping existed
            return struct
        return np.clip(np.asarray(struct, dtype=np.float32), lo, self.clip_hi_)

    def _clipped_rows(self, rows: PrefixRows) -> PrefixRows:
        return PrefixRows(
            self._clip(rows.struct),
            rows.text,
            rows.group,
            rows.n_messages,
            rows.visitor_turns,
            rows.conversation_ids,
            rows.closed,
        )

    def _linear_X(self, rows: PrefixRows) -> sp.csr_matrix:
        return self._linear_arrays(rows.struct, rows.text)

    def _linear_arrays(self, struct: np.ndarray, text: sp.csr_matrix) -> sp.csr_matrix:
        Xs = self.scaler_.transform(sp.csr_matrix(struct, dtype=np.float32)).astype(np.float32)
        return sp.hstack([Xs, text], format="csr") if self.use_text else sp.csr_matrix(Xs)

    def calibrate(self, rows: PrefixRows, y: np.ndarray, sample_weight: np.ndarray) -> OutcomeScorer:
        """Fit the calibration map on rows of conversations the model did not train on."""
        raw = self.decision_function(rows)
        # never exactly 0 or 1: n calibration chats support no probability beyond [1/(n+2), 1-1/(n+2)]
        n = len(np.unique(rows.group))
        self.p_min_, self.p_max_ = 1.0 / (n + 2), 1.0 - 1.0 / (n + 2)
        if self.calibration == "isotonic":
            self.calibrator_ = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
            self.calibrator_.fit(raw, y, sample_weight=sample_weight)
            self.knots_ = centred_knots(self.calibrator_.X_thresholds_, self.calibrator_.y_thresholds_)
        else:
            self.calibrator_ = LogisticRegression(C=1e4).fit(
                raw.reshape(-1, 1), y, sample_weight=sample_weight
            )
        return self

    def bound_by(self, upper: OutcomeScorer | None) -> OutcomeScorer:
        """Never score above ``upper`` (arrival needs a booking: p(arrived) <= p(booked) on every row)."""
        self.upper_ = upper
        return self

    def _bounded(self, p: np.ndarray, upper: np.ndarray | None) -> np.ndarray:
        return p if upper is None else np.minimum(p, upper)

    def predict_proba_arrays(self, struct: np.ndarray, text: sp.csr_matrix) -> np.ndarray:
        up = getattr(self, "upper_", None)
        return self._bounded(
            self._calibrated(self.decision_function_arrays(struct, text)),
            None if up is None else up.predict_proba_arrays(struct, text),
        )

    def predict_proba_variants(
        self, struct: np.ndarray, text: sp.csr_matrix, with_text: np.ndarray
    ) -> np.ndarray:
        """Calibrated probabilities of rows that share one token bag ``text`` (a 1-row matrix).

        Row ``i`` of ``struct`` is scored with ``text`` where ``with_text[i]`` and with an
        empty bag elsewhere: what the reasons need (one row, perturbed group by group)
        without stacking sparse copies of the same bag. Equal to
        ``predict_proba_arrays`` on the stacked rows.
        """
        up = getattr(self, "upper_", None)
        return self._bounded(
            self._calibrated(self.decision_variants(struct, text, with_text)),
            None if up is None else up.predict_proba_variants(struct, text, with_text),
        )

    def _calibrated(self, raw: np.ndarray) -> np.ndarray:
        if self.calibrator_ is None:
            p = 1.0 / (1.0 + np.exp(-raw))
        elif isinstance(self.calibrator_, IsotonicRegression):
            # through the centres of the isotonic steps (strictly increasing between them); bundles
            # calibrated before keep IsotonicRegression.predict's own interpolation
            xp, fp = getattr(self, "knots_", (self.calibrator_.X_thresholds_, self.calibrator_.y_thresholds_))
            p = np.interp(raw, xp, fp)
        else:
            p = self.calibrator_.predict_proba(raw.reshape(-1, 1))[:, 1]
        return np.asarray(np.clip(p, getattr(self, "p_min_", 1e-4), getattr(self, "p_max_", 1 - 1e-4)))

    def predict_proba(self, rows: PrefixRows) -> np.ndarray:
        """Calibrated probabilities, one per row (a 1-d array)."""
        return self.predict_proba_arrays(rows.struct, rows.text)

    # ---- prediction ----------------------------------------------------
    def _linear_weights(self) -> tuple[np.ndarray, np.ndarray | None, float]:
        """Scaler folded into the coefficients: (struct weights, text weights, intercept), cached."""
        cached = getattr(self, "_weights_cache", None)
        if cached is None:
            w = self.model_.coef_.ravel().astype(np.float64)
            n = len(self.scaler_.scale_)
            cached = (
                w[:n] / self.scaler_.scale_,
                w[n:] if self.use_text else None,
                float(self.model_.intercept_[0]),
            )
            self._weights_cache = cached
        return cached

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_weights_cache", None)  # derived; rebuilt on first use
        state.pop("_forest_cache", None)
        return state

    def _text_score(self, text: sp.csr_matrix) -> np.ndarray:
        """The boosted model's stacked text column: the mean logit of the out-of-fold text models."""
        return np.asarray(np.mean([m.decision_function(text) for m in self.text_models_], axis=0))

    def _tree_logit(self, X: np.ndarray) -> np.ndarray:
        """``logit(model_.predict_proba(X)[:, 1])``, through :class:`FlatForest` when it applies."""
        forest: FlatForest | Literal[False] | None = getattr(self, "_forest_cache", None)
        if forest is None:
            # False: this scikit-learn's trees cannot be read, predict_proba scores every row
            forest = self._forest_cache = FlatForest.of(self.model_) or False
        X = np.asarray(X, dtype=np.float64)
        if forest and len(X) <= FLAT_FOREST_MAX_ROWS and forest.supports(X):
            return _logit(1.0 / (1.0 + np.exp(-forest.raw(X))))
        return _logit(self.model_.predict_proba(X)[:, 1])

    def decision_function_arrays(self, struct: np.ndarray, text: sp.csr_matrix) -> np.ndarray:
        struct = self._clip(struct)
        if self.kind == "logreg":
            # equal to model_.decision_function(scaler_.transform(...)), minus sklearn's per-call overhead
            ws, wt, b = self._linear_weights()
            out: np.ndarray = np.asarray(struct, dtype=np.float64) @ ws + b
            if wt is not None:
                out += text @ wt
            return out
        X = struct
        if self.use_text:
            X = np.column_stack([struct, self._text_score(text)])
        return self._tree_logit(X)

    def decision_function(self, rows: PrefixRows) -> np.ndarray:
        return self.decision_function_arrays(rows.struct, rows.text)

    def decision_variants(self, struct: np.ndarray, text: sp.csr_matrix, with_text: np.ndarray) -> np.ndarray:
        """Raw scores of rows sharing one token bag (see :meth:`predict_proba_variants`)."""
        struct = np.asarray(self._clip(struct), dtype=np.float64)
        with_text = np.asarray(with_text, dtype=bool)
        if self.kind == "logreg":
            ws, wt, b = self._linear_weights()
            raw: np.ndarray = struct @ ws + b
            if wt is not None:
                raw += with_text * float((text @ wt)[0])
            return raw
        X = struct
        if self.use_text:
            full = float(self._text_score(text)[0])
            empty = float(
                np.mean([m.model_.intercept_[0] for m in self.text_models_])
            )  # an empty bag's score
            X = np.column_stack([struct, np.where(with_text, full, empty)])
        return self._tree_logit(X)
