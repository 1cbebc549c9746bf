"""Visitor and consultant signals: what one message asks, worries about or does.

Input is a message after :func:`features.normalize.normalize` and its tokens from
:func:`features.tokenize.tokenize`. The patterns are data, in
``features/lexicon/signals.yaml``; this module compiles them once per side.

Visitor signals (:data:`VISITOR_SIGNALS`):

- ``asks_price`` – asks what it costs (多少钱, 价格, 有没有优惠)
- ``asks_address`` – asks where the hospital is or how to get there
- ``asks_time`` – asks about opening hours or when they can come
- ``asks_prepare`` – asks what to bring or how to prepare for the visit
- ``asks_doctor`` – asks which doctor, or about a doctor's skill
- ``asks_insurance`` – asks about 医保 / 报销 / insurance
- ``asks_effect`` – asks what result to expect, how long it lasts, whether it cures
- ``concern_price`` – finds it expensive or worries about money (not "不贵")
- ``concern_safety`` – worries about risk, side effects, whether the hospital is legitimate
- ``concern_pain`` – worries whether it hurts, asks about anaesthesia
- ``concern_recovery`` – worries about recovery time, time off, scars
- ``concern_effect`` – worries the result will be poor, unnatural, or not last
- ``concern_privacy`` – worries others will know
- ``concern_distance`` – finds the hospital far or lives elsewhere
- ``hesitation`` – wants to think it over, talk to family, look around
- ``comparison`` – mentions other hospitals, public hospitals, what others quoted
- ``refuses_contact`` – won't leave a phone number or WeChat
- ``gives_contact_intent`` – offers a phone number or WeChat, asks to be added
- ``agrees`` – says yes / fine / let's book
- ``negative`` – rejects: too expensive, forget it, not doing it
- ``urgent`` – wants it as soon as possible, today
- ``greeting`` – hello / anyone there
- ``question`` – the message is a question (?, 吗/呢 at the end, 怎么/多少/什么 …)

Consultant signals (:data:`CONSULTANT_SIGNALS`):

- ``asks_name`` – asks how to address the visitor (怎么称呼, 贵姓)
- ``asks_contact`` – asks for a phone number, WeChat or other contact
- ``asks_condition`` – asks about the visitor's current condition or history
- ``asks_expectation`` – asks what result the visitor wants
- ``explains`` – explains causes, methods or the treatment
- ``answers_price`` … ``answers_distance`` – addresses one concern (see :data:`CONCERN_ANSWERS`)
- ``recommends_expert`` – presents or recommends a doctor
- ``mentions_offer`` – mentions a current offer or free item
- ``proposes_time`` – proposes or arranges an appointment time
- ``gives_address`` – states the hospital's address
- ``question`` – the message is a question
- ``closing`` – closing words, wishes, "contact me any time"

How patterns match: every pattern whose language is a finite set of strings is
expanded into keywords, and all keywords of one side go into one trie regex
scanned left to right (longest keyword wins; a keyword also fires the signals of
every shorter keyword inside it). The remaining patterns (gaps, anchors,
look-arounds) are searched one by one. A hit of a ``negatable`` signal is
dropped when a negation stands right before it ("不算贵", "一点都不疼"), unless
the negation is an A-not-A question ("会不会疼") or the hit is followed by a
question particle ("不会疼吧").
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from yuyue.compat import end_anchored_width, parse_regex, sre_constants

VISITOR_SIGNALS: tuple[str, ...] = (
    "asks_price",
    "asks_address",
    "asks_time",
    "asks_prepare",
    "asks_doctor",
    "asks_insurance",
    "asks_effect",
    "concern_price",
    "concern_safety",
    "concern_pain",
    "concern_recovery",
    "concern_effect",
    "concern_privacy",
    "concern_distance",
    "hesitation",
    "comparison",
    "refuses_contact",
    "gives_contact_intent",
    "agrees",
    "negative",
    "urgent",
    "greeting",
    "question",
)
CONSULTANT_SIGNALS: tuple[str, ...] = (
    "asks_name",
    "asks_contact",
    "asks_condition",
    "asks_expectation",
    "explains",
    "answers_price",
    "answers_safety",
    "answers_pain",
    "answers_recovery",
    "answers_effect",
    "answers_privacy",
    "answers_distance",
    "recommends_expert",
    "mentions_offer",
    "proposes_time",
    "gives_address",
    "question",
    "closing",
)
CONCERNS: tuple[str, ...] = ("price", "safety", "pain", "recovery", "effect", "privacy", "distance")
# concern → the visitor signal that raises it and the consultant signal that answers it
CONCERN_SIGNALS: dict[str, str] = {c: f"concern_{c}" for c in CONCERNS}
CONCERN_ANSWERS: dict[str, str] = {c: f"answers_{c}" for c in CONCERNS}
# concern → every visitor signal that opens it: the worry itself, and a plain question on the
# topic, which the consultant should answer just the same ("多少钱" opens price)
CONCERN_TRIGGERS: dict[str, tuple[str, ...]] = {
    "price": ("concern_price", "asks_price", "asks_insurance"),
    "safety": ("concern_safety",),
    "pain": ("concern_pain",),
    "recovery": ("concern_recovery",),
    "effect": ("concern_effect", "asks_effect"),
    "privacy": ("concern_privacy",),
    "distance": ("concern_distance", "asks_address"),
}

_MAX_EXPANSION = 400  # a pattern with more strings than this stays a regex
_NEG_WINDOW = 7  # characters before a hit that the negation regex looks at


@dataclass(frozen=True)
class _SideMatcher:
    """Compiled patterns of one side."""

    keywords: re.Pattern[str] | None  # trie of all expanded keywords
    # keyword → (its signals incl. those of keywords inside it, what is left when negated or None)
    keyword_signals: dict[str, tuple[frozenset[str], frozenset[str] | None]]
    # non-expandable patterns, searched one by one: a combined (?=(?P<g0>..)|..) regex tried at
    # every position measured 3x slower than separate searches, which skip ahead on their first character
    # (signal, regex, n): a pattern anchored at the end only needs the last n characters (0 = all)
    regexes: tuple[tuple[str, re.Pattern[str], int], ...]
    token_signals: dict[str, frozenset[str]]  # exact token → signals
    negatable: frozenset[str]


# ---------------------------------------------------------------- compiling


def _expand(node: Any) -> list[str] | None:
    """All strings a parsed regex matches, or None when not a small finite set."""
    ops = sre_constants  # the private parser's opcodes (yuyue.compat); None: no such parser
    if ops is None:
        return None
    results = [""]
    for op, av in node:
        if op is ops.LITERAL:
            options: list[str] | None = [chr(av)]
        elif op is ops.IN:
            options = []
            for o, v in av:
                if o is ops.LITERAL:
                    options.append(chr(v))
                elif o is ops.RANGE and v[1] - v[0] < 16:
                    options.extend(chr(c) for c in range(v[0], v[1] + 1))
                elif o is ops.CATEGORY and v is ops.CATEGORY_DIGIT:
                    options.extend("0123456789")  # text is NFKC-normalised: digits are ASCII
                else:
                    return None
        elif op is ops.SUBPATTERN:
            options = _expand(av[3])
        elif op is ops.BRANCH:
            options = []
            for alt in av[1]:
                sub = _expand(alt)
                if sub is None:
                    return None
                options.extend(sub)
        elif op in (ops.MAX_REPEAT, ops.MIN_REPEAT):
            lo, hi, sub_node = av
            if hi is ops.MAXREPEAT or hi > 4:
                return None
            sub = _expand(sub_node)
            if sub is None:
                return None
            options = ["".join(p) for k in range(lo, hi + 1) for p in itertools.product(sub, repeat=k)]
        else:
            return None
        if options is None:
            return None
        results = [r + o for r in results for o in options]
        if len(results) > _MAX_EXPANSION:
            return None
    return results


def expand_pattern(pattern: str) -> list[str] | None:
    """Keywords equivalent to ``pattern``, or None when it must stay a regex."""
    try:
        parsed = parse_regex(pattern)
    except re.error as exc:
        raise ValueError(f"bad signal pattern {pattern!r}: {exc}") from exc
    if parsed is None:  # this Python has no private parser (yuyue.compat): the pattern stays a regex
        return None
    strings = _expand(list(parsed))
    if strings is None or "" in strings:
        return None
    return sorted(set(strings))


def _tail_width(pattern: str) -> int:
    """How many trailing characters a pattern ending in ``$`` can span (0 = not anchored or unbounded)."""
    return end_anchored_width(pattern, below=64) or 0


def _trie_regex(words: list[str]) -> str:
    """A regex matching any of ``words``, longest first, with shared prefixes factored."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = True

    def build(node: dict[str, Any]) -> str:
        ends = "" in node
        alts = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 and len(alts[0]) == 1 else "(?:" + "|".join(alts) + ")"
        if ends:
            body = ("(?:" + body + ")" if not body.startswith("(?:") else body) + "?"
        return body

    return build(trie)


def _compile_side(entries: dict[str, dict[str, Any]]) -> _SideMatcher:
    keyword_to: dict[str, set[str]] = {}
    regexes: list[tuple[str, str]] = []
    token_to: dict[str, set[str]] = {}
    negatable: set[str] = set()
    for signal, spec in entries.items():
        spec = spec or {}
        if spec.get("negatable"):
            negatable.add(signal)
        for tok in spec.get("tokens") or []:
            token_to.setdefault(str(tok).lower(), set()).add(signal)
        for pattern in spec.get("patterns") or []:
            pattern = str(pattern).lower()
            words = expand_pattern(pattern)
            if words is None:
                if re.compile(pattern).groups:
                    raise ValueError(
                        f"signal {signal}: use (?:...) instead of a capturing group in {pattern!r}"
                    )
                regexes.append((signal, pattern))
            else:
                for w in words:
                    keyword_to.setdefault(w, set()).add(signal)
    # a keyword also carries the signals of every keyword found inside it, because the
    # keyword scan consumes the text and would otherwise hide them
    words = sorted(keyword_to)
    keyword_signals: dict[str, tuple[frozenset[str], frozenset[str] | None]] = {}
    for w in words:
        sigs = set(keyword_to[w])
        for i in range(len(w)):
            for j in range(i + 1, len(w) + 1):
                if (i, j) != (0, len(w)) and w[i:j] in keyword_to:
                    sigs |= keyword_to[w[i:j]]
        keyword_signals[w] = (frozenset(sigs), frozenset(sigs - negatable) if sigs & negatable else None)
    return _SideMatcher(
        keywords=re.compile(_trie_regex(words)) if words else None,
        keyword_signals=keyword_signals,
        regexes=tuple((signal, re.compile(p, re.DOTALL), _tail_width(p)) for signal, p in regexes),
        token_signals={t: frozenset(s) for t, s in token_to.items()},
        negatable=frozenset(negatable),
    )


@dataclass(frozen=True)
class _Lexicon:
    visitor: _SideMatcher
    consultant: _SideMatcher
    negation: re.Pattern[str]
    question_after: re.Pattern[str]
    negator_tokens: frozenset[str]


@lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    raw = yaml.safe_load(
        resources.files("yuyue.features.lexicon").joinpath("signals.yaml").read_text(encoding="utf-8")
    )
    common = raw.get("common") or {}
    sides = {}
    for side, names in (("visitor", VISITOR_SIGNALS), ("consultant", CONSULTANT_SIGNALS)):
        entries = {**(raw.get(side) or {}), **common}
        unknown = set(entries) - set(names)
        if unknown:
            raise ValueError(f"signals.yaml: unknown {side} signals {sorted(unknown)}")
        sides[side] = _compile_side({k: v for k, v in entries.items() if k in names})
    neg = raw.get("negation") or {}
    return _Lexicon(
        visitor=sides["visitor"],
        consultant=sides["consultant"],
        negation=re.compile(neg.get("prefix", r"(?!)")),
        question_after=re.compile(neg.get("question_after", r"(?!)")),
        negator_tokens=frozenset(neg.get("tokens") or ()),
    )


# ---------------------------------------------------------------- matching


def _negated(lex: _Lexicon, text: str, start: int, end: int) -> bool:
    """True when a negation stands right before text[start:end] and is meant as one."""
    lo = max(0, start - _NEG_WINDOW)
    m = lex.negation.search(text, lo, start)
    if m is None:
        return False
    word = m.group()
    neg_at = m.start() + min(
        (i for i in (word.find("不"), word.find("没"), word.find("别")) if i >= 0), default=0
    )
    # A-not-A questions (会不会, 有没有, 疼不疼) ask; they do not negate
    if neg_at > 0 and neg_at + 1 < len(text) and text[neg_at - 1] == text[neg_at + 1]:
        return False
    return lex.question_after.match(text, end) is None


def _signals(side: _SideMatcher, text: str, tokens: list[str]) -> frozenset[str]:
    if not text:
        return frozenset()
    lex = _lexicon()
    text = text.lower()
    found: set[str] = set()
    if side.keywords is not None:
        keyword_signals = side.keyword_signals
        for m in side.keywords.finditer(text):
            sigs, kept_if_negated = keyword_signals[m.group()]
            if sigs <= found:
                continue
            if kept_if_negated is not None and _negated(lex, text, m.start(), m.end()):
                found |= kept_if_negated
            else:
                found |= sigs
    neg = side.negatable
    for signal, rx, tail in side.regexes:
        if signal in found:
            continue
        hit = rx.search(text, max(0, len(text) - tail) if tail else 0)
        while hit is not None:
            if signal not in neg or not _negated(lex, text, hit.start(), hit.end()):
                found.add(signal)
                break
            hit = rx.search(text, hit.end())
    if side.token_signals and not side.token_signals.keys().isdisjoint(tokens):
        prev = ""
        for i, tok in enumerate(tokens):
            tok_sigs = side.token_signals.get(tok)
            if tok_sigs:
                # 不算 贵 negates; 贵 不 贵 / 会 不会 (A-not-A) asks
                negated = prev in lex.negator_tokens and not (i >= 2 and prev[1:] == tokens[i - 2])
                found |= (tok_sigs - neg) if negated else tok_sigs
            prev = tok
    return frozenset(found)


def visitor_signals(text: str, tokens: list[str]) -> frozenset[str]:
    """Signals of a visitor message (names from :data:`VISITOR_SIGNALS`)."""
    return _signals(_lexicon().visitor, text, tokens)


def consultant_signals(text: str, tokens: list[str]) -> frozenset[str]:
    """Signals of a consultant message (names from :data:`CONSULTANT_SIGNALS`)."""
    return _signals(_lexicon().consultant, text, tokens)
