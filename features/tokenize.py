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


def tokenize(text: str) -> list[str]:
    """Word tokens of already-normalised text; punctuation and spaces dropped, Latin lower-cased."""
    return [t.lower() for t in _tokenizer().lcut(text, HMM=True) if not _SKIP.match(t)]


def domain_hits(tokens: list[str]) -> list[Term]:
    """Domain dictionary entries among ``tokens``, in order."""
    terms = domain_terms()
    return [terms[t] for t in tokens if t in terms]
