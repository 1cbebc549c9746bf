"""Generating many simulated conversations: streaming, in parallel, reproducibly.

Conversation ``i`` of a run is generated from its own RNG seeded from
``(seed, i)``, so the output is byte-identical whatever the number of workers;
workers take contiguous chunks and results are written back in order.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from yuyue.data.io import write_jsonl
from yuyue.data.simulator.dialogue import ConversationSimulator

CHUNK = 500


@lru_cache(maxsize=4)
def _simulator(
    city: str | None = None, province: str | None = None, variant: str = "default"
) -> ConversationSimulator:
    return ConversationSimulator(city=city, province=province, variant=variant)


def iter_records(n: int, seed: int, start: int = 0, variant: str = "default") -> Iterator[dict[str, Any]]:
    """Yield conversations ``start`` .. ``start + n - 1`` of the run with ``seed`` as contract dicts.

    ``variant="shifted"`` plays the shifted world (other phrasing, rates and consultants).
    """
    sim = _simulator(variant=variant)
    for i in range(start, start + n):
        yield sim.conversation(seed, i)


def _chunk(args: tuple[int, int, int, str, str, str]) -> list[bytes]:
    seed, start, count, city, province, variant = args
    sim = _simulator(city, province, variant)
    return [orjson.dumps(sim.conversation(seed, i)) for i in range(start, start + count)]


def generate_file(
    out: Path,
    n: int,
    seed: int,
    workers: int = 1,
    variant: str = "default",
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``n`` simulated conversations to ``out`` (JSONL, gzip for ``.gz``); returns the count.

    ``on_progress(k)`` is called as each ``k`` more conversations are generated (for a progress bar).
    """
    if workers <= 1 or n <= CHUNK:
        records: Iterator[Any] = iter_records(n, seed, variant=variant)
        if on_progress is not None:
            records = _counted(records, on_progress, every=50)
        return write_jsonl(out, records)
    sim = _simulator(variant=variant)
    tasks = [(seed, s, min(CHUNK, n - s), sim.city, sim.province, variant) for s in range(0, n, CHUNK)]
    with multiprocessing.get_context().Pool(workers) as pool:
        chunks: Iterator[list[bytes]] = pool.imap(_chunk, tasks)
        if on_progress is not None:
            chunks = _sized(chunks, on_progress)
        lines = (orjson.Fragment(line) for chunk in chunks for line in chunk)
        return write_jsonl(out, lines)


def _counted(items: Iterator[Any], on_progress: Callable[[int], None], every: int) -> Iterator[Any]:
    k = 0
    for item in items:
        yield item
        k += 1
        if k == every:
            on_progress(k)
            k = 0
    if k:
        on_progress(k)


def _sized(chunks: Iterator[list[bytes]], on_progress: Callable[[int], None]) -> Iterator[list[bytes]]:
    for chunk in chunks:
        on_progress(len(chunk))
        yield chunk
