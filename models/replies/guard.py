"""Compliance guard: keeps promises, cure rates, absolute claims, disparagement and pressure out of replies.

The rules are data (``rules/compliance.yaml``); this module only compiles and applies them.
A rule fires when one of its ``patterns`` matches the normalised text and that match is not
overlapped by a match of one of its ``unless`` patterns (negated or hedged wording such as
"不能保证效果" or "第一次"). Patterns must not use named groups or back-references: all
rules' patterns are also joined into one pre-filter regex, so that a compliant text — the
usual case — costs a single regex pass. Capturing groups are rewritten as non-capturing ones
and the pre-filter is gated by the set of characters a match can start with; a whole
``check`` (normalisation included) takes about 25 µs of CPU for a chat-length text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from yuyue.compat import parse_regex, sre_constants
from yuyue.features.normalize import normalize

DEFAULT_RULES = Path(__file__).parent / "rules" / "compliance.yaml"
_FLAGS = re.IGNORECASE


class Category(StrEnum):
    """What kind of non-compliant wording a rule catches."""

    promise_result = "promise_result"
    cure_rate = "cure_rate"
    absolute_claim = "absolute_claim"
    guarantee_safety = "guarantee_safety"
    disparage = "disparage"
    fear_pressure = "fear_pressure"
    appearance_anxiety = "appearance_anxiety"
    patient_testimonial = "patient_testimonial"
    endorsement = "endorsement"
    inducement = "inducement"
    cure_timeframe = "cure_timeframe"
    exclusive_cure = "exclusive_cure"
    price_bait = "price_bait"


class RuleExamples(BaseModel):
    """Texts that must (positive) and must not (negative) fire the rule; the tests run them."""

    model_config = ConfigDict(extra="forbid")

    positive: list[str] = Field(min_length=1)
    negative: list[str] = Field(default_factory=list)


def _non_capturing(pattern: str) -> str:
    """``pattern`` with every capturing group made non-capturing (faster, and safe to join)."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            # a "]" right after "[" or "[^" is a literal
            if pattern[i : i + 1] == "^":
                out.append("^")
                i += 1
            if pattern[i : i + 1] == "]":
                out.append("]")
                i += 1
            continue
        elif c == "(" and pattern[i + 1 : i + 2] != "?":
            out.append("(?:")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _first_chars(pattern: str) -> set[str] | None:
    """What a match of ``pattern`` can start with, or None when that cannot be bounded.

    Items are single characters, or (longer strings) regex class items such as ``\\d`` or ``a-z``.
    """

    # the regex parser's tree (yuyue.compat): without it, a rule is not narrowed by first character
    parsed = parse_regex(pattern, _FLAGS)
    c = sre_constants
    if parsed is None or c is None:
        return None

    def seq(items: Iterable[tuple[Any, Any]]) -> tuple[set[str] | None, bool]:
        out: set[str] = set()
        for op, av in items:
            first, nullable = item(op, av)
            if first is None:
                return None, False
            out |= first
            if not nullable:
                return out, False
        return out, True

    def item(op: Any, av: Any) -> tuple[set[str] | None, bool]:
        if op is c.LITERAL:
            return {chr(av)}, False
        if op is c.IN:
            found: set[str] = set()
            for o, a in av:
                if o is c.LITERAL:
                    found.add(chr(a))
                elif o is c.RANGE:
                    found.add(f"{re.escape(chr(a[0]))}-{re.escape(chr(a[1]))}")
                elif o is c.CATEGORY and a is c.CATEGORY_DIGIT:
                    found.add(r"\d")
                else:
                    return None, False
            return found, False
        if op is c.CATEGORY and av is c.CATEGORY_DIGIT:
            return {r"\d"}, False
        if op is c.BRANCH:
            found, any_nullable = set[str](), False
            for alt in av[1]:
                first, nullable = seq(alt)
                if first is None:
                    return None, False
                found |= first
                any_nullable |= nullable
            return found, any_nullable
        if op is c.SUBPATTERN:
            return seq(av[3])
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            lo, _hi, sub = av
            first, nullable = seq(sub)
            return first, (first is not None and (lo == 0 or nullable))
        return None, False

    first, nullable = seq(parsed)
    if first is None or nullable:
        return None
    cased = {c.swapcase() for c in first if len(c) == 1 and c.swapcase() != c}
    return first | cased


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern, _FLAGS)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
    if compiled.groupindex:
        raise ValueError(f"named groups are not allowed: {pattern!r}")
    if re.search(r"\\[1-9]|\(\?P=", pattern):
        raise ValueError(f"back-references are not allowed: {pattern!r}")
    return re.compile(_non_capturing(pattern), _FLAGS)


class ComplianceRule(BaseModel):
    """One rule of the compliance file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
    category: Category
    cite: Annotated[str, StringConstraints(min_length=1)]
    patterns: list[str] = Field(min_length=1)
    unless: list[str] = Field(default_factory=list)
    examples: RuleExamples

    @field_validator("patterns", "unless")
    @classmethod
    def _valid_regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            _compile(pattern)
        return value


@dataclass(slots=True)
class Verdict:
    """Outcome of checking one text: ``allowed`` is False when any rule fired; ``rules`` are their ids."""

    allowed: bool
    rules: list[str]


class RulesFileError(ValueError):
    """The compliance rules file cannot be read or is invalid; the message names the rule and field."""


def _join(patterns: Iterable[str]) -> str:
    return "|".join(f"(?:{_non_capturing(p)})" for p in patterns)


def _gated(patterns: Sequence[str]) -> tuple[re.Pattern[str], frozenset[str] | None]:
    """One regex matching wherever any of ``patterns`` matches, gated by the characters a match
    can start with; and those characters when they are all plain characters (else None)."""
    body = _join(patterns)
    starts: set[str] = set()
    for p in patterns:
        first = _first_chars(p)
        if first is None:  # cannot bound where a match starts: no gate (slower, still correct)
            return re.compile(body, _FLAGS), None
        starts |= first
    gate = "".join(re.escape(c) if len(c) == 1 else c for c in sorted(starts))
    literal = frozenset(starts) if all(len(c) == 1 for c in starts) else None
    return re.compile(f"(?=[{gate}])(?:{body})", _FLAGS), literal


class _CompiledRule:
    __slots__ = ("id", "pattern", "starts", "unless")

    def __init__(self, rule: ComplianceRule) -> None:
        self.id = rule.id
        self.pattern, self.starts = _gated(rule.patterns)
        self.unless = re.compile(_join(rule.unless), _FLAGS) if rule.unless else None

    def fires(self, text: str) -> bool:
        return self.outcome(text) == 1

    def outcome(self, text: str) -> int:
        """1: fires; -1: a pattern matched but every match is negated or hedged (``unless``); 0: no match."""
        matches = [m.span() for m in self.pattern.finditer(text)]
        if not matches:
            return 0
        if self.unless is None:
            return 1
        # finditer does not report overlapping matches, so search from every match start
        spans = []
        pos = 0
        while (m := self.unless.search(text, pos)) is not None:
            spans.append(m.span())
            pos = m.start() + 1
        return 1 if any(all(e <= us or s >= ue for us, ue in spans) for s, e in matches) else -1


class ComplianceGuard:
    """Flags reply texts that break the compliance rules.

    Construct from rules (``ComplianceGuard(rules)``), from a YAML file
    (``ComplianceGuard.from_yaml(path)``) or with the shipped rules
    (``ComplianceGuard.default()``). Nothing is learned; ``check`` is pure.
    """

    def __init__(self, rules: Sequence[ComplianceRule]) -> None:
        ids = [r.id for r in rules]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule ids: {', '.join(duplicates)}")
        self.rules = tuple(rules)
        self._compiled = [_CompiledRule(r) for r in self.rules]
        patterns = [p for r in self.rules for p in r.patterns]
        self._prefilter = _gated(patterns)[0] if patterns else None

    @classmethod
    def from_yaml(cls, path: str | Path) -> ComplianceGuard:
        return cls(load_rules(path))

    @classmethod
    def default(cls) -> ComplianceGuard:
        """The guard with the shipped rules (built once and shared; it holds no mutable state)."""
        return _default_guard()

    @property
    def rules_by_id(self) -> dict[str, ComplianceRule]:
        return {r.id: r for r in self.rules}

    def check(self, text: str) -> Verdict:
        """Normalise ``text`` and apply every rule; rule ids come back in file order."""
        fired = self.check_normalized(normalize(text))
        return Verdict(not fired, fired)

    def check_normalized(self, norm: str) -> list[str]:
        """Ids of the rules that fire on an already normalised text, in file order."""
        if self._prefilter is None or self._prefilter.search(norm) is None:
            return []
        chars = set(norm)
        return [
            r.id
            for r in self._compiled
            if (r.starts is None or not r.starts.isdisjoint(chars)) and r.fires(norm)
        ]

    def negated_normalized(self, norm: str) -> bool:
        """True when some rule's pattern matched an already normalised text but only in negated or
        hedged wording ("我们没有特价", "不能保证效果"): the rules have judged the claim and cleared it."""
        if self._prefilter is None or self._prefilter.search(norm) is None:
            return False
        chars = set(norm)
        return any(
            r.unless is not None
            and (r.starts is None or not r.starts.isdisjoint(chars))
            and r.outcome(norm) == -1
            for r in self._compiled
        )

    def check_many(self, texts: Iterable[str]) -> list[Verdict]:
        return [self.check(t) for t in texts]

    def filter(self, texts: Iterable[str]) -> list[bool]:
        """A keep-mask: True for each text that passes every rule."""
        return [self.check(t).allowed for t in texts]


def load_rules(path: str | Path | None = None) -> list[ComplianceRule]:
    """Read and validate a compliance rules file (default: the shipped one)."""
    path = Path(path) if path is not None else DEFAULT_RULES
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RulesFileError(f"{path}: cannot read rules: {exc}") from None
    items = raw.get("rules") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise RulesFileError(f"{path}: expected a mapping with a 'rules' list")
    rules: list[ComplianceRule] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items, start=1):
        rid = item.get("id") if isinstance(item, dict) else None
        where = f"{path}: rule #{i}" + (f" ({rid})" if rid else "")
        try:
            rule = ComplianceRule.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(rule)"
            raise RulesFileError(f"{where}: field '{field}': {err['msg']}") from None
        if rule.id in seen:
            raise RulesFileError(f"{where}: field 'id': duplicate id (first at rule #{seen[rule.id]})")
        seen[rule.id] = i
        rules.append(rule)
    return rules


@lru_cache(maxsize=1)
def _default_guard() -> ComplianceGuard:
    return ComplianceGuard(load_rules(DEFAULT_RULES))


# ---------------------------------------------------------------- red-team set and learned classifier

REDTEAM = Path(__file__).parent / "rules" / "redteam.tsv"
# More development texts (all of them development data, no hash split).
REDTEAM_MORE = Path(__file__).parent / "rules" / "redteam_more.tsv"
# The first blind set, written before the 2026-11 tuning; its misses were then read while tuning, so since
# 2026-11-30 it is development data like redteam.tsv's old held-out split (see load_dev).
REDTEAM_HOLDOUT = Path(__file__).parent / "rules" / "redteam_holdout.tsv"
# The blind set: written on 2026-11-30 before the guard was run on it; never trained or tuned on.
REDTEAM_HOLDOUT2 = Path(__file__).parent / "rules" / "redteam_holdout2.tsv"
OK = "ok"
# Block when the classifier's probability that a text is prohibited reaches CLASSIFIER_THRESHOLD and its
# phrase evidence (the logit's share from char 2- and 3-grams, see GuardClassifier.phrase_evidence) reaches
# PHRASE_MIN; clear a rule hit when that probability is below RULE_VETO (the rules fire on hedged or
# debunking wording such as "说保证效果的医院您要小心" that the classifier has learned to read).
# Without the phrase gate, single characters of casual register (就, 了, 你, "...") and the intercept
# were enough to block off-topic help-desk chatter (1.5 % of real consultant messages). Chosen on the
# development data only (5-fold stratified CV, 2026-11-30): the most prohibited texts blocked with >= 96.5 %
# of compliant ones passed and <= 1 % of the real help-desk consultant messages blocked (CV 97.7 % / 97.2 %,
# help desk 0.83 %; without the gate at 0.70: 98.1 % / 96.8 %, 1.67 %); bench/bench_guard.py --tune --real
# prints the sweep.
CLASSIFIER_THRESHOLD = 0.55
PHRASE_MIN = 0.20
RULE_VETO = 0.2
_NGRAMS = (1, 2, 3)
# Inverse regularisation of the logistic regression (dev CV: 30 edges out 10; char 1-4 grams, jieba word
# uni/bigrams, mixed-message augmentation and the e5 space did not beat char 1-3 grams).
CLASSIFIER_C = 30.0
# Shorter texts ("好的", "好的王女士。") carry too little for the classifier; it leaves them to the rules
# (dev CV: 8 loses nothing against 6; 10 loses 0.3 points of blocked).
CLASSIFIER_MIN_CHARS = 8


def redteam_split(text: str) -> str:
    """``"heldout"`` for about 25 % of texts (fixed by a hash of the text), else ``"dev"``.

    Held-out texts are never used to tune rules or classifier settings, nor to train the classifier.
    """
    return "heldout" if hashlib.sha256(text.encode("utf-8")).digest()[0] % 4 == 0 else "dev"


def load_redteam(path: str | Path | None = None, split: str | None = None) -> list[tuple[str, str]]:
    """``(label, text)`` pairs of the red-team file; ``label`` is a category value or ``"ok"``.

    ``split``: ``"dev"`` or ``"heldout"`` keeps only that split; ``None`` keeps all.
    """
    if split not in (None, "dev", "heldout"):
        raise ValueError(f"split must be 'dev', 'heldout' or None, not {split!r}")
    path = Path(path) if path is not None else REDTEAM
    labels = {c.value for c in Category} | {OK}
    out: list[tuple[str, str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        label, sep, text = line.partition("\t")
        if not sep or not text.strip():
            raise ValueError(f"{path}: line {number}: expected LABEL<TAB>TEXT")
        if label not in labels:
            raise ValueError(f"{path}: line {number}: unknown label {label!r} (expected a category or 'ok')")
        if split is None or redteam_split(text) == split:
            out.append((label, text))
    return out


def load_dev() -> list[tuple[str, str]]:
    """All development texts: redteam.tsv (both splits), redteam_more.tsv and the first blind set
    redteam_holdout.tsv (no longer blind); only redteam_holdout2.tsv is held out."""
    return load_redteam() + load_redteam(REDTEAM_MORE) + load_redteam(REDTEAM_HOLDOUT)


def _grams(norm: str) -> Iterator[str]:
    for n in _NGRAMS:
        for i in range(len(norm) - n + 1):
            yield norm[i : i + n]


class GuardClassifier:
    """Char n-gram TF-IDF features; a logistic regression decides compliant vs prohibited and the
    nearest category centroid names what a prohibited text is.

    Trained with scikit-learn (:meth:`fit`, under a second); scoring one text is plain Python +
    numpy over the learned vocabulary (no sklearn call per message).
    """

    def __init__(
        self,
        vocab: dict[str, int],
        idf: np.ndarray,
        coef: np.ndarray,
        bias: float,
        centroids: np.ndarray,
        categories: Sequence[str],
        threshold: float = CLASSIFIER_THRESHOLD,
        phrase_min: float = PHRASE_MIN,
    ) -> None:
        self.vocab, self.idf, self.coef, self.bias = vocab, idf, coef, float(bias)
        self.centroids, self.categories = centroids, list(categories)
        self.threshold, self.phrase_min = threshold, phrase_min
        lengths = np.zeros(len(coef), dtype=np.int64)
        for gram, j in vocab.items():
            lengths[j] = len(gram)
        self._phrase_coef = np.where(lengths >= 2, coef, 0.0)  # the weights of 2- and 3-grams only

    @classmethod
    def fit(
        cls,
        labels: Sequence[str],
        texts: Sequence[str],
        c: float = CLASSIFIER_C,
        threshold: float = CLASSIFIER_THRESHOLD,
        phrase_min: float = PHRASE_MIN,
    ) -> GuardClassifier:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        categories = sorted({label for label in labels if label != OK})
        if OK not in labels or not categories:
            raise ValueError("training data needs 'ok' texts and texts of at least one category")
        vec = TfidfVectorizer(
            analyzer="char",
            ngram_range=(_NGRAMS[0], _NGRAMS[-1]),
            sublinear_tf=True,
            lowercase=False,
            norm="l2",
        )
        x = vec.fit_transform([normalize(t) for t in texts])
        y = np.array([label != OK for label in labels])
        model = LogisticRegression(C=c, solver="liblinear", class_weight="balanced", max_iter=1000)
        model.fit(x, y)
        centroids = np.vstack(
            [
                np.asarray(x[np.flatnonzero([label == cat for label in labels])].mean(axis=0)).ravel()
                for cat in categories
            ]
        )
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        vocab = {g: int(i) for g, i in vec.vocabulary_.items()}
        return cls(
            vocab,
            vec.idf_.astype(np.float64),
            model.coef_.ravel().astype(np.float64),
            float(model.intercept_[0]),
            centroids,
            categories,
            threshold,
            phrase_min,
        )

    def _features(self, norm: str) -> tuple[np.ndarray, np.ndarray]:
        counts: dict[int, int] = {}
        vocab = self.vocab
        for g in _grams(norm):
            j = vocab.get(g)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        w = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * self.idf[idx]
        if len(w):
            w /= np.sqrt(w @ w)
        return idx, w

    def p_prohibited(self, norm: str) -> float:
        """Probability that an already normalised text is prohibited."""
        idx, w = self._features(norm)
        return float(1.0 / (1.0 + np.exp(-(self.coef[idx] @ w + self.bias))))

    def phrase_evidence(self, norm: str) -> float:
        """The part of the logit that char 2- and 3-grams give (single characters and the intercept left
        out): a text blocked on register alone, with no phrase of a prohibited claim, scores low."""
        idx, w = self._features(norm)
        return float(self._phrase_coef[idx] @ w)

    def predict(self, norm: str) -> tuple[str | None, float]:
        """``(category, P(prohibited))``; category is None when the text passes (P below the threshold,
        or phrase evidence below ``phrase_min``)."""
        idx, w = self._features(norm)
        p = float(1.0 / (1.0 + np.exp(-(self.coef[idx] @ w + self.bias))))
        if p < self.threshold or float(self._phrase_coef[idx] @ w) < self.phrase_min:
            return None, p
        if not len(idx):
            return self.categories[0], p
        return self.categories[int((self.centroids[:, idx] @ w).argmax())], p


def training_data(rules: Sequence[ComplianceRule] | None = None) -> tuple[list[str], list[str]]:
    """The classifier's training texts: the development texts (:func:`load_dev`), the script library (as
    ``ok``) and the rule file's examples (positives under the rule's category, negatives as ``ok``);
    texts of the blind set (redteam_holdout2.tsv) are dropped wherever they come from."""
    from yuyue.models.replies.scripts import fill_slots, load_library

    rules = load_rules() if rules is None else rules
    blind = {t for _, t in load_redteam(REDTEAM_HOLDOUT2)} if REDTEAM_HOLDOUT2.exists() else set()
    pairs = load_dev()
    pairs += [(OK, fill_slots(e.text, {})) for e in load_library()]
    for r in rules:
        pairs += [(r.category.value, t) for t in r.examples.positive]
        pairs += [(OK, t) for t in r.examples.negative]
    seen: set[str] = set()
    labels, texts = [], []
    for label, text in pairs:
        if text in seen or text in blind:
            continue
        seen.add(text)
        labels.append(label)
        texts.append(text)
    return labels, texts


@lru_cache(maxsize=1)
def default_classifier() -> GuardClassifier:
    """The classifier trained from the repo's own data (once per process, about a second)."""
    return GuardClassifier.fit(*training_data())


def category_citations(rules: Sequence[ComplianceRule] | None = None) -> dict[str, str]:
    """Each category's legal basis: the citation of its first rule in the file."""
    out: dict[str, str] = {}
    for r in load_rules() if rules is None else rules:
        out.setdefault(r.category.value, r.cite)
    return out


class CombinedGuard:
    """Rules and classifier. A rule hit blocks unless the classifier is confident the text is compliant
    (P(prohibited) < ``rule_veto``: hedged or debunking wording); when no rule fires, the classifier
    blocks at P >= its threshold. Texts shorter than CLASSIFIER_MIN_CHARS are left to the rules. Every
    hit names a rule id (``classifier_<category>`` for the classifier), its category and the citation."""

    def __init__(
        self,
        guard: ComplianceGuard | None = None,
        classifier: GuardClassifier | None = None,
        rule_veto: float = RULE_VETO,
    ) -> None:
        self.guard = guard if guard is not None else ComplianceGuard.default()
        self.classifier = classifier
        self.rule_veto = rule_veto
        by_id = self.guard.rules_by_id
        self._rule_info = {i: (r.category.value, r.cite) for i, r in by_id.items()}
        self._cites = category_citations(self.guard.rules)
        default = {c.value: cite for c, cite in _default_cites().items()}
        for cat, cite in default.items():
            self._cites.setdefault(cat, cite)

    def check(self, text: str) -> dict[str, Any]:
        """``{"allowed": bool, "rules": [{"id", "category", "citation", "source", ...}]}``."""
        norm = normalize(text)
        fired = self.guard.check_normalized(norm)
        hits: list[dict[str, Any]] = [
            {
                "id": rid,
                "category": self._rule_info[rid][0],
                "citation": self._rule_info[rid][1],
                "source": "rule",
            }
            for rid in fired
        ]
        if self.classifier is None or len(norm.strip()) < CLASSIFIER_MIN_CHARS:
            return {"allowed": not hits, "rules": hits}
        if hits:
            if self.classifier.p_prohibited(norm) < self.rule_veto:
                return {"allowed": True, "rules": []}
        elif not self.guard.negated_normalized(norm):  # a claim the rules saw negated stays cleared
            category, score = self.classifier.predict(norm)
            if category is not None:
                hits.append(
                    {
                        "id": f"classifier_{category}",
                        "category": category,
                        "citation": self._cites.get(category, ""),
                        "source": "classifier",
                        "score": round(score, 3),
                    }
                )
        return {"allowed": not hits, "rules": hits}


@lru_cache(maxsize=1)
def _default_cites() -> dict[Category, str]:
    return {Category(k): v for k, v in category_citations(load_rules()).items()}


@lru_cache(maxsize=1)
def default_combined() -> CombinedGuard:
    return CombinedGuard(ComplianceGuard.default(), default_classifier())


# Library scripts that say the same thing compliantly: (stage, concern) to look in, per category.
_ALTERNATIVE_PLACES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "promise_result": (("resolve_concern", "effect"), ("describe_outcome", None)),
    "cure_rate": (("resolve_concern", "effect"), ("describe_outcome", None)),
    "cure_timeframe": (("resolve_concern", "recovery"), ("resolve_concern", "effect")),
    "exclusive_cure": (("resolve_concern", "effect"), ("recommend_expert", None)),
    "absolute_claim": (("recommend_expert", None),),
    "endorsement": (("recommend_expert", None),),
    "patient_testimonial": (("resolve_concern", "effect"), ("recommend_expert", None)),
    "guarantee_safety": (("resolve_concern", "safety"), ("resolve_concern", "pain")),
    "disparage": (("resolve_concern", "safety"),),
    "fear_pressure": (("book", None), ("close", None)),
    "price_bait": (("promotion", None), ("resolve_concern", "price")),
    "inducement": (("promotion", None), ("resolve_concern", "price")),
    "appearance_anxiety": (("probe_expectation", None),),
}


def _bigrams(text: str) -> set[str]:
    return {text[i : i + 2] for i in range(len(text) - 1)}


@lru_cache(maxsize=1)
def _alternatives() -> dict[str, list[tuple[str, frozenset[str]]]]:
    """Per category: filled, guard-checked library texts that fit every department, with their bigrams."""
    from yuyue.models.replies.scripts import fill_slots, load_library, scripts_for

    entries = load_library()
    guard = ComplianceGuard.default()
    out: dict[str, list[tuple[str, frozenset[str]]]] = {}
    for category, places in _ALTERNATIVE_PLACES.items():
        texts: list[tuple[str, frozenset[str]]] = []
        for stage, concern in places:
            for e in scripts_for(entries, stage, concern=concern):
                if concern is None and e.concern is not None:
                    continue
                text = fill_slots(e.text, {})
                if text and guard.check(text).allowed and text not in {t for t, _ in texts}:
                    texts.append((text, frozenset(_bigrams(normalize(text)))))
        out[category] = texts
    return out


def compliant_alternative(category: str, text: str = "") -> str | None:
    """A compliant library script for the same intent as a blocked ``text`` of ``category``
    (the closest by shared character bigrams), or None when the library has none."""
    candidates = _alternatives().get(category) or []
    if not candidates:
        return None
    grams = _bigrams(normalize(text))
    best = max(candidates, key=lambda c: len(grams & c[1]) / (len(c[1]) or 1))
    return best[0]


def check_consultant_message(text: str, guard: CombinedGuard | None = None) -> dict[str, Any]:
    """Check one message a consultant typed: ``{"allowed", "rules": [{id, category, citation, source}],
    "alternative": str | None}``. Nothing is blocked or changed; this is a warning for the consultant."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    verdict = (guard or default_combined()).check(text)
    alternative = None
    if not verdict["allowed"]:
        for hit in verdict["rules"]:
            alternative = compliant_alternative(hit["category"], text)
            if alternative is not None:
                break
    return {"allowed": verdict["allowed"], "rules": verdict["rules"], "alternative": alternative}
