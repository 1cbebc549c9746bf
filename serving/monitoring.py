"""How the served models do on live chats: accuracy once outcomes are known, input drift, suggestion
acceptance, and the challenger next to the champion (``GET /v1/model/health``, ``yuyue monitor``).

Framework-free: :func:`health_report` reads the event store's tables with SQLAlchemy and returns plain
data.

- **Accuracy.** A chat with a known outcome (``booked`` / ``arrived`` not null) is judged as ``yuyue
  evaluate`` judges a chat of its test data: by the score of the *ended* chat, its whole transcript
  with the chat-closed flag set (the ``closed`` row of training). The version that scored the chat
  last (``conversations.model_version``) rescores it from the stored messages when that model is loaded
  (the champion, the challenger), once per chat and length (cached), within a time budget per report
  (``basis: "closed"``). Chats of versions not loaded, or beyond the budget, fall back to the score of
  their last message (``conversations.p_booked`` / ``p_arrived``, what the desk saw; ``basis:
  "last_message"``, whose ECE reads higher: the closed flag is what calibrates an ended chat); the
  last-message metrics are always given too (``live_last_message``). Per version: AUC, ECE (10
  equal-width bins, with the bins for a reliability plot), Brier score and lift in the top 10 % (the
  definitions of ``yuyue evaluate``, ``training/metrics.py``), overall and by week, hospital, department, engine
  or consultant, next to the version's offline test metrics (``info["metrics"]`` or the MLflow run).
- **Outcomes.** Coverage (the share of chats whose booking / arrival is known) and delay (from the
  chat's start to its first recorded booking or arrival outcome).
- **Shadow.** Where the last message of a chat also holds the challenger's scores (``serving/shadow.py``),
  the champion's and the challenger's metrics on exactly those chats, with the differences (both on
  their last-message scores: the same footing for both).
- **Drift.** The live chats' profile (``features/profile.py``) against the training profile stored with
  the champion (``info["profile"]``): population stability index per visit-trace feature, department
  mix, messages and visitor turns per ended chat, visitor message length, concern shares.
  Above ``monitor_psi_warn`` a feature warns, above ``monitor_psi_flag`` it raises the drift flag.
- **Suggestions.** Shown, used, edited, dismissed and the acceptance rate ((used + edited) / with
  feedback) by model version, by the suggested reply's stage and by its source.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from yuyue.config import Settings
from yuyue.data.contract import Visit
from yuyue.features.profile import ProfileCounter, compare
from yuyue.features.state import ConversationState
from yuyue.models.bundle import YuyueModel
from yuyue.serving.store import conversations, events, suggestions
from yuyue.training.metrics import brier, ece, lift_at, safe_auc

log = logging.getLogger("yuyue.serving")

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
TARGETS = ("booked", "arrived")
GROUPS = ("week", "hospital", "department", "engine", "consultant")
RELIABILITY_BINS = 10
OFFLINE_KEYS = ("n", "auc", "ece", "brier", "lift_at_10pct")
RESCORE_BUDGET_S = 10.0  # per report (a request); the background refresh gives itself more


@dataclass
class Served:
    """A model the report can name: its version, role and offline test metrics (``info["metrics"]``)."""

    version: str
    role: str  # champion | challenger
    model: YuyueModel | None = None
    offline: dict[str, Any] = field(default_factory=dict)


def served_models(holder: Any, shadow: Any) -> list[Served]:
    """The champion in ``holder`` (a ``ModelHolder``) and the challenger in ``shadow``, when set."""
    out = []
    if holder.ready:
        model, version = holder.get()
        out.append(Served(version, "champion", model, offline_metrics(model.info.get("metrics"))))
    current = shadow.get() if shadow is not None else None
    if current is not None and current[1] not in {m.version for m in out}:
        model, version = current
        out.append(Served(version, "challenger", model, offline_metrics(model.info.get("metrics"))))
    return out


_REGISTRY_CACHE: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}
REGISTRY_CACHE_S = 60.0


def registry_offline(settings: Settings) -> Callable[[list[str]], dict[str, dict[str, Any]]]:
    """A look-up of registered versions' offline test metrics (``booked.auc``, ``booked.ece``,
    ``arrived.auc`` of their MLflow runs), cached a minute; versions that are not registry numbers
    (a served directory, a test label) and an unreachable registry give none."""

    def lookup(versions: list[str]) -> dict[str, dict[str, Any]]:
        if not any(v.isdigit() for v in versions):
            return {}
        key = str(settings.resolved_tracking_uri)
        hit = _REGISTRY_CACHE.get(key)
        if hit is None or time.monotonic() - hit[0] > REGISTRY_CACHE_S:
            try:
                from yuyue.training import registry

                found = {
                    str(row["version"]): offline_metrics(
                        {k: row.get(k) for k in ("booked.auc", "booked.ece", "arrived.auc")}
                    )
                    for row in registry.list_versions(settings)
                }
            except Exception as exc:  # the report goes on without them
                log.warning("registry metrics unavailable for the health report: %s", exc)
                found = {}
            hit = _REGISTRY_CACHE[key] = (time.monotonic(), found)
        return {v: hit[1][v] for v in versions if v in hit[1]}

    return lookup


# ---- metrics -------------------------------------------------------------------------------
def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def score_metrics(y: Sequence[float], p: Sequence[float], reliability: bool = False) -> dict[str, Any]:
    """AUC, ECE, Brier, lift at 10 % (as ``yuyue evaluate``) of scores ``p`` against outcomes ``y``."""
    ya, pa = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    n = len(ya)
    out: dict[str, Any] = {
        "n": n,
        "positives": int(ya.sum()) if n else 0,
        "rate": _r(ya.mean()) if n else None,
        "mean_p": _r(pa.mean()) if n else None,
        "auc": _r(safe_auc(ya, pa)) if n else None,
        "ece": _r(ece(ya, pa)) if n else None,
        "brier": _r(brier(ya, pa))
        if n and len(np.unique(ya)) > 1
        else (_r(float(np.mean((pa - ya) ** 2))) if n else None),
        "lift_at_10pct": _r(lift_at(ya, pa, 0.1), 3) if n else None,
    }
    if reliability:
        out["reliability"] = reliability_bins(ya, pa)
    return out


def reliability_bins(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict[str, Any]]:
    """The ECE's equal-width bins: chats, mean score and observed rate per bin (empty bins left out)."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append(
                {
                    "lo": round(b / bins, 2),
                    "hi": round((b + 1) / bins, 2),
                    "n": int(m.sum()),
                    "mean_p": _r(p[m].mean()),
                    "observed": _r(y[m].mean()),
                }
            )
    return out


def offline_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The offline test metrics per target (``booked.auc`` … of ``yuyue evaluate``), or {}."""
    if not metrics:
        return {}
    out: dict[str, Any] = {}
    for t in TARGETS:
        vals = {k: metrics.get(f"{t}.{k}") for k in OFFLINE_KEYS}
        if any(v is not None for v in vals.values()):
            out[t] = vals
    return out


# ---- reading the store ---------------------------------------------------------------------
def _week(at: datetime) -> str:
    year, week, _ = at.astimezone(LOCAL_TZ).isocalendar()
    return f"{year}-W{week:02d}"


def _chats(
    engine: Engine, since: datetime | None, until: datetime | None, limit: int
) -> list[dict[str, Any]]:
    c = conversations.c
    cols = [
        c.id,
        c.hospital,
        c.department,
        c.project,
        c.engine,
        c.consultant_id,
        c.started_at,
        c.last_at,
        c.model_version,
        c.p_booked,
        c.p_arrived,
        c.booked,
        c.arrived,
        c.n_messages,
        c.n_visitor,
        c.closed,
        c.visit,
    ]
    where = []
    if since is not None:
        where.append(c.started_at >= since)
    if until is not None:
        where.append(c.started_at < until)
    query = sa.select(*cols).where(*where).order_by(c.started_at.desc(), c.id.desc()).limit(limit)
    with engine.connect() as cx:
        return [dict(r) for r in cx.execute(query).mappings()]


def _window(query: sa.Select[Any], since: datetime | None, until: datetime | None) -> sa.Select[Any]:
    c = conversations.c
    if since is not None:
        query = query.where(c.started_at >= since)
    if until is not None:
        query = query.where(c.started_at < until)
    return query


def _outcome_times(
    engine: Engine, since: datetime | None, until: datetime | None
) -> dict[str, dict[str, datetime]]:
    """Per chat, when its booking and arrival outcome were first recorded."""
    e = events.c
    query = _window(
        sa.select(e.conversation_id, e.recorded_at, e.payload)
        .select_from(events.join(conversations, conversations.c.id == e.conversation_id))
        .where(e.kind == "outcome")
        .order_by(e.id),
        since,
        until,
    )
    out: dict[str, dict[str, datetime]] = {}
    with engine.connect() as cx:
        for cid, at, payload in cx.execute(query):
            try:
                values = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            seen = out.setdefault(cid, {})
            for t in TARGETS:
                if values.get(t) is not None and t not in seen:
                    seen[t] = at
    return out


def _last_payloads(engine: Engine, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The payload of each chat's last message (its scores, shadow scores), for chats in ``ids``."""
    c, e = conversations.c, events.c
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as cx:
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            query = (
                sa.select(e.conversation_id, e.payload)
                .select_from(events.join(conversations, conversations.c.id == e.conversation_id))
                .where(e.kind == "message", e.seq == c.n_messages - 1, e.conversation_id.in_(chunk))
            )
            for cid, payload in cx.execute(query):
                try:
                    out[cid] = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
    return out


def _messages(engine: Engine, ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    """The (role, text) of the messages of the chats in ``ids``, in order."""
    e = events.c
    out: dict[str, list[tuple[str, str]]] = {i: [] for i in ids}
    with engine.connect() as cx:
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            query = (
                sa.select(e.conversation_id, e.payload)
                .where(e.kind == "message", e.conversation_id.in_(chunk))
                .order_by(e.conversation_id, e.seq)
            )
            for cid, payload in cx.execute(query):
                try:
                    m = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                out[cid].append((str(m.get("role")), str(m.get("text") or "")))
    return out


# ---- the score of the ended chat (as ``yuyue evaluate`` reads a chat) ---------------------------------
class _LRU:
    """A bounded, thread-safe map (the report runs in request threads and the refresh thread)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_CLOSED = _LRU(200_000)  # (model object id, chat id, messages) -> {"booked": p, "arrived": p}


def _transcripts(engine: Engine, ids: list[str]) -> dict[str, list[tuple[str, str, datetime]]]:
    """The (role, text, time) of the stored messages of the chats in ``ids``, in order."""
    e = events.c
    out: dict[str, list[tuple[str, str, datetime]]] = {i: [] for i in ids}
    with engine.connect() as cx:
        for i in range(0, len(ids), 200):
            query = (
                sa.select(e.conversation_id, e.payload)
                .where(e.kind == "message", e.conversation_id.in_(ids[i : i + 200]))
                .order_by(e.conversation_id, e.seq)
            )
            for cid, payload in cx.execute(query):
                try:
                    m = orjson.loads(payload)
                    at = datetime.fromisoformat(m["at"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
                out[cid].append((str(m.get("role")), str(m.get("text") or ""), at))
    return out


def ended_chat_scores(
    model: YuyueModel, row: dict[str, Any], msgs: list[tuple[str, str, datetime]]
) -> dict[str, float]:
    """The model's scores of the whole stored chat with the chat-closed flag set: the ``closed`` row
    ``yuyue evaluate`` scores for a chat of its data."""
    state = stored_chat_state(model, row, msgs)
    return {name: s.probability for name, s in model.score(state, closed=True, top=0).items()}


def stored_chat_state(
    model: YuyueModel, row: dict[str, Any], msgs: list[tuple[str, str, datetime]]
) -> ConversationState:
    """The chat's feature state rebuilt from its ``conversations`` row and stored messages (``msgs``:
    :func:`_transcripts`), in the desk's time zone as the live path folds them."""
    visit = None
    if row.get("visit"):
        try:
            visit = Visit.model_validate_json(row["visit"])
        except ValueError:
            visit = None
    hospital = {
        k: v
        for k, v in model.hospital.items()
        if k in ("hospital_name", "hospital_city", "hospital_province")
    }
    state = ConversationState.start(
        started_at=row["started_at"].astimezone(LOCAL_TZ),
        visit=visit,
        department=row.get("department"),
        project=row.get("project"),
        consultant_id=row.get("consultant_id"),
        **hospital,
    )
    for role, text, at in msgs:
        state.update(role, text, at.astimezone(LOCAL_TZ))
    return state


def rescore_ended(
    engine: Engine, rows: list[dict[str, Any]], models: list[Served], budget_s: float | None
) -> dict[str, int]:
    """Set ``row["c_booked"]`` / ``row["c_arrived"]`` (:func:`ended_chat_scores`) on the chats with a
    known booking that a loaded model scored last, newest first, cached, until ``budget_s`` is spent;
    returns the chats left without one per version."""
    loaded = {m.version: m.model for m in models if m.model is not None and m.model.scorers}
    todo: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        model = loaded.get(str(r["model_version"]))
        if model is None or r["booked"] is None or not r["n_messages"]:
            continue
        hit = _CLOSED.get((id(model), r["id"], r["n_messages"]))
        if hit is not None:
            r["c_booked"], r["c_arrived"] = hit.get("booked"), hit.get("arrived")
        else:
            todo.setdefault(str(r["model_version"]), []).append(r)
    deadline = None if budget_s is None else time.monotonic() + budget_s
    left = {v: len(rs) for v, rs in todo.items()}
    for version, pending in todo.items():
        model = loaded[version]
        for i in range(0, len(pending), 100):
            if deadline is not None and time.monotonic() > deadline:
                return left
            chunk = pending[i : i + 100]
            msgs = _transcripts(engine, [r["id"] for r in chunk])
            for r in chunk:
                scores = ended_chat_scores(model, r, msgs.get(r["id"], []))
                _CLOSED.put((id(model), r["id"], r["n_messages"]), scores)
                r["c_booked"], r["c_arrived"] = scores.get("booked"), scores.get("arrived")
                left[version] -= 1
    return left


# ---- the parts of the report ------------------------------------------------------------------
def outcome(row: dict[str, Any], target: str) -> bool | None:
    """A chat's known outcome: its booking; its arrival, which is also known (no) for a chat that was
    not booked (as ``yuyue evaluate`` reads the data); None while unknown."""
    value = row.get(target)
    if value is None and target == "arrived" and row.get("booked") is False:
        return False
    return None if value is None else bool(value)


def _target_pairs(rows: Iterable[dict[str, Any]], target: str, score: str) -> tuple[list[float], list[float]]:
    y, p = [], []
    for r in rows:
        known = outcome(r, target)
        if known is not None and r.get(score) is not None:
            y.append(float(known))
            p.append(float(r[score]))
    return y, p


def _group_key(row: dict[str, Any], by: str) -> str:
    if by == "week":
        return _week(row["started_at"])
    value = row.get("consultant_id" if by == "consultant" else by)
    return str(value) if value is not None else "(none)"


def version_section(
    rows: list[dict[str, Any]],
    version: str,
    role: str,
    offline: dict[str, Any],
    by: str | None,
    pending: int = 0,
) -> dict[str, Any]:
    """One version's live metrics on the chats it scored last, overall and per group: on the ended
    chats' scores when every one of them has it (``basis: "closed"``), else on the last messages'."""
    labelled = [r for r in rows if r["booked"] is not None]
    closed = bool(labelled) and not pending and all(r.get("c_booked") is not None for r in labelled)
    key = "c_" if closed else "p_"
    live = {t: score_metrics(*_target_pairs(rows, t, key + t), reliability=True) for t in TARGETS}
    groups = []
    if by is not None:
        keyed: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            keyed.setdefault(_group_key(r, by), []).append(r)
        for group in sorted(keyed):
            g = keyed[group]
            groups.append(
                {
                    "group": group,
                    "chats": len(g),
                    **{t: score_metrics(*_target_pairs(g, t, key + t)) for t in TARGETS},
                }
            )
    delta = {}
    for t in TARGETS:
        off = offline.get(t) or {}
        delta[t] = {
            k: _r(live[t][k] - off[k]) if live[t].get(k) is not None and off.get(k) is not None else None
            for k in ("auc", "ece", "brier")
        }
    return {
        "version": version,
        "role": role,
        "chats": len(rows),
        "basis": "closed" if closed else "last_message",
        "rescore_pending": pending,
        "live": live,
        "live_last_message": {t: score_metrics(*_target_pairs(rows, t, "p_" + t)) for t in TARGETS},
        "offline": offline or None,
        "live_minus_offline": delta,
        "by": by,
        "groups": groups,
    }


def outcome_section(rows: list[dict[str, Any]], times: dict[str, dict[str, datetime]]) -> dict[str, Any]:
    """Coverage and delay of the outcomes of ``rows``."""
    n = len(rows)
    known_b = sum(r["booked"] is not None for r in rows)
    booked = sum(bool(r["booked"]) for r in rows)
    known_a = sum(r["arrived"] is not None for r in rows if r["booked"])
    out: dict[str, Any] = {
        "chats": n,
        "booked_known": known_b,
        "booked_coverage": _r(known_b / n) if n else None,
        "bookings": booked,
        "arrived_known": known_a,
        "arrived_coverage_of_booked": _r(known_a / booked) if booked else None,
    }
    for t in TARGETS:
        hours = [
            (times[r["id"]][t] - r["started_at"]).total_seconds() / 3600
            for r in rows
            if t in times.get(r["id"], {})
        ]
        out[f"{t}_delay_hours"] = (
            {
                "n": len(hours),
                "median": _r(float(np.median(hours)), 2),
                "p90": _r(float(np.percentile(hours, 90)), 2),
                "max": _r(max(hours), 2),
            }
            if hours
            else {"n": 0, "median": None, "p90": None, "max": None}
        )
    return out


def _shadow_target(items: list[tuple[dict[str, Any], dict[str, float]]], t: str) -> dict[str, Any]:
    y, pc, ps = [], [], []
    for r, scores in items:
        known = outcome(r, t)
        if known is None or r.get("p_" + t) is None or scores.get(t) is None:
            continue
        y.append(float(known))
        pc.append(float(r["p_" + t]))
        ps.append(float(scores[t]))
    a, b = score_metrics(y, pc), score_metrics(y, ps)
    return {
        "champion": a,
        "challenger": b,
        "challenger_minus_champion": {
            k: _r(b[k] - a[k]) if a[k] is not None and b[k] is not None else None
            for k in ("auc", "ece", "brier")
        },
    }


def shadow_section(rows: list[dict[str, Any]], payloads: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (champion, challenger) pair: both versions' metrics on the chats whose last message both
    scored, overall and by week (``weeks``: booked metrics of both, for a chart on shared axes)."""
    pairs: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, float]]]] = {}
    for r in rows:
        shadow = (payloads.get(r["id"]) or {}).get("shadow")
        if not isinstance(shadow, dict) or not isinstance(shadow.get("scores"), dict):
            continue
        key = (str(r["model_version"]), str(shadow.get("version")))
        pairs.setdefault(key, []).append((r, shadow["scores"]))
    out = []
    for (champion, challenger), items in sorted(pairs.items()):
        section: dict[str, Any] = {"champion": champion, "challenger": challenger, "chats": len(items)}
        for t in TARGETS:
            section[t] = _shadow_target(items, t)
        weeks: dict[str, list[tuple[dict[str, Any], dict[str, float]]]] = {}
        for item in items:
            weeks.setdefault(_week(item[0]["started_at"]), []).append(item)
        section["weeks"] = [
            {"week": w, "chats": len(weeks[w]), "booked": _shadow_target(weeks[w], "booked")}
            for w in sorted(weeks)
        ]
        out.append(section)
    return out


def suggestion_section(
    engine: Engine, since: datetime | None, until: datetime | None, models: list[Served]
) -> dict[str, Any]:
    """Acceptance of the suggestions shown, by version, by the reply's stage and by source."""
    s, e = suggestions.c, events.c
    query = _window(
        sa.select(e.payload, s.source, s.reply_id, s.feedback).select_from(
            suggestions.join(conversations, conversations.c.id == s.conversation_id).join(
                events,
                sa.and_(e.conversation_id == s.conversation_id, e.seq == s.seq, e.kind == "message"),
            )
        ),
        since,
        until,
    )
    stage_of: dict[str, str] = {}
    for m in models:
        pool = getattr(getattr(m.model, "suggester", None), "pool", None)
        if pool is not None:
            for entry in pool:
                stage_of.setdefault(entry.id, entry.stage or "(none)")
    tallies: dict[str, dict[str, dict[str, int]]] = {"version": {}, "stage": {}, "source": {}}
    with engine.connect() as cx:
        for payload, source, reply_id, feedback in cx.execute(query):
            keys = {
                "version": _payload_version(payload),
                "stage": stage_of.get(reply_id or "", "(unknown)"),
                "source": source or "(none)",
            }
            for dim, key in keys.items():
                t = tallies[dim].setdefault(key, {"shown": 0, "used": 0, "edited": 0, "dismissed": 0})
                t["shown"] += 1
                if feedback in ("used", "edited", "dismissed"):
                    t[feedback] += 1
    overall = {"shown": 0, "used": 0, "edited": 0, "dismissed": 0}
    for t in tallies["source"].values():
        for k in overall:
            overall[k] += t[k]
    return {
        "overall": _acceptance(overall),
        **{
            f"by_{dim}": [{dim: key, **_acceptance(t)} for key, t in sorted(tallies[dim].items())]
            for dim in ("version", "stage", "source")
        },
    }


def _payload_version(payload: str) -> str:
    try:
        return str(orjson.loads(payload).get("model_version") or "(none)")
    except orjson.JSONDecodeError:
        return "(none)"


def _acceptance(t: dict[str, int]) -> dict[str, Any]:
    answered = t["used"] + t["edited"] + t["dismissed"]
    return {
        **t,
        "with_feedback": answered,
        "acceptance_rate": _r((t["used"] + t["edited"]) / answered) if answered else None,
        "feedback_rate": _r(answered / t["shown"]) if t["shown"] else None,
    }


# ---- drift -----------------------------------------------------------------------------------
class _ConcernCache:
    """Texts read once: the concerns and visitor message lengths of a chat with ``n`` messages."""

    def __init__(self, size: int = 20_000):
        self.size = size
        self._items: OrderedDict[tuple[str, int], list[tuple[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> list[tuple[str, str]] | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[str, int], value: list[tuple[str, str]]) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_TEXTS = _ConcernCache()


def _ended(row: dict[str, Any], now: datetime, idle_s: float) -> bool:
    return bool(row["closed"]) or row["booked"] is not None or (now - row["last_at"]).total_seconds() > idle_s


def live_profile(
    engine: Engine,
    rows: list[dict[str, Any]],
    hospital_name: str,
    text_sample: int,
    now: datetime,
    idle_s: float,
) -> dict[str, Any]:
    """The profile (``features/profile.py``) of the chats in ``rows`` (newest first): visit facts of
    all, lengths of the ended ones, texts (concerns, message lengths) of the newest ``text_sample``."""
    counter = ProfileCounter(hospital_name, text_sample)
    with_text = [r for r in rows if r["n_messages"] and _ended(r, now, idle_s)][:text_sample]
    missing = [r["id"] for r in with_text if _TEXTS.get((r["id"], r["n_messages"])) is None]
    fetched = _messages(engine, missing) if missing else {}
    for cid, msgs in fetched.items():
        _TEXTS.put((cid, len(msgs)), msgs)
    for r in rows:
        visit = None
        if r.get("visit"):
            try:
                visit = Visit.model_validate_json(r["visit"])
            except ValueError:
                visit = None
        counter.add_visit(visit, r.get("department"))
        if _ended(r, now, idle_s):
            counter.add_lengths(int(r["n_messages"]), int(r["n_visitor"]))
    for r in with_text:
        msgs = _TEXTS.get((r["id"], r["n_messages"])) or fetched.get(r["id"]) or []
        counter.add_texts(msgs)
    return counter.result(top=None)


def drift_section(
    engine: Engine,
    rows: list[dict[str, Any]],
    champion: Served | None,
    settings: Settings,
    now: datetime,
) -> dict[str, Any]:
    warn, flag = settings.monitor_psi_warn, settings.monitor_psi_flag
    base: dict[str, Any] = {
        "reference_version": champion.version if champion else None,
        "live_chats": len(rows),
        "warn_above": warn,
        "flag_above": flag,
        "features": [],
    }
    model = champion.model if champion is not None else None
    reference = model.info.get("profile") if model is not None else None
    if model is None or not reference:
        return {
            **base,
            "status": "unavailable",
            "detail": "the champion's bundle has no training profile (trained before profiles were stored): "
            "retrain to measure drift",
        }
    if len(rows) < settings.monitor_min_chats:
        return {
            **base,
            "status": "insufficient",
            "reference_chats": reference.get("n_chats"),
            "detail": f"{len(rows)} live chats in the window; drift needs at least {settings.monitor_min_chats} "
            "(monitor_min_chats)",
        }
    # the keyword categories read the hospital's brand: the name the profile was counted with
    hospital = model.hospital.get("hospital_name") or settings.hospital_name
    live = live_profile(engine, rows, hospital, settings.monitor_text_sample, now, settings.monitor_idle_s)
    features = compare(reference, live, warn, flag)
    levels = {f["level"] for f in features}
    status = "flag" if "flag" in levels else "warn" if "warn" in levels else "ok"
    worst = sorted(features, key=lambda f: -f["psi"])[:3]
    return {
        **base,
        "status": status,
        "reference_chats": reference.get("n_chats"),
        "live_text_chats": live["n_text_chats"],
        "detail": "largest PSI: " + ", ".join(f"{f['feature']} {f['psi']:.3f}" for f in worst),
        "features": features,
    }


# ---- the report --------------------------------------------------------------------------------
def health_report(
    engine: Engine,
    settings: Settings,
    models: list[Served],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    version: str | None = None,
    by: str | None = "week",
    drift: bool = True,
    offline_lookup: Callable[[list[str]], dict[str, dict[str, Any]]] | None = None,
    now: datetime | None = None,
    rescore_budget_s: float | None = RESCORE_BUDGET_S,
) -> dict[str, Any]:
    """The model health report (see the module docstring); ``models``: the champion and the challenger
    when one is set; ``offline_lookup``: the offline metrics of other versions that served, by version;
    ``rescore_budget_s``: seconds spent scoring ended chats not scored before (None: no limit)."""
    if by is not None and by not in GROUPS:
        raise ValueError(f"by must be one of {', '.join(GROUPS)}, not {by!r}")
    t0 = time.perf_counter()
    now = now or datetime.now(UTC)
    rows = _chats(engine, since, until, settings.monitor_max_chats)
    if len(rows) == settings.monitor_max_chats:  # the window holds more: read the rest for those chats only
        since = max(since, rows[-1]["started_at"]) if since is not None else rows[-1]["started_at"]
    champion = next((m for m in models if m.role == "champion"), None)
    challenger = next((m for m in models if m.role == "challenger"), None)
    pending = rescore_ended(engine, rows, models, rescore_budget_s)
    sections = _version_sections(rows, models, version, by, offline_lookup, pending)
    labelled = [r for r in rows if r["booked"] is not None and r["n_messages"]]
    payloads = _last_payloads(engine, [r["id"] for r in labelled])
    shadow = shadow_section(labelled, payloads)
    if version is not None:
        shadow = [s for s in shadow if version in (s["champion"], s["challenger"])]
    out: dict[str, Any] = {
        "generated_at": now.isoformat(),
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "max_chats": settings.monitor_max_chats,
        "champion": champion.version if champion else None,
        "challenger": challenger.version if challenger else None,
        "versions": sections,
        "outcomes": outcome_section(rows, _outcome_times(engine, since, until)),
        "shadow": shadow,
        "suggestions": suggestion_section(engine, since, until, models),
        "drift": drift_section(engine, rows, champion, settings, now)
        if drift
        else {"status": "skipped", "detail": "drift=false", "features": []},
    }
    out["flags"] = flags(out, settings)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _version_sections(
    rows: list[dict[str, Any]],
    models: list[Served],
    version: str | None,
    by: str | None,
    offline_lookup: Callable[[list[str]], dict[str, dict[str, Any]]] | None,
    pending: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """:func:`version_section` of ``version``, else of the models given and every version that served."""
    known_models = {m.version: m for m in models}
    by_version: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_version.setdefault(str(r["model_version"] or "(none)"), []).append(r)
    wanted = (
        [version]
        if version is not None
        else sorted(set(by_version) | set(known_models), key=lambda v: (v not in known_models, v))
    )
    others = [v for v in wanted if v not in known_models and v != "(none)"]
    looked_up = offline_lookup(others) if offline_lookup is not None and others else {}
    sections = []
    for v in wanted:
        m = known_models.get(v)
        offline = m.offline if m is not None else looked_up.get(v, {})
        role = m.role if m is not None else "served"
        left = (pending or {}).get(v, 0)
        sections.append(version_section(by_version.get(v, []), v, role, offline, by, left))
    return sections


def flags(report: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The drift flag (a feature's PSI above ``monitor_psi_flag``) and the accuracy flag (the champion's
    live booking AUC more than ``monitor_auc_drop`` under its offline test AUC, or its live ECE above
    ``monitor_ece_max``, on at least ``monitor_min_outcomes`` chats with both outcomes present)."""
    reasons = []
    drift = report["drift"]
    drift_flag = drift.get("status") == "flag"
    if drift_flag:
        reasons.append(
            "drift: "
            + ", ".join(
                f"{f['feature']} PSI {f['psi']:.3f}" for f in drift["features"] if f["level"] == "flag"
            )
        )
    accuracy_flag = False
    champ = next((s for s in report["versions"] if s["role"] == "champion"), None)
    if champ is not None:
        live = champ["live"]["booked"]
        off = (champ["offline"] or {}).get("booked") or {}
        if live["n"] >= settings.monitor_min_outcomes and live["auc"] is not None:
            if off.get("auc") is not None and live["auc"] < off["auc"] - settings.monitor_auc_drop:
                accuracy_flag = True
                reasons.append(
                    f"accuracy: champion {champ['version']} booked AUC {live['auc']:.3f} live vs {off['auc']:.3f} "
                    f"offline (more than {settings.monitor_auc_drop} lower)"
                )
            if live["ece"] is not None and live["ece"] > settings.monitor_ece_max:
                accuracy_flag = True
                reasons.append(
                    f"calibration: champion {champ['version']} booked ECE {live['ece']:.3f} live "
                    f"(above {settings.monitor_ece_max})"
                )
    return {
        "drift": drift_flag,
        "drift_warn": drift.get("status") == "warn",
        "accuracy": accuracy_flag,
        "reasons": reasons,
    }
