"""Every use of another project's private API, in one place, behind version guards with a fallback.

Like scikit-learn's ``utils/fixes.py``: the rest of Yuyue calls these functions and never imports
a private module or reads a private attribute itself. Each function says what it returns when the
private API is missing or has changed shape (a newer Python or scikit-learn): a value that makes
the caller take its slower, public path, never a wrong answer.

- the regular-expression parser (``re._parser`` and ``re._constants``; the public ``sre_parse`` and
  ``sre_constants`` are deprecated aliases of them since Python 3.11): used to expand small keyword
  patterns (features/signals.py), to find the characters a compliance rule's match starts with
  (models/replies/guard.py) and to bound how far back a ``$``-anchored pattern can reach (trigger);
- the trees of a fitted ``HistGradientBoostingClassifier`` (``_predictors``,
  ``_baseline_prediction``): read once to score a handful of rows without sklearn's per-tree loop.
"""

from __future__ import annotations

import importlib
import re
import warnings
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "SKLEARN_TREES_TESTED",
    "end_anchored_width",
    "hgb_binary_trees",
    "parse_regex",
    "sre_constants",
    "sre_parser",
]


def _regex_modules() -> tuple[ModuleType | None, ModuleType | None]:
    """``re._parser`` and ``re._constants`` (Python 3.11 to at least 3.14), if they still parse a
    known pattern into the shape used here; else (None, None)."""
    try:
        # by name: typeshed has no stubs for these private modules (ModuleType is what they are here)
        constants = importlib.import_module("re._constants")
        parser = importlib.import_module("re._parser")
        probe = parser.parse("ab?$")
        if probe[-1] != (constants.AT, constants.AT_END) or tuple(probe.getwidth()) != (1, 2):
            return None, None
        for name in _REGEX_NAMES:
            getattr(constants, name)
    except (ImportError, AttributeError, TypeError, IndexError, re.error):
        return None, None  # a Python whose private parser moved or changed: callers take their public path
    return parser, constants


# the opcodes callers compare against (features/signals.py walks literals, sets and repeats)
_REGEX_NAMES = (
    "AT",
    "AT_END",
    "ASSERT",
    "ASSERT_NOT",
    "GROUPREF",
    "LITERAL",
    "IN",
    "RANGE",
    "CATEGORY",
    "CATEGORY_DIGIT",
    "SUBPATTERN",
    "BRANCH",
    "MAX_REPEAT",
    "MIN_REPEAT",
    "MAXREPEAT",
)

#: ``re._parser`` and ``re._constants``, or None where this Python has no such parser.
sre_parser, sre_constants = _regex_modules()


def parse_regex(pattern: str, flags: int = 0) -> Any | None:
    """The parse tree (a ``SubPattern``) of ``pattern``, or None when this Python has no private
    parser. Raises ``re.error`` for a bad pattern, like ``re.compile``."""
    if sre_parser is None:
        re.compile(pattern, flags)  # still report a bad pattern
        return None
    return sre_parser.parse(pattern, flags)


def end_anchored_width(pattern: str, *, below: int, plain: bool = False) -> int | None:
    """The most characters a pattern ending in ``$`` can match, when that is under ``below``.

    None when the pattern does not end in ``$``, can span ``below`` characters or more (or any
    number), looks around or back (``plain=True``: lookahead/lookbehind assertions, group
    references), or when this Python has no private parser: the caller then searches the whole
    text, which is slower but gives the same answer.
    """
    parsed = parse_regex(pattern)
    if parsed is None or sre_constants is None:
        return None
    c = sre_constants
    if not len(parsed) or parsed[-1] != (c.AT, c.AT_END):
        return None
    if plain and any(op in (c.ASSERT, c.ASSERT_NOT, c.GROUPREF) for op, _ in parsed):
        return None
    hi = int(parsed.getwidth()[1])
    return hi if hi < below else None


# ---- scikit-learn's HistGradientBoostingClassifier --------------------------------------------
#: the scikit-learn versions whose tree layout :func:`hgb_binary_trees` was checked against
#: (pyproject's bounds); outside them the layout is still checked field by field.
SKLEARN_TREES_TESTED = ((1, 5), (2, 0))
_NODE_FIELDS = ("is_leaf", "is_categorical", "feature_idx", "num_threshold", "left", "right", "value")


def _version(text: str) -> tuple[int, int]:
    parts = [int(p) for p in re.findall(r"\d+", text)[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def hgb_binary_trees(model: Any) -> tuple[list[np.ndarray], float] | None:
    """The node arrays of a fitted binary ``HistGradientBoostingClassifier`` (one per boosting
    iteration; fields ``is_leaf``, ``is_categorical``, ``feature_idx``, ``num_threshold``,
    ``left``, ``right``, ``value``) and its baseline raw prediction.

    None when the private attributes are missing or laid out otherwise (another scikit-learn, a
    multi-class model, a model not fitted): the caller then uses ``predict_proba``. A version
    outside :data:`SKLEARN_TREES_TESTED` warns once but is still used if its layout checks out.
    """
    import sklearn

    version = _version(sklearn.__version__)
    lo, hi = SKLEARN_TREES_TESTED
    predictors = getattr(model, "_predictors", None)
    baseline = getattr(model, "_baseline_prediction", None)
    if predictors is None or baseline is None or not len(predictors):
        return None
    trees: list[np.ndarray] = []
    for per_iteration in predictors:
        if len(per_iteration) != 1:  # one tree per class beyond binary
            return None
        nodes = getattr(per_iteration[0], "nodes", None)
        names = getattr(getattr(nodes, "dtype", None), "names", None) or ()
        if not isinstance(nodes, np.ndarray) or any(f not in names for f in _NODE_FIELDS):
            return None
        trees.append(nodes)
    flat_baseline = np.ravel(np.asarray(baseline, dtype=np.float64))
    if flat_baseline.size != 1:
        return None
    if not lo <= version < hi:
        warnings.warn(
            f"scikit-learn {sklearn.__version__} is outside the versions whose boosted-tree layout "
            f"Yuyue was tested with ({lo[0]}.{lo[1]} to before {hi[0]}.{hi[1]}); its layout checks out, "
            "so it is read directly",
            RuntimeWarning,
            stacklevel=2,
        )
    return trees, float(flat_baseline[0])
