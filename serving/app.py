"""The FastAPI app: versioned endpoints for consoles, supervisors and analysts.

``create_app(settings)`` wires the event store (SQLite or PostgreSQL), the session
cache (in-process or Redis), API keys with roles and rate limits, and the model
(the registry's ``champion``, re-checked every ``model_poll_seconds`` and on
``POST /v1/admin/reload``). Every endpoint answers bad input with a 4xx whose
``detail`` names the problem; nothing is half-written (each write is one
transaction).

Layout: the shared state is :class:`~yuyue.serving.state.Yuyue` (``app.state.yuyue``); the
endpoints are routers per resource in ``serving/routes/`` over ``serving/deps.py`` (state, caller,
roles, store, service); errors carry their status and are mapped once (``serving/errors.py``);
who may do what is ``serving/auth.py``.
"""

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from yuyue.config import Settings, get_settings
from yuyue.models.bundle import YuyueModel
from yuyue.serving import errors, returning, reviews, tasks
from yuyue.serving.edge import EdgeMiddleware
from yuyue.serving.metrics import Metrics
from yuyue.serving.requestid import RequestIdMiddleware
from yuyue.serving.routes import ROUTERS
from yuyue.serving.routes import health as health_routes
from yuyue.serving.routes import privacy as privacy_routes
from yuyue.serving.routes import reports as report_routes
from yuyue.serving.state import Yuyue, warm_up

__all__ = ["Yuyue", "create_app", "warm_up"]

log = logging.getLogger("yuyue.serving")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: Yuyue = app.state.yuyue
    # the work is CPU-bound under the GIL: a few threads keep the cores busy without thrashing
    anyio.to_thread.current_default_thread_limiter().total_tokens = state.settings.worker_threads
    if not state.models.ready:
        try:
            state.reload()
        except Exception as exc:
            log.error("could not load the champion model: %s", exc)
    poller = threading.Thread(target=state.poll, name="yuyue-registry-poll", daemon=True)
    poller.start()
    refresher = health_routes.HealthRefresher(state, state.settings.health_refresh_seconds).start()
    yield
    refresher.stop()
    state.close()


def create_app(
    settings: Settings | None = None, model: YuyueModel | None = None, version: str | None = None
) -> FastAPI:
    """The app; ``model`` given (tests, benchmarks) skips loading the champion at start-up."""
    settings = settings or get_settings()
    state = Yuyue(settings, model, version)
    app = FastAPI(
        title="Yuyue",
        version="1",
        description="Per-message booking and arrival scores with reasons, stage, hints, entities and reply "
        "suggestions for consultation desks; follow-up queue and funnel for supervisors.",
        lifespan=lifespan,
    )
    app.state.yuyue = state
    reviews.install(state)  # reply review decisions reach the suggester of every model served
    tasks.install(state)  # appointments and the work list, hooked to the recorded outcomes
    returning.install(state)  # a returning visitor's earlier chats reach the scorers when a chat opens
    errors.install(app)  # always a 4xx naming the problem (or a 503 worth a retry)
    # who the limiter refused is answered 429 at the edge until its retry time (see Yuyue.gate)
    back, ahead = settings.time_window_days
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.max_body_bytes,
        window=(timedelta(days=back), timedelta(days=ahead)),
        gate=state.gate,
    )
    app.add_middleware(TimingMiddleware, metrics=state.metrics)
    app.add_middleware(RequestIdMiddleware)  # outermost: every answer and log line carries the id
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(privacy_routes.router)  # data-subject rights and the audit log
    app.include_router(report_routes.router)  # the desk reports
    return app


class TimingMiddleware:
    """Pure ASGI middleware: request latency per route template and status, into the Prometheus histogram,
    and a ``Server-Timing: app;dur=<ms>`` header on every answer."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                # time spent on the request so far (for a JSON answer: all of it), for clients and load tests
                dur = f"app;dur={(time.perf_counter() - t0) * 1e3:.2f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", dur)]}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(scope["method"], endpoint, str(status[0])).observe(
                time.perf_counter() - t0
            )
