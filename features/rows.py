"""Training rows: one per message prefix of a conversation, as fixed-width arrays.

Row ``k`` of a conversation describes the chat after its first ``k`` messages
(row 0: before any message, from the visit trace alone). Rows are built by the
same :class:`features.state.ConversationState` the service runs, so a training
row and a live request with the same prefix get the same numbers.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from yuyue.data.contract import Conversation
from yuyue.features.state import TEXT_HASH_BITS, ConversationState, feature_names

TEXT_DIM = 1 << TEXT_HASH_BITS


class FeatureSpace:
    """Maps named features to columns and hashed token bags to a sparse matrix."""

    def __init__(
        self, names: Sequence[str] | None = None, recent_text: bool = True, recent_grams: bool = True
    ):
        self.names = list(names) if names is not None else feature_names()
        self.index = {n: i for i, n in enumerate(self.names)}
        # text rows also hold the latest visitor and consultant message's bags (each L2-normalised,
        # added to the chat's bag in the same hashed space); False for spaces pickled before them
        self.recent_text = recent_text
        # ... and those messages' character 1-3-grams (with recent_text only; False for older spaces)
        self.recent_grams = recent_grams and recent_text

    @classmethod
    def with_consultants(cls, consultants: Sequence[str]) -> FeatureSpace:
        return cls(feature_names(tuple(consultants)))

    def __getstate__(self) -> dict:
        return {"names": self.names, "recent_text": self.recent_text, "recent_grams": self.recent_grams}

    def __setstate__(self, state: dict) -> None:
        self.names = state["names"]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.recent_text = state.get("recent_text", False)
        self.recent_grams = state.get("recent_grams", False)

    @property
    def n_struct(self) -> int:
        return len(self.names)

    def struct_row(self, feats: dict[str, float], out: np.ndarray) -> None:
        index = self.index
        for k, v in feats.items():
            j = index.get(k)
            if j is not None:
                out[j] = v

    def struct(self, rows: Iterable[dict[str, float]]) -> np.ndarray:
        rows = list(rows)
        X = np.zeros((len(rows), self.n_struct), dtype=np.float32)
        for i, feats in enumerate(rows):
            self.struct_row(feats, X[i])
        return X

    @staticmethod
    def text_from_deltas(deltas: list[dict[int, int]], group: np.ndarray) -> sp.csr_matrix:
        """Text rows of prefixes from per-row token increments (cumulative within each group).

        Equal to :meth:`text` on the cumulative bags, computed with one sparse product.
        """
        n = len(deltas)
        indptr = np.zeros(n + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(d) for d in deltas])
        indices = np.fromiter((h for d in deltas for h in d), dtype=np.int32, count=int(indptr[-1]))
        data = np.fromiter((c for d in deltas for c in d.values()), dtype=np.float32, count=int(indptr[-1]))
        D = sp.csr_matrix((data, indices, indptr), shape=(n, TEXT_DIM))
        # lower-triangular block matrix: row i sums the deltas of rows j <= i of its group
        starts = np.r_[0, np.flatnonzero(group[1:] != group[:-1]) + 1]
        lengths = np.diff(np.r_[starts, n])
        blocks = [sp.tril(np.ones((k, k), dtype=np.float32), format="csr") for k in lengths]
        counts = (sp.block_diag(blocks, format="csr") @ D).tocsr()
        counts.data = np.log1p(counts.data)
        norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return (sp.diags((1.0 / norms).astype(np.float32)) @ counts).tocsr().astype(np.float32)

    @staticmethod
    def text_row(bag_v: dict[int, int], bag_c: dict[int, int]) -> sp.csr_matrix:
        """:meth:`text` of one chat (a 1-row matrix), merged with numpy instead of a Python loop.

        Equal to ``text([(bag_v, bag_c)])`` up to the order of the stored entries (here sorted).
        """
        n = len(bag_v) + len(bag_c)
        keys = np.fromiter(itertools.chain(bag_v, bag_c), dtype=np.int64, count=n)
        counts = np.fromiter(itertools.chain(bag_v.values(), bag_c.values()), dtype=np.float64, count=n)
        indices, where = np.unique(keys, return_inverse=True)
        vals = np.log1p(np.bincount(where, weights=counts).astype(np.float32))
        vals /= np.linalg.norm(vals) or 1.0
        return sp.csr_matrix(
            (vals, indices.astype(np.int32), np.array([0, len(indices)], dtype=np.int64)), shape=(1, TEXT_DIM)
        )

    @staticmethod
    def bag_rows(bags: Sequence[dict[int, int]]) -> sp.csr_matrix:
        """One L2-normalised row of log1p counts per bag (an empty bag gives an empty row)."""
        n = len(bags)
        indptr = np.zeros(n + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(b) for b in bags])
        nnz = int(indptr[-1])
        indices = np.fromiter((h for b in bags for h in b), dtype=np.int32, count=nnz)
        data = np.log1p(np.fromiter((c for b in bags for c in b.values()), dtype=np.float32, count=nnz))
        rows = sp.csr_matrix((data, indices, indptr), shape=(n, TEXT_DIM))
        norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return (sp.diags((1.0 / norms).astype(np.float32)) @ rows).tocsr()

    def recent(self, bags: Sequence[tuple[dict[int, int], dict[int, int]]]) -> sp.csr_matrix:
        """Rows of the latest visitor and consultant messages' bags, each part L2-normalised."""
        return (self.bag_rows([v for v, _ in bags]) + self.bag_rows([c for _, c in bags])).tocsr()

    def state_text(self, state: ConversationState) -> sp.csr_matrix:
        """The text row of a live chat: what :func:`prefix_rows` gives for the same prefix."""
        row = self.text_row(*state.text_bag())
        if not self.recent_text:
            return row
        last_v, last_c = state.recent_bag()
        grams_v, grams_c = state.recent_grams() if self.recent_grams else ({}, {})
        if not (last_v or last_c or grams_v or grams_c):
            return row
        row = row + self.recent([(last_v, last_c)])
        if self.recent_grams:
            row = row + self.recent([(grams_v, grams_c)])
        return row.tocsr().astype(np.float32)

    @staticmethod
    def text(bags: Iterable[tuple[dict[int, int], dict[int, int]]]) -> sp.csr_matrix:
        """log1p token counts, both sides in one hashed space, each row L2-normalised."""
        indptr: list[int] = [0]
        indices: list[int] = []
        data: list[float] = []
        for bag_v, bag_c in bags:
            merged: dict[int, float] = {}
            for bag in (bag_v, bag_c):
                for h, c in bag.items():
                    merged[h] = merged.get(h, 0.0) + c
            if merged:
                vals = np.log1p(np.fromiter(merged.values(), dtype=np.float32, count=len(merged)))
                vals /= np.linalg.norm(vals) or 1.0
                indices.extend(merged.keys())
                data.extend(vals.tolist())
            indptr.append(len(indices))
        return sp.csr_matrix(
            (
                np.asarray(data, dtype=np.float32),
                np.asarray(indices, dtype=np.int32),
                np.asarray(indptr, dtype=np.int64),
            ),
            shape=(len(indptr) - 1, TEXT_DIM),
        )


@dataclass
class PrefixRows:
    """Rows for a batch of conversations; ``group`` indexes ``conversation_ids``."""

    struct: np.ndarray
    text: sp.csr_matrix
    group: np.ndarray  # conversation position in this batch, per row
    n_messages: np.ndarray  # messages in the prefix, per row
    visitor_turns: np.ndarray  # visitor messages in the prefix, per row
    conversation_ids: list[str]
    closed: np.ndarray | None = None  # 1 on the row that describes the ended chat

    def __len__(self) -> int:
        return self.struct.shape[0]

    @staticmethod
    def concat(parts: Sequence[PrefixRows]) -> PrefixRows:
        offsets = np.cumsum([0] + [len(p.conversation_ids) for p in parts[:-1]])
        return PrefixRows(
            struct=np.vstack([p.struct for p in parts]),
            text=sp.vstack([p.text for p in parts], format="csr"),
            group=np.concatenate([p.group + o for p, o in zip(parts, offsets, strict=True)]),
            n_messages=np.concatenate([p.n_messages for p in parts]),
            visitor_turns=np.concatenate([p.visitor_turns for p in parts]),
            conversation_ids=[c for p in parts for c in p.conversation_ids],
            closed=np.concatenate([p.closed for p in parts])
            if all(p.closed is not None for p in parts)
            else None,
        )

    def take(self, mask: np.ndarray) -> PrefixRows:
        """Rows where ``mask`` holds (conversation ids kept whole; groups unchanged)."""
        return PrefixRows(
            self.struct[mask],
            self.text[mask],
            self.group[mask],
            self.n_messages[mask],
            self.visitor_turns[mask],
            self.conversation_ids,
            None if self.closed is None else self.closed[mask],
        )


def prefix_rows(
    conversations: Iterable[Conversation],
    space: FeatureSpace | None = None,
    *,
    include_empty: bool = True,
    include_closed: bool = True,
    hospital: dict[str, str] | None = None,
    max_open: int | None = None,
    seed: int = 0,
) -> PrefixRows:
    """Rows after every message of every conversation.

    Plus, per conversation, a row before the first message (``include_empty``: the
    visit trace alone) and a row for the ended chat (``include_closed``).
    ``max_open`` keeps a seeded uniform sample of at most that many rows after
    messages per conversation (consecutive prefixes are nearly identical; the
    trainer weights the kept ones so each chat still counts once).
    """
    space = space or FeatureSpace()
    hospital = hospital or {}
    feats: list[dict[str, float]] = []
    deltas: list[dict[int, int]] = []
    group: list[int] = []
    n_msgs: list[int] = []
    vturns: list[int] = []
    ids: list[str] = []
    closed: list[int] = []
    recent: list[tuple[dict[int, int], dict[int, int]]] = []
    grams: list[tuple[dict[int, int], dict[int, int]]] = []
    for ci, conv in enumerate(conversations):
        ids.append(conv.conversation_id)
        n = len(conv.messages)
        keep: set[int] | None = None
        if max_open is not None and n > max_open:
            rng = np.random.default_rng([seed, zlib.crc32(conv.conversation_id.encode())])
            keep = set(rng.choice(n, size=max_open, replace=False).tolist())
        pending: dict[int, int] = {}
        state = ConversationState.for_conversation(conv, **hospital)
        if include_empty:
            feats.append(state.features())
            deltas.append({})
            recent.append(state.recent_bag())
            grams.append(state.recent_grams())
            group.append(ci)
            n_msgs.append(0)
            vturns.append(0)
            closed.append(0)
        for k, m in enumerate(conv.messages):
            analysis = state.update(m.role, m.text, m.at)
            if keep is not None and k not in keep:
                # not a row: carry its tokens into the next kept row's increment
                for h, c in analysis.bag_delta.items():
                    pending[h] = pending.get(h, 0) + c
                continue
            delta = analysis.bag_delta
            if pending:
                for h, c in delta.items():
                    pending[h] = pending.get(h, 0) + c
                delta, pending = pending, {}
            feats.append(state.features())
            deltas.append(delta)
            recent.append(state.recent_bag())
            grams.append(state.recent_grams())
            group.append(ci)
            n_msgs.append(state.n_messages)
            vturns.append(state.n_visitor)
            closed.append(0)
        if include_closed:
            feats.append(state.features(closed=True))
            deltas.append(pending)  # tokens of messages after the last kept row
            recent.append(state.recent_bag())
            grams.append(state.recent_grams())
            group.append(ci)
            n_msgs.append(state.n_messages)
            vturns.append(state.n_visitor)
            closed.append(1)
    group_arr = np.asarray(group, dtype=np.int32)
    text = space.text_from_deltas(deltas, group_arr)
    if space.recent_text:
        text = text + space.recent(recent)
        if space.recent_grams:
            text = text + space.recent(grams)
        text = text.tocsr().astype(np.float32)
    return PrefixRows(
        struct=space.struct(feats),
        text=text,
        group=group_arr,
        n_messages=np.asarray(n_msgs, dtype=np.int32),
        visitor_turns=np.asarray(vturns, dtype=np.int32),
        conversation_ids=ids,
        closed=np.asarray(closed, dtype=np.int8),
    )
