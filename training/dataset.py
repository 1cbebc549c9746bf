"""Datasets for training: one streaming scan, a time split by conversation, prefix rows in parallel."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from yuyue.data.contract import Conversation
from yuyue.data.io import SkipReport, read_conversations
from yuyue.features.rows import FeatureSpace, PrefixRows, prefix_rows

SPLITS = ("train", "valid", "calib", "test")


@dataclass
class ConversationMeta:
    """What the trainer needs to know of a record without keeping it in memory."""

    index: int  # position among the file's valid records
    conversation_id: str
    started_ts: float
    booked: bool | None
    arrived: bool | None  # booked and arrived; None when unknown
    n_messages: int
    n_consultant: int
    n_annotated: int
    consultant_id: str | None
    p_book: float | None  # truth, evaluation only
    p_arrive: float | None  # truth, evaluation only


@dataclass
class DatasetScan:
    path: Path
    metas: list[ConversationMeta]
    report: SkipReport
    split: dict[int, str] = field(default_factory=dict)

    @property
    def n_labelled(self) -> int:
        return sum(m.booked is not None for m in self.metas)

    def ids(self, split: str) -> list[int]:
        return [m.index for m in self.metas if self.split.get(m.index) == split]


def _outcomes(conv: Conversation) -> tuple[bool | None, bool | None]:
    o = conv.outcome
    if o is None or o.booked is None:
        return None, None
    if not o.booked:
        return False, False
    return True, o.arrived  # None while arrival is not known yet


def meta_of(index: int, conv: Conversation) -> ConversationMeta:
    """The metadata :func:`scan` keeps of the ``index``-th valid record."""
    booked, arrived = _outcomes(conv)
    truth = conv.truth
    return ConversationMeta(
        index=index,
        conversation_id=conv.conversation_id,
        started_ts=conv.started_at.timestamp(),
        booked=booked,
        arrived=arrived,
        n_messages=len(conv.messages),
        n_consultant=sum(m.role == "consultant" for m in conv.messages),
        n_annotated=sum(m.stage is not None for m in conv.messages),
        consultant_id=conv.consultant_id,
        p_book=truth.p_book if truth else None,
        p_arrive=truth.p_arrive if truth else None,
    )


def scan(path: str | Path, *, strict: bool = False) -> DatasetScan:
    """One pass over the file: metadata of every valid record, invalid ones counted."""
    report = SkipReport()
    metas = []
    for i, conv in enumerate(read_conversations(path, strict=strict, report=report)):
        metas.append(meta_of(i, conv))
    return DatasetScan(Path(path), metas, report)


def split_by_time(scan_: DatasetScan, fractions: tuple[float, ...] = (0.7, 0.1, 0.1, 0.1)) -> DatasetScan:
    """Whole conversations in time order: the earliest go to train, the latest to test."""
    order = sorted(scan_.metas, key=lambda m: (m.started_ts, m.conversation_id))
    n = len(order)
    bounds = np.cumsum([0, *[int(round(f * n)) for f in fractions[:-1]]])
    scan_.split = {}
    for pos, m in enumerate(order):
        k = int(np.searchsorted(bounds, pos, side="right") - 1)
        scan_.split[m.index] = SPLITS[min(k, len(SPLITS) - 1)]
    return scan_


def frequent_consultants(scan_: DatasetScan, split: str = "train", min_chats: int = 50) -> list[str]:
    """Consultants with at least ``min_chats`` labelled chats in ``split`` (each gets a feature column)."""
    counts: dict[str, int] = {}
    for m in scan_.metas:
        if m.consultant_id and m.booked is not None and scan_.split.get(m.index) == split:
            counts[m.consultant_id] = counts.get(m.consultant_id, 0) + 1
    return sorted(c for c, k in counts.items() if k >= min_chats)


CHUNK = 1000
PROGRESS_EVERY = 50


def rows_by_split(
    chats: Iterable[tuple[int, str, Conversation]],
    space: FeatureSpace,
    hospital: dict[str, str],
    max_open: dict[str, int | None],
    on_chat: Callable[[int], None] | None = None,
) -> dict[str, tuple[PrefixRows, list[int]]]:
    """Prefix rows of ``(file index, split, conversation)`` items per split with their file indices,
    built in chunks of ``CHUNK`` chats while reading (never all chats at once), truth removed first.

    ``on_chat(n)`` is called with the number of chats done so far after each one."""
    pending: dict[str, list[Conversation]] = {}
    done: dict[str, list[PrefixRows]] = {}
    order: dict[str, list[int]] = {}

    def flush(split: str) -> None:
        if pending.get(split):
            done.setdefault(split, []).append(
                prefix_rows(pending[split], space, hospital=hospital, max_open=max_open.get(split))
            )
            pending[split] = []

    for n, (i, split, conv) in enumerate(chats, start=1):
        pending.setdefault(split, []).append(conv.without_truth())
        order.setdefault(split, []).append(i)
        if len(pending[split]) >= CHUNK:
            flush(split)
        if on_chat is not None:
            on_chat(n)
    for split in list(pending):
        flush(split)
    return {s: (PrefixRows.concat(parts), order[s]) for s, parts in done.items()}


def _rows_shard(
    path: Path,
    wanted: dict[int, str],
    shard: int,
    n_shards: int,
    hospital: dict[str, str],
    space: FeatureSpace,
    max_open: dict[str, int | None],
    progress_queue: Any = None,
) -> dict:
    """:func:`rows_by_split` of this shard's wanted conversations of the file.

    With ``progress_queue``, puts the number of conversations done every ``PROGRESS_EVERY`` of them.
    """
    chats = (
        (i, wanted[i], conv)
        for i, conv in enumerate(read_conversations(path))
        if i % n_shards == shard and i in wanted
    )
    read = 0

    def on_chat(n: int) -> None:
        nonlocal read
        read = n
        if progress_queue is not None and n % PROGRESS_EVERY == 0:
            progress_queue.put(PROGRESS_EVERY)

    out = rows_by_split(chats, space, hospital, max_open, on_chat)
    if progress_queue is not None and read % PROGRESS_EVERY:
        progress_queue.put(read % PROGRESS_EVERY)
    return out


@dataclass
class LabelledRows:
    """Prefix rows with per-row labels and weights (each conversation's rows sum to 1)."""

    rows: PrefixRows
    conv_index: list[int]  # file index of each conversation, by group
    booked: np.ndarray  # per row: 1/0, or -1 when unknown
    arrived: np.ndarray
    weight: np.ndarray  # open rows of a chat sum to 1; its closed row weighs 1 on its own

    def target(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Row mask with a known label for ``name`` and the labels of those rows."""
        y = self.booked if name == "booked" else self.arrived
        mask = y >= 0
        return mask, y[mask]


def build_rows(
    scan_: DatasetScan,
    space: FeatureSpace,
    splits: tuple[str, ...] = SPLITS,
    *,
    workers: int = 2,
    hospital: dict[str, str] | None = None,
    max_open: int | None = None,
    max_chats: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    map_shards: Callable[..., list[dict]] | None = None,
) -> dict[str, LabelledRows]:
    """Prefix rows of the labelled conversations of each split, built in ``workers`` processes.

    ``max_open`` caps the rows after messages per chat in every split but ``test``
    (evaluation always sees every prefix); ``max_chats`` bounds the chats turned into rows
    (:func:`fit_sample`). ``on_progress(k)`` hears of every ``k`` more
    conversations done, out of :func:`n_rows_conversations` (the workers report through a queue).
    ``map_shards(scan_, wanted, space, hospital, caps, on_progress)`` builds the parts elsewhere
    (training/distributed.py: Ray tasks); labels, weights and assembly stay the same code.
    """
    caps = {s: (None if s == "test" else max_open) for s in splits}
    metas = {m.index: m for m in scan_.metas}
    wanted = fit_sample(scan_, splits, max_chats)
    hospital = hospital or {}
    jobs = (
        delayed(_rows_shard)(scan_.path, wanted, k, workers, hospital, space, caps) for k in range(workers)
    )
    if map_shards is not None:
        parts = map_shards(scan_, wanted, space, hospital, caps, on_progress)
    elif on_progress is None:
        parts = Parallel(n_jobs=workers)(jobs)
    else:
        parts = _with_progress(scan_, wanted, space, hospital, caps, workers, on_progress)
    out: dict[str, LabelledRows] = {}
    for s in splits:
        pieces = [p[s] for p in parts if s in p]
        if not pieces:
            continue
        rows = PrefixRows.concat([r for r, _ in pieces])
        conv_index = [i for _, idx in pieces for i in idx]
        labelled = [metas[i] for i in conv_index]  # `wanted` holds chats whose booking is known
        booked_c = np.array([int(bool(m.booked)) for m in labelled], dtype=np.int8)
        arrived_c = np.array([-1 if m.arrived is None else int(m.arrived) for m in labelled], dtype=np.int8)
        closed = rows.closed if rows.closed is not None else np.zeros(len(rows), dtype=np.int8)
        open_counts = np.bincount(rows.group[closed == 0], minlength=len(conv_index))
        weight = np.where(closed == 1, 1.0, 1.0 / np.maximum(open_counts[rows.group], 1))
        out[s] = LabelledRows(
            rows=rows,
            conv_index=conv_index,
            booked=booked_c[rows.group],
            arrived=arrived_c[rows.group],
            weight=weight.astype(np.float64),
        )
    return out


def fit_sample(
    scan_: DatasetScan, splits: tuple[str, ...] = SPLITS, max_chats: int | None = None, seed: int = 0
) -> dict[int, str]:
    """The labelled chats of ``splits`` that become rows (index -> split): all of them, or above
    ``max_chats`` a seeded uniform sample of that many (so each split keeps its share, the time split
    stays as it is, and the rows' memory is bounded whatever the file's size)."""
    labelled = {m.index for m in scan_.metas if m.booked is not None}
    wanted = {i: s for i, s in scan_.split.items() if s in splits and i in labelled}
    if max_chats is None or len(wanted) <= max_chats:
        return wanted
    keep = random.Random(seed).sample(sorted(wanted), max_chats)
    return {i: wanted[i] for i in sorted(keep)}


def n_rows_conversations(
    scan_: DatasetScan, splits: tuple[str, ...] = SPLITS, max_chats: int | None = None
) -> int:
    """How many conversations :func:`build_rows` turns into rows (the labelled ones of ``splits``)."""
    return len(fit_sample(scan_, splits, max_chats))


def _with_progress(
    scan_: DatasetScan,
    wanted: dict[int, str],
    space: FeatureSpace,
    hospital: dict[str, str],
    caps: dict[str, int | None],
    workers: int,
    on_progress: Callable[[int], None],
) -> list[dict]:
    import multiprocessing
    import threading

    with multiprocessing.Manager() as manager:
        queue = manager.Queue()

        def drain() -> None:
            while (k := queue.get()) is not None:
                on_progress(k)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            parts = Parallel(n_jobs=workers)(
                delayed(_rows_shard)(scan_.path, wanted, k, workers, hospital, space, caps, queue)
                for k in range(workers)
            )
        finally:
            queue.put(None)
            reader.join(timeout=10)
    return parts
