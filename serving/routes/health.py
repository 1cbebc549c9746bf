"""The model's health on live chats: accuracy once outcomes are known, drift, shadow challenger,
suggestion acceptance (``serving/monitoring.py``); analysts and admins."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from yuyue.serving import monitoring
from yuyue.serving.auth import require_group
from yuyue.serving.deps import Analyst, State
from yuyue.serving.edge import RecentFilter
from yuyue.serving.errors import InvalidInput, errors
from yuyue.serving.schemas import _Answer
from yuyue.serving.shadow import shadow_of

router = APIRouter(tags=["analysts"])
log = logging.getLogger("yuyue.serving")

Num = float | None


class ReliabilityBin(_Answer):
    lo: float
    hi: float
    n: int
    mean_p: Num = Field(description="mean score of the chats in the bin")
    observed: Num = Field(description="share of them with the outcome")


class TargetMetrics(_Answer):
    n: int = Field(description="chats with a known outcome and a score")
    positives: int
    rate: Num
    mean_p: Num
    auc: Num
    ece: Num = Field(description="expected calibration error, 10 equal-width bins")
    brier: Num
    lift_at_10pct: Num = Field(description="outcome rate in the top 10 % by score over the base rate")
    reliability: list[ReliabilityBin] | None = None


class GroupHealth(_Answer):
    group: str
    chats: int
    booked: TargetMetrics
    arrived: TargetMetrics


class VersionHealth(_Answer):
    version: str
    role: Literal["champion", "challenger", "served"]
    chats: int = Field(description="chats in the window whose last message this version scored")
    basis: Literal["closed", "last_message"] = Field(
        description="the score ``live`` and ``groups`` judge: closed = the ended chat's score with the "
        "chat-closed flag, as ``yuyue evaluate`` (the version's model is loaded); last_message = the "
        "score of the chat's last message (what the desk saw)"
    )
    rescore_pending: int = Field(description="chats not yet rescored as ended (time budget); 0 when done")
    live: dict[str, TargetMetrics]
    live_last_message: dict[str, TargetMetrics] = Field(
        description="the same metrics on each chat's last-message score"
    )
    offline: dict[str, dict[str, Num]] | None = Field(description="the version's offline test metrics")
    live_minus_offline: dict[str, dict[str, Num]]
    by: str | None
    groups: list[GroupHealth]


class Delay(_Answer):
    n: int
    median: Num
    p90: Num
    max: Num


class Outcomes(_Answer):
    chats: int
    booked_known: int
    booked_coverage: Num
    bookings: int
    arrived_known: int
    arrived_coverage_of_booked: Num
    booked_delay_hours: Delay
    arrived_delay_hours: Delay


class ShadowTarget(_Answer):
    champion: TargetMetrics
    challenger: TargetMetrics
    challenger_minus_champion: dict[str, Num]


class ShadowWeek(_Answer):
    week: str
    chats: int
    booked: ShadowTarget


class ShadowComparison(_Answer):
    champion: str
    challenger: str
    chats: int = Field(description="chats with a known booking whose last message both versions scored")
    booked: ShadowTarget
    arrived: ShadowTarget
    weeks: list[ShadowWeek] = Field(description="the booked metrics of both by week (ISO week, desk time)")


class DriftBin(_Answer):
    bin: str
    reference: float
    live: float


class DriftFeature(_Answer):
    feature: str
    kind: Literal["categorical", "numeric", "concern"]
    psi: float = Field(description="population stability index, live vs training")
    noise: float = Field(description="the PSI two samples of these sizes show by chance, (k - 1)(1/n + 1/N)")
    excess: float = Field(description="psi - noise (at least 0): what the level judges")
    level: Literal["ok", "warn", "flag"]
    bins: list[DriftBin]


class Drift(_Answer):
    status: Literal["ok", "warn", "flag", "insufficient", "unavailable", "skipped"]
    detail: str
    warn_above: float | None = Field(None, description="a feature whose excess PSI is above this warns")
    flag_above: float | None = Field(None, description="a feature whose excess PSI is above this flags")
    features: list[DriftFeature]


class Acceptance(_Answer):
    shown: int
    used: int
    edited: int
    dismissed: int
    with_feedback: int
    acceptance_rate: Num = Field(description="(used + edited) / with feedback")
    feedback_rate: Num


class Suggestions(_Answer):
    overall: Acceptance
    by_version: list[dict[str, Any]]
    by_stage: list[dict[str, Any]]
    by_source: list[dict[str, Any]]


class Flags(_Answer):
    drift: bool
    drift_warn: bool
    accuracy: bool
    reasons: list[str]


class ModelHealth(_Answer):
    generated_at: str
    since: str | None
    until: str | None
    champion: str | None
    challenger: str | None
    versions: list[VersionHealth]
    outcomes: Outcomes
    shadow: list[ShadowComparison]
    shadow_timing: dict[str, Num] = Field(
        description="the challenger's milliseconds per message (this process)"
    )
    drift: Drift
    suggestions: Suggestions
    flags: Flags


VERSION = Annotated[str | None, Query(min_length=1, max_length=32, pattern=r"^[\w.\-:]+$")]


@router.get("/v1/model/health", response_model=ModelHealth, responses=errors(401, 403, 422, 429, 503))
def model_health(
    who: Analyst,
    state: State,
    since: RecentFilter | None = Query(None, description="chats started at or after (with offset)"),
    until: RecentFilter | None = Query(None, description="chats started before (with offset)"),
    version: VERSION = None,
    by: Literal["week", "hospital", "department", "engine", "consultant"] = Query(
        "week",
        description="slices of each version's live metrics: week, hospital, department, engine or consultant",
    ),
    drift: bool = Query(True, description="measure input drift (reads recent chats' texts)"),
) -> dict[str, Any]:
    """For the champion, the challenger and every version that scored chats in the window: AUC, ECE
    (with reliability bins), Brier and lift on the chats whose outcome is known, judged by the ended
    chat's score as ``yuyue evaluate`` (``basis``), overall and by ``by``, next to the offline test
    metrics; outcome coverage and delay; the challenger against the champion on the same chats; input
    drift (PSI per feature against the training profile); suggestion acceptance by version, stage and
    source; the flags. The full report's flags also go to ``/metrics`` (``yuyue_model_drift_flag``,
    ``yuyue_model_accuracy_flag``), refreshed every ``health_refresh_seconds`` in the background. It reads
    every hospital's chats: keys scoped to hospitals get 403."""
    require_group(who, "the model's health")
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} must carry a timezone offset, e.g. 2025-03-05T00:00:00+08:00")
    if since is not None and until is not None and until <= since:
        raise InvalidInput(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    return report(state, since=since, until=until, version=version, by=by, drift=drift)


def report(
    state: Any,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    version: str | None = None,
    by: str | None = "week",
    drift: bool = True,
    rescore_budget_s: float | None = monitoring.RESCORE_BUDGET_S,
) -> dict[str, Any]:
    """The health report of the app state ``state`` (also ``yuyue monitor``); the full report (no
    window, no version, with drift) sets the flag gauges."""
    shadow = shadow_of(state.service)
    shadow.poll()  # a challenger set since the last message shows up in the next report
    models = monitoring.served_models(state.models, shadow)
    out = monitoring.health_report(
        state.engine,
        state.settings,
        models,
        since=since,
        until=until,
        version=version,
        by=by,
        drift=drift,
        offline_lookup=monitoring.registry_offline(state.settings),
        rescore_budget_s=rescore_budget_s,
    )
    out["shadow_timing"] = shadow.timing()
    metrics = getattr(state, "metrics", None)
    if metrics is not None and version is None and since is None and until is None and drift:
        metrics.set_health(out)
    return out


class HealthRefresher:
    """The full health report every ``health_refresh_seconds`` in a thread of its own, so the gauges on
    ``/metrics`` stay fresh without anyone opening the report (the first run after at most 30 s).

    One run at a time, each in a worker thread: the scheduler waits for it at most ``timeout_s``, then
    logs that it is late and starts no other until it ends. A run's cost is bounded by the report's
    (``monitor_max_chats``, ``monitor_text_sample``, the rescoring budget); requests never wait for it;
    an error is logged, never raised, and the next run tries again."""

    def __init__(self, state: Any, interval: float):
        self.state = state
        self.interval = interval
        self.timeout_s = max(30.0, interval)
        self.rescore_budget_s = max(monitoring.RESCORE_BUDGET_S, min(120.0, interval / 2))
        self.runs = self.failures = 0
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._scheduler: threading.Thread | None = None

    def start(self) -> HealthRefresher:
        if self.interval > 0:
            self._scheduler = threading.Thread(target=self._loop, name="yuyue-health-refresh", daemon=True)
            self._scheduler.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        wait = min(self.interval, 30.0)
        while not self._stop.wait(wait):
            wait = self.interval
            if self._worker is not None and self._worker.is_alive():
                log.warning("model health refresh: the last run is still going; this one is skipped")
                continue
            self._worker = threading.Thread(target=self.run_once, name="yuyue-health-report", daemon=True)
            self._worker.start()
            self._worker.join(self.timeout_s)
            if self._worker.is_alive():
                log.warning("model health refresh: still running after %.0f s", self.timeout_s)

    def run_once(self) -> bool:
        """One full report (the gauges set); False, logged, when it failed."""
        t0 = time.perf_counter()
        try:
            out = report(self.state, rescore_budget_s=self.rescore_budget_s)
        except Exception as exc:  # logged, never raised: the next run tries again
            self.failures += 1
            log.warning("model health refresh failed: %s: %s", type(exc).__name__, exc)
            return False
        self.runs += 1
        log.info(
            "model health refreshed in %.1f s: drift %s, flags %s",
            time.perf_counter() - t0,
            out["drift"]["status"],
            {k: v for k, v in out["flags"].items() if k != "reasons"},
        )
        return True
