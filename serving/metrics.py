"""Prometheus metrics of one app, adding up across worker processes under ``yuyue serve --workers N``.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``yuyue serve`` sets it for N > 1), every worker writes its
values to files there and ``/metrics`` reads all of them, so a counter scraped from any worker is the
sum over workers instead of that worker's own count.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "yuyue_request_seconds",
            "request latency by endpoint",
            ["method", "endpoint", "status"],
            registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56),
        )
        self.feedback = Counter(
            "yuyue_suggestion_feedback_total", "suggestion feedback", ["action"], registry=self.registry
        )
        self.shown = Counter("yuyue_suggestions_shown_total", "suggestions shown", registry=self.registry)
        self.model = Gauge(
            "yuyue_model_info",
            "model version in use (value 1)",
            ["version"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.cache_misses = Gauge(
            "yuyue_session_cache_misses",
            "chats rebuilt from the event store",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        # the flags of the last model health report (serving/monitoring.py)
        self.drift_flag = Gauge(
            "yuyue_model_drift_flag",
            "1 when an input feature's PSI is above monitor_psi_flag (last health report)",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.drift_psi = Gauge(
            "yuyue_model_drift_psi_max",
            "largest input PSI, live chats vs the training profile (last health report)",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.accuracy_flag = Gauge(
            "yuyue_model_accuracy_flag",
            "1 when the champion's live booking AUC or ECE is off its limits (last health report)",
            registry=self.registry,
            multiprocess_mode="livemax",
        )

        self.health_at = Gauge(
            "yuyue_model_health_timestamp_seconds",
            "when the last full health report behind the flags was computed (unix time; 0: none yet)",
            registry=self.registry,
            multiprocess_mode="livemax",
        )

    def set_health(self, report: dict[str, Any]) -> None:
        """The flag gauges from a full health report (``serving/monitoring.py``)."""
        self.drift_flag.set(float(report["flags"]["drift"]))
        self.accuracy_flag.set(float(report["flags"]["accuracy"]))
        self.drift_psi.set(max((f["psi"] for f in report["drift"]["features"]), default=0.0))
        self.health_at.set(time.time())

    def set_model(self, version: str) -> None:
        self.model.clear()
        self.model.labels(version=version).set(1)

    def exposition(self) -> tuple[bytes, str]:
        """The text format for ``/metrics``: all workers' values in multiprocess mode, else this process's."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
