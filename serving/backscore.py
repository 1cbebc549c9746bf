"""Back-scoring (``yuyue score --from-store``): the stored chats the desk still acts on, re-scored with
a newly promoted model, so the follow-up queue (``GET /v1/followups``) and the desk's tasks (ranked by
``serving/tasks.py``'s ``_priority()`` from ``conversations.p_booked`` / ``p_arrived``) rank them by
the current model rather than by the one that scored their last message.

**Which chats.** Every ``conversations`` row that is

- not closed (the console's open chats), or
- a lead: contact left (``contact`` or ``contact_seen``) and not booked, or
- a booking whose arrival is unknown (``booked`` and ``arrived`` null), or
- the chat of a task that is not done (``tasks.state != 'done'``, any kind),

-- the first three are the follow-up queue's own conditions (:meth:`EventStore.followup_candidates`) and
the open chats -- narrowed by ``hospital`` and ``since`` (``started_at >= since``, as the queue's
filter), and leaving out

- chats the chosen version scored last already (``model_version`` equal to it: their scores are what
  it gives; counted as ``current``), so a second run does nothing;
- chats whose raw text was masked (a row in ``erasures``: erasure request or retention): the stored
  texts no longer say what the visitor wrote (a masked phone is no contact), so a re-score would be
  wrong; they keep their scores (counted as ``erased``).

A closed chat with its outcome known (booked and arrived, or no contact and not booked) and no pending
task is never touched.

**Which score.** What the live path (``ChatService.message``) would have written after the chat's last
stored message with this model: the chat's state rebuilt from its row and stored messages
(:func:`serving.monitoring.stored_chat_state`, the messages folded in the desk's time zone), scored
with the chat still going (``closed=False``; not the ended-chat score the health report uses), with
the same reasons JSON (``{"booked": [...], "arrived": [...]}``, four reasons each). A chat without
messages gets its open-time score. ``p_booked``, ``p_arrived``, ``reasons``, ``model_version`` and
``updated_at`` are written; the reports' lead scores (``chat_summaries.p_*_lead``, the chat's opening)
and the message events (what the desk was shown then) stay as they are.

**Concurrency.** Chats are read in chunks of ``chunk`` ids (in id order, keyset-paginated), scored,
then written one chunk per transaction with a guarded ``UPDATE … WHERE id = :id AND n_messages = :n AND
consultant_id IS NOT DISTINCT FROM :c``: a live message (or a consultant claiming the chat) between the
read and the write wins, and the chat is counted as ``skipped``. The server's next message on any chat
scores with the model the server holds (it follows the champion alias, ``model_poll_seconds``).

**Where.** Without Ray, one loop on this process. With Ray (:func:`training.distributed.ray_session`:
a local Ray with ``workers`` CPUs, or the cluster at ``ray_address`` / ``RAY_ADDRESS``) each chunk is
one Ray task; the model goes to the object store once (``ray.put``) and each worker process
deserialises it once (kept per process, keyed by the object's id), not per task; only its scoring
parts travel (:func:`scoring_part`). The driver reads the
chunks and writes the results, at most ``2 × workers`` chunks in flight, so workers need no database
access (a SQLite file works with a cluster too).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from yuyue.models.bundle import YuyueModel
from yuyue.serving.audit import erasures
from yuyue.serving.db import UTCDateTime
from yuyue.serving.monitoring import _transcripts, stored_chat_state
from yuyue.serving.service import _reasons_json
from yuyue.serving.store import Filters, conversations
from yuyue.serving.tasks import tasks

log = logging.getLogger("yuyue.serving")

CHUNK = 200
# scores that moved by more than this count as moved (the report's ``moved``)
MOVED_EPS = 1e-9

_COLUMNS = (
    "id",
    "started_at",
    "visit",
    "department",
    "project",
    "consultant_id",
    "n_messages",
    "p_booked",
    "p_arrived",
)

_WRITE = (
    conversations.update()
    .where(
        conversations.c.id == sa.bindparam("_id"),
        conversations.c.n_messages == sa.bindparam("_n", type_=sa.Integer),
        conversations.c.consultant_id.is_not_distinct_from(sa.bindparam("_consultant", type_=sa.String)),
    )
    .values(
        p_booked=sa.bindparam("_p_booked", type_=sa.Float),
        p_arrived=sa.bindparam("_p_arrived", type_=sa.Float),
        reasons=sa.bindparam("_reasons", type_=sa.Text),
        model_version=sa.bindparam("_version", type_=sa.String),
        updated_at=sa.bindparam("_now", type_=UTCDateTime),
    )
)


@dataclass
class BackscoreResult:
    """What a run did (``yuyue score --from-store`` prints it)."""

    version: str
    selected: int = 0  # chats the rules select, not scored by this version yet, not erased
    rescored: int = 0  # written (a dry run: would be)
    moved: int = 0  # of those, chats whose p_booked or p_arrived changed
    skipped: int = 0  # changed meanwhile (a live message or a claim won), or a stored message unreadable
    current: int = 0  # selected by the rules but scored by this version already (left alone)
    erased: int = 0  # selected by the rules but masked (erasure, retention): left alone
    seconds: float = 0.0
    ray: bool = False
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _needs_score() -> sa.ColumnElement[bool]:
    """The selection rules (see the module docstring) over ``conversations``."""
    c, t = conversations.c, tasks.c
    lead = sa.and_(
        sa.or_(c.contact.is_(True), c.contact_seen.is_(True)), sa.not_(sa.func.coalesce(c.booked, False))
    )
    booking = sa.and_(c.booked.is_(True), c.arrived.is_(None))
    pending = sa.select(t.id).where(t.conversation_id == c.id, t.state != "done").exists()
    return sa.or_(sa.not_(c.closed), lead, booking, pending)


def _erased() -> sa.ColumnElement[bool]:
    return (
        sa.select(erasures.c.conversation_id).where(erasures.c.conversation_id == conversations.c.id).exists()
    )


def _scope(
    filters: Filters, exclude_hospitals: Collection[str] = (), exclude_departments: Collection[str] = ()
) -> list[sa.ColumnElement[bool]]:
    """The selection rules narrowed by ``filters``, without the chats of ``exclude_hospitals`` and of
    ``exclude_departments``."""
    where = [_needs_score(), *filters.where()]
    for column, excluded in (
        (conversations.c.hospital, exclude_hospitals),
        (conversations.c.department, exclude_departments),
    ):
        if excluded:
            where.append(sa.or_(column.is_(None), column.not_in(sorted(excluded))))
    return where


def selection(
    version: str,
    filters: Filters,
    exclude_hospitals: Collection[str] = (),
    exclude_departments: Collection[str] = (),
) -> list[sa.ColumnElement[bool]]:
    """The WHERE clauses of the chats a run with ``version`` re-scores."""
    return [
        *_scope(filters, exclude_hospitals, exclude_departments),
        conversations.c.model_version.is_distinct_from(version),
        sa.not_(_erased()),
    ]


def _count(engine: Engine, where: list[Any]) -> int:
    with engine.connect() as cx:
        return int(
            cx.execute(sa.select(sa.func.count()).select_from(conversations).where(*where)).scalar() or 0
        )


@dataclass
class _Chunk:
    rows: list[dict[str, Any]]
    msgs: dict[str, list[tuple[str, str, datetime]]]


def _chunks(engine: Engine, where: list[Any], size: int) -> Iterator[_Chunk]:
    """The selected chats in id order, ``size`` at a time, each chunk with its stored messages."""
    c = conversations.c
    cols = [c[name] for name in _COLUMNS]
    last: str | None = None
    while True:
        query = sa.select(*cols).where(*where)
        if last is not None:
            query = query.where(c.id > last)
        with engine.connect() as cx:
            rows = [dict(r) for r in cx.execute(query.order_by(c.id).limit(size)).mappings()]
        if not rows:
            return
        yield _Chunk(rows, _transcripts(engine, [r["id"] for r in rows]))
        last = rows[-1]["id"]


def score_chunk(
    model: YuyueModel, rows: list[dict[str, Any]], msgs: dict[str, list[tuple[str, str, datetime]]]
) -> list[dict[str, Any] | None]:
    """The live path's scores of each chat in ``rows`` after its stored messages ``msgs`` (None for a
    chat whose messages could not all be read back: its scores would not be the live path's)."""
    out: list[dict[str, Any] | None] = []
    for r in rows:
        chat_msgs = msgs.get(r["id"], [])
        if len(chat_msgs) != r["n_messages"]:
            out.append(None)
            continue
        scores = model.score(stored_chat_state(model, r, chat_msgs))
        out.append(
            {
                "p_booked": scores["booked"].probability if "booked" in scores else None,
                "p_arrived": scores["arrived"].probability if "arrived" in scores else None,
                "reasons": _reasons_json(scores),
            }
        )
    return out


# ---- on Ray ---------------------------------------------------------------------------------------
def scoring_part(model: YuyueModel) -> YuyueModel:
    """What :func:`score_chunk` uses of ``model`` (feature space, scorers, explainers, hospital): the reply
    suggester, the stage model and ``info`` are left out, so the workers neither receive them nor the
    run-time hooks a server attaches to them (a knowledge book holding a database engine)."""
    part = copy.copy(model)
    part.suggester = None
    part.stage_model = None
    part.info = {}
    return part


_WORKER_MODEL: dict[str, YuyueModel] = {}  # per Ray worker process: the model of the object id it holds


def _score_task(model_box: list[Any], rows: list[dict[str, Any]], msgs: dict[str, Any]) -> list[Any]:
    """A Ray task: :func:`score_chunk` with the model behind ``model_box[0]`` (an ObjectRef, boxed so
    that Ray does not resolve it per task), fetched once per worker process."""
    import ray

    ref = model_box[0]
    key = ref.hex()
    model = _WORKER_MODEL.get(key)
    if model is None:
        _WORKER_MODEL.clear()  # a new run's model replaces the last one's
        model = _WORKER_MODEL[key] = ray.get(ref)
    return score_chunk(model, rows, msgs)


def _scored_on_ray(
    model: YuyueModel, chunks: Iterator[_Chunk], workers: int | None
) -> Iterator[tuple[_Chunk, list[Any]]]:
    """``(chunk, scores)`` as the Ray tasks finish (any order), at most ``2 × workers`` in flight."""
    import ray
    from ray.exceptions import RayTaskError

    box = [ray.put(scoring_part(model))]
    task = ray.remote(_score_task)
    cpus = ray.cluster_resources().get("CPU", 1)  # type: ignore[no-untyped-call]  # ray's own
    width = 2 * (workers or max(1, int(cpus)))
    flight: dict[Any, _Chunk] = {}

    def done() -> Iterator[tuple[_Chunk, list[Any]]]:
        ready, _ = ray.wait(list(flight), num_returns=1)
        try:
            scores = ray.get(ready[0])
        except RayTaskError as exc:  # the task's own error, not Ray's wrapper
            raise exc.cause from None
        yield flight.pop(ready[0]), scores

    for chunk in chunks:
        while len(flight) >= width:
            yield from done()
        flight[task.remote(box, chunk.rows, chunk.msgs)] = chunk
    while flight:
        yield from done()


# ---- the run --------------------------------------------------------------------------------------
def backscore(
    engine: Engine,
    model: YuyueModel,
    version: str,
    *,
    filters: Filters | None = None,
    exclude_hospitals: Collection[str] = (),
    exclude_departments: Collection[str] = (),
    ray: bool = False,
    ray_address: str | None = None,
    workers: int | None = None,
    chunk: int = CHUNK,
    dry_run: bool = False,
    before_write: Callable[[list[str]], None] | None = None,
) -> BackscoreResult:
    """Re-score the selected chats with ``model`` as ``version`` (see the module docstring).

    ``exclude_hospitals`` / ``exclude_departments``: leave their chats out (served by their own model,
    re-scored by its own run: see :func:`runs`); ``ray``: chunks as Ray tasks (``ray_address`` implies it; ``workers``: the local Ray's CPUs);
    ``dry_run``: score, count, write nothing; ``before_write``: called with each chunk's ids just before
    its write (progress; the tests interleave a live message there)."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    t0 = time.perf_counter()
    filters = filters or Filters()
    ray = ray or ray_address is not None
    out = BackscoreResult(version, ray=ray, dry_run=dry_run)
    where = selection(version, filters, exclude_hospitals, exclude_departments)
    rules = _scope(filters, exclude_hospitals, exclude_departments)
    out.current = _count(engine, [*rules, conversations.c.model_version == version])
    out.erased = _count(engine, [*rules, conversations.c.model_version.is_distinct_from(version), _erased()])
    chunks = _chunks(engine, where, chunk)
    if ray:
        from yuyue.training.distributed import ray_session

        with ray_session(ray_address, num_cpus=workers):
            for part, scores in _scored_on_ray(model, chunks, workers):
                _write(engine, out, part, scores, before_write)
    else:
        for part in chunks:
            _write(engine, out, part, score_chunk(model, part.rows, part.msgs), before_write)
    out.seconds = round(time.perf_counter() - t0, 3)
    log.info("back-scored with version %s: %s", version, out.as_dict())
    return out


@dataclass
class Run:
    """One model's part of a back-scoring: its chats are ``filters`` less the excluded hospitals' and
    departments' (those served by their own model)."""

    model: YuyueModel
    version: str
    filters: Filters
    exclude_hospitals: tuple[str, ...] = ()
    exclude_departments: tuple[str, ...] = ()


def champion_needed(hospitals: Collection[str], filters: Filters, departments: Collection[str] = ()) -> bool:
    """Whether some chat of ``filters`` is the champion's: not when ``filters.hospital`` (or
    ``filters.department``) has its own model."""
    if filters.hospital is not None and filters.hospital in hospitals:
        return False
    return filters.department is None or filters.department not in departments


def runs(
    champion: tuple[YuyueModel, str] | None,
    hospitals: dict[str, tuple[YuyueModel, str]],
    filters: Filters,
    departments: dict[str, tuple[YuyueModel, str]] | None = None,
) -> list[Run]:
    """Each chat with the model the server would score it by (``ModelHolder.model_for``): the hospitals
    with their own model (``hospitals``: code -> (model, version), the ``hospital-*`` aliases) each by
    it, then the departments with their own model (``departments``, the ``department-*`` aliases) each
    by it for their chats of the other hospitals, every other chat by the champion; ``filters.hospital``
    / ``filters.department`` keep the matching runs only. ``champion`` may be None when it scores
    nothing (:func:`champion_needed` is false)."""
    wanted = {h: m for h, m in hospitals.items() if filters.hospital in (None, h)}
    own_hospital = filters.hospital is not None and filters.hospital in wanted
    depts = {
        d: m for d, m in (departments or {}).items() if filters.department in (None, d) and not own_hospital
    }
    out = []
    if champion_needed(wanted, filters, depts):
        if champion is None:
            raise ValueError(
                "the champion scores the chats of no hospital's or department's own model: it is needed"
            )
        out.append(Run(*champion, filters, tuple(sorted(wanted)), tuple(sorted(depts))))
    for hospital, (model, version) in sorted(wanted.items()):
        out.append(Run(model, version, replace(filters, hospital=hospital)))
    for department, (model, version) in sorted(depts.items()):
        out.append(Run(model, version, replace(filters, department=department), tuple(sorted(wanted))))
    return out


def _write(
    engine: Engine,
    out: BackscoreResult,
    part: _Chunk,
    scores: list[dict[str, Any] | None],
    before_write: Callable[[list[str]], None] | None,
) -> None:
    """One chunk's guarded updates in one transaction; counts into ``out``."""
    out.selected += len(part.rows)
    if before_write is not None:
        before_write([r["id"] for r in part.rows])
    now = datetime.now(UTC)
    todo: list[tuple[dict[str, Any], bool]] = []  # (parameters, whether its scores moved)
    for r, s in zip(part.rows, scores, strict=True):
        if s is None:
            out.skipped += 1
            log.warning("back-score: %s has unreadable stored messages; left as it is", r["id"])
            continue
        moved = _moved(r["p_booked"], s["p_booked"]) or _moved(r["p_arrived"], s["p_arrived"])
        params = {
            "_id": r["id"],
            "_n": r["n_messages"],
            "_consultant": r["consultant_id"],
            "_p_booked": s["p_booked"],
            "_p_arrived": s["p_arrived"],
            "_reasons": s["reasons"],
            "_version": out.version,
            "_now": now,
        }
        todo.append((params, moved))
    if out.dry_run:
        out.rescored += len(todo)
        out.moved += sum(moved for _, moved in todo)
        return
    with engine.begin() as cx:
        for params, moved in todo:
            if cx.execute(_WRITE, params).rowcount == 1:
                out.rescored += 1
                out.moved += moved
            else:
                out.skipped += 1


def _moved(old: float | None, new: float | None) -> bool:
    if old is None or new is None:
        return old is not new
    return abs(old - new) > MOVED_EPS


__all__ = ["CHUNK", "BackscoreResult", "backscore", "score_chunk", "selection"]
