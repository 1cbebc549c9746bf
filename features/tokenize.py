"""Word tokens: jieba with the domain dictionary in ``features/lexicon/domain.tsv``."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import jieba

jieba.setLogLevel(logging.WARNING)

_SKIP = re.compile(r"^[\s\W_]+$")
# jieba segments each run of the characters below on its own, at a cost that grows faster than the
# run's length (10,000 characters of 笑死 or of "a": 25-55x the time of 1,000); runs longer than
# _MAX_RUN are cut into pieces of that length, which keeps the cost linear and ordinary text as it was
_MAX_RUN = 200
_LONG_RUN = re.compile(r"[\u4E00-\u9FD5a-zA-Z0-9+#&._%\-]{" + str(_MAX_RUN + 1) + ",}")


@dataclass(frozen=True)
class Term:
    """One domain dictionary entry."""

    term: str
    category: str
    canonical: str
    department: str | None


@lru_cache(maxsize=1)
def domain_terms() -> dict[str, Term]:
    """The domain dictionary, keyed by term."""
    text = resources.files("yuyue.features.lexicon").joinpath("domain.tsv").read_text(encoding="utf-8")
    terms: dict[str, Term] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = (line.split("\t") + ["", "", ""])[:4]
        term, category, canonical, department = (p.strip() for p in parts)
        terms[term] = Term(term, category, canonical or term, department or None)
    return terms


@lru_cache(maxsize=1)
def _tokenizer() -> jieba.Tokenizer:
    tok = jieba.Tokenizer()
    tok.initialize()
    for term in domain_terms():
        # a high frequency keeps domain terms whole (隆鼻, not 隆/鼻)
        tok.add_word(term, freq=200000)
    return tok


def _pieces(text: str) -> list[str]:
    """``text`` cut so that no piece holds a run longer than ``_MAX_RUN`` (jieba's unit of work)."""
    if len(text) <= _MAX_RUN or _LONG_RUN.search(text) is None:
        return [text]
    out, pos = [], 0
    for m in _LONG_RUN.finditer(text):
        if m.start() > pos:
            out.append(text[pos : m.start()])
        out.extend(text[i : min(i + _MAX_RUN, m.end())] for i in range(m.start(), m.end(), _MAX_RUN))
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


def tokenize(text: str) -> list[str]:
    """Word tokens of already-normalised text; punctuation and spaces dropped, Latin lower-cased.

    Linear in the text: runs of more than 200 word characters with no break are segmented 200 at a time.
    """
    tok = _tokenizer()
    return [t.lower() for piece in _pieces(text) for t in tok.lcut(piece, HMM=True) if not _SKIP.match(t)]


def domain_hits(tokens: list[str]) -> list[Term]:
    """Domain dictionary entries among ``tokens``, in order."""
    terms = domain_terms()
    return [terms[t] for t in tokens if t in terms]
