"""The FastAPI app: versioned endpoints for consoles, supervisors and analysts.

``create_app(settings)`` wires the event store (SQLite or PostgreSQL), the session
cache (in-process or Redis), API keys with roles and rate limits, and the model
(the registry's ``champion``, re-checked every ``model_poll_seconds`` and on
``POST /v1/admin/reload``). Every endpoint answers bad input with a 4xx whose
``detail`` names the problem; nothing is half-written (each write is one
transaction).
"""

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
import orjson
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy import exc as sa_exc

from yuyue.config import Settings, get_settings
from yuyue.data.contract import Visit
from yuyue.models.bundle import YuyueModel
from yuyue.serving.auth import ApiKey, KeyStore
from yuyue.serving.cache import make_cache
from yuyue.serving.db import create_all, make_engine
from yuyue.serving.ratelimit import RateLimiter
from yuyue.serving.service import LIVE_CODEC, Caller, ChatService, Forbidden, InvalidInput, ModelHolder
from yuyue.serving.store import FUNNEL_GROUPS, Conflict, EventStore, Filters, NotFound

log = logging.getLogger("yuyue.serving")
STATIC = Path(__file__).parent / "static"
CONVERSATION_ID = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w.\-:]+$")]


# ---- request bodies (with OpenAPI examples) ---------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenChat(_Body):
    conversation_id: CONVERSATION_ID | None = Field(
        None, description="your chat tool's id; generated when absent"
    )
    started_at: AwareDatetime | None = Field(None, description="chat start (default: now)")
    visit: Visit | None = None
    hospital: str | None = Field(None, max_length=128)
    department: str | None = Field(None, max_length=64)
    project: str | None = Field(None, max_length=64)
    consultant_id: str | None = Field(None, max_length=128, description="defaults to the calling consultant")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": "swt-20250305-0001",
                    "started_at": "2025-03-05T14:02:11+08:00",
                    "department": "整形美容",
                    "project": "隆鼻",
                    "visit": {
                        "engine": "baidu",
                        "keyword": "杭州隆鼻多少钱",
                        "landing_url": "https://example.com/lb/price.html",
                        "region": "浙江省杭州市",
                        "device": "mobile",
                        "visits_before": 1,
                    },
                }
            ]
        },
    )


class NewMessage(_Body):
    role: Literal["visitor", "consultant", "system"]
    text: str = Field(min_length=1, max_length=10_000)
    at: AwareDatetime | None = Field(
        None, description="when it was sent (default: now); never before the last message"
    )
    k: int = Field(3, ge=0, le=10, description="how many reply suggestions (visitor messages only)")
    seq: int | None = Field(
        None,
        ge=0,
        description="optional: the position this message takes (how many messages the sender has seen). "
        "When the chat holds a different number of messages the answer is 409 and nothing is stored, "
        "so resending after a lost answer cannot store a message twice",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"role": "visitor", "text": "你好，隆鼻大概多少钱？疼不疼", "at": "2025-03-05T14:02:30+08:00", "seq": 0}
            ]
        },
    )


class OutcomeUpdate(_Body):
    contact: StrictBool | None = None
    booked: StrictBool | None = None
    arrived: StrictBool | None = None
    booked_at: AwareDatetime | None = None
    arrived_at: AwareDatetime | None = None
    close: bool = Field(False, description="the chat has ended: no more messages")

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"contact": True, "booked": True, "close": True}]}
    )


class Feedback(_Body):
    action: Literal["used", "edited", "dismissed"]
    final_text: str | None = Field(None, max_length=10_000, description="what was sent, for 'edited'")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"action": "edited", "final_text": "王女士您好，隆鼻的费用要看方案…"}]
        },
    )


# ---- metrics ----------------------------------------------------------------------------
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
            "yuyue_model_info", "model version in use (value 1)", ["version"], registry=self.registry
        )
        self.cache_misses = Gauge(
            "yuyue_session_cache_misses", "chats rebuilt from the event store", registry=self.registry
        )

    def set_model(self, version: str) -> None:
        self.model.clear()
        self.model.labels(version=version).set(1)


# ---- the app ----------------------------------------------------------------------------
class Yuyue:
    """Everything the endpoints share (one per app)."""

    def __init__(self, settings: Settings, model: YuyueModel | None = None, version: str | None = None):
        self.settings = settings
        self.engine = make_engine(settings.resolved_database_url)
        import yuyue.serving.auth  # noqa: F401  (declares its tables)

        create_all(self.engine)
        self.keys = KeyStore(self.engine)
        self.limiter = RateLimiter(settings.redis_url)
        self.models = ModelHolder(model, version)
        self.service = ChatService(
            settings, EventStore(self.engine), make_cache(settings.redis_url, LIVE_CODEC), self.models
        )
        self.metrics = Metrics()
        if model is not None:
            self.metrics.set_model(self.models.version or "local")
            warm_up(model)
        self._stop = threading.Event()
        self._reload_lock = threading.Lock()

    def reload(self) -> dict[str, Any]:
        """Load the registry's champion if it differs from the model in use."""
        from yuyue.training import registry

        with self._reload_lock:
            version = registry.alias_version(registry.CHAMPION, self.settings)
            if version is None:
                return {"version": self.models.version, "changed": False, "detail": "no champion registered"}
            if version == self.models.version:
                return {"version": version, "changed": False}
            model, version = registry.load(version, self.settings)
            warm_up(model)  # first-use costs (tokeniser dictionaries, caches) before any request sees it
            previous = self.models.version
            self.models.set(model, version)
            self.metrics.set_model(version)
            log.info("model switched from %s to %s", previous, version)
            return {"version": version, "changed": True, "previous": previous}

    def poll(self) -> None:
        interval = self.settings.model_poll_seconds
        while interval > 0 and not self._stop.wait(interval):
            try:
                self.reload()
            except Exception as exc:  # keep serving the current model
                log.warning("registry poll failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self.engine.dispose()


def create_app(
    settings: Settings | None = None, model: YuyueModel | None = None, version: str | None = None
) -> FastAPI:
    """The app; ``model`` given (tests, benchmarks) skips loading the champion at start-up."""
    settings = settings or get_settings()
    state = Yuyue(settings, model, version)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Iterator[None]:
        # the work is CPU-bound under the GIL: a few threads keep the cores busy without thrashing
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        if not state.models.ready:
            try:
                state.reload()
            except Exception as exc:
                log.error("could not load the champion model: %s", exc)
        poller = threading.Thread(target=state.poll, name="yuyue-registry-poll", daemon=True)
        poller.start()
        yield
        state.close()

    app = FastAPI(
        title="Yuyue",
        version="1",
        description="Per-message booking and arrival scores with reasons, stage, hints, entities and reply "
        "suggestions for consultation desks; follow-up queue and funnel for supervisors.",
        lifespan=lifespan,
    )
    app.state.yuyue = state

    # ---- errors: always a 4xx naming the problem --------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            problems.append(f"{where}: {e.get('msg')}")
        return JSONResponse(
            {"detail": "; ".join(problems), "errors": jsonable(exc.errors())}, status_code=422
        )

    for exc_type, status in ((NotFound, 404), (Conflict, 409), (InvalidInput, 422), (Forbidden, 403)):

        def handler(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        app.add_exception_handler(exc_type, handler)

    # the database went away (restart, failover, a dropped connection): not the caller's fault, and
    # worth a retry; the pool replaces the dead connection on the next request
    def database_down(request: Request, exc: Exception) -> JSONResponse:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        log.warning("database error on %s %s: %s", request.method, request.url.path, reason)
        return JSONResponse(
            {
                "detail": f"the database could not be reached or dropped the connection ({reason}); "
                "retry. The write may have landed: resend a message with its seq (a stored one gets 409)"
            },
            status_code=503,
            headers={"Retry-After": "1"},
        )

    app.add_exception_handler(sa_exc.OperationalError, database_down)
    app.add_exception_handler(sa_exc.InterfaceError, database_down)

    app.add_middleware(TimingMiddleware, metrics=state.metrics)

    # ---- auth -------------------------------------------------------------------------
    # dependencies are ``async def`` so they run on the event loop: a plain ``def`` would cost a
    # thread-pool round trip each, per request (keys are cached, so no I/O on the hot path)
    async def caller(
        authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
        x_api_key: Annotated[
            str | None, Header(description="the API key (alternative to Authorization)")
        ] = None,
    ) -> Caller:
        return authenticate(authorization, x_api_key)

    def authenticate(authorization: str | None, x_api_key: str | None) -> Caller:
        raw = x_api_key or (
            authorization[7:].strip()
            if authorization and authorization.lower().startswith("bearer ")
            else None
        )
        if not raw:
            raise _http(401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        key: ApiKey | None = state.keys.authenticate(raw)
        if key is None:
            raise _http(401, "invalid or revoked API key")
        ok, retry = state.limiter.check(key.id, key.rate_per_minute or settings.rate_per_minute)
        if not ok:
            raise _http(
                429,
                f"rate limit of {key.rate_per_minute or settings.rate_per_minute}/min exceeded for key {key.name!r}",
                retry,
            )
        return Caller(key.name, key.role, key.consultant_id)

    def role(*roles: str) -> Any:
        async def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
            if who.role != "admin" and who.role not in roles:
                raise _http(
                    403, f"role {who.role!r} cannot do this (needs one of: {', '.join(roles + ('admin',))})"
                )
            return who

        return check

    async def model_ready() -> None:
        if not state.models.ready:
            raise _http(
                503, "no model loaded yet: train and promote one (yuyue train), then POST /v1/admin/reload"
            )

    def filters(
        who: Caller,
        hospital: str | None,
        department: str | None,
        consultant: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> Filters:
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise InvalidInput(f"{name} must carry a timezone offset, e.g. 2025-03-05T00:00:00+08:00")
        if who.role == "consultant":
            consultant = who.consultant_id  # consultants see their own chats only
        return Filters(hospital, department, consultant, since, until)

    Who = Annotated[Caller, Depends(caller)]
    Supervisor = Annotated[Caller, Depends(role("supervisor", "analyst", "consultant"))]
    Analyst = Annotated[Caller, Depends(role("analyst"))]

    # ---- chats -------------------------------------------------------------------------
    @app.post("/v1/conversations", status_code=201, tags=["chats"], dependencies=[Depends(model_ready)])
    def open_chat(body: OpenChat, who: Who) -> Response:
        """Open a chat with its visit trace; returns its id and the score from the visit trace alone."""
        out = state.service.open(
            who, **body.model_dump(exclude_none=False, exclude={"visit"}), visit=body.visit
        )
        return fast_json(out, 201)

    # the hot path: the key is checked in the endpoint, not as a dependency (FastAPI's dependency
    # resolution was about half of the framework's time per message); the headers are documented here
    @app.post("/v1/conversations/{conversation_id}/messages", tags=["chats"], openapi_extra=AUTH_HEADERS_DOC)
    async def add_message(conversation_id: CONVERSATION_ID, body: NewMessage, request: Request) -> Response:
        """Append one message; returns scores and their change, band, reasons, stage, hints, entities, suggestions."""
        who = authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
        await model_ready()
        out = state.service.message(
            who,
            conversation_id,
            body.role,
            body.text,
            body.at,
            k=min(body.k, settings.suggestions_k) if body.k else 0,
            expect_seq=body.seq,
        )
        state.metrics.shown.inc(len(out["suggestions"]))
        state.metrics.cache_misses.set(state.service.cache_misses)
        return fast_json(out)

    @app.post("/v1/conversations/{conversation_id}/outcome", tags=["chats"])
    def record_outcome(conversation_id: CONVERSATION_ID, body: OutcomeUpdate, who: Who) -> dict[str, Any]:
        """Record contact / booked / arrived as they become known (console or booking system)."""
        values = body.model_dump(exclude={"close"})
        return state.service.outcome(who, conversation_id, values, body.close)

    @app.get("/v1/conversations/{conversation_id}", tags=["chats"])
    def get_chat(conversation_id: CONVERSATION_ID, who: Who) -> dict[str, Any]:
        """A stored chat with its messages (masked unless the caller is its consultant)."""
        return state.service.conversation(who, conversation_id)

    @app.post("/v1/suggestions/{suggestion_id}/feedback", tags=["chats"])
    def suggestion_feedback(
        suggestion_id: Annotated[str, Field(max_length=32)], body: Feedback, who: Who
    ) -> dict[str, Any]:
        """What the consultant did with a suggestion: used, edited (with the final text) or dismissed."""
        out = state.service.feedback(who, suggestion_id, body.action, body.final_text)
        state.metrics.feedback.labels(body.action).inc()
        return out

    # ---- supervisors ---------------------------------------------------------------------
    @app.get("/v1/followups", tags=["supervisors"])
    def followups(
        who: Supervisor,
        hospital: str | None = None,
        department: str | None = None,
        consultant: str | None = None,
        since: datetime | None = Query(None, description="chats started at or after (with offset)"),
        until: datetime | None = Query(None, description="chats started before (with offset)"),
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        """Leads that left contact without booking and bookings at risk of not arriving, ranked, with reasons."""
        return state.service.followups(
            filters(who, hospital, department, consultant, since, until), limit, offset
        )

    @app.get("/v1/stats/funnel", tags=["supervisors"])
    def funnel(
        who: Supervisor,
        group_by: Literal[tuple(FUNNEL_GROUPS)] | None = Query(
            None, description="one of " + ", ".join(FUNNEL_GROUPS)
        ),  # type: ignore[valid-type]
        hospital: str | None = None,
        department: str | None = None,
        consultant: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, Any]:
        """visits → chats → contact → booked → arrived, overall or grouped; plus suggestion acceptance."""
        return state.service.funnel(group_by, filters(who, hospital, department, consultant, since, until))

    @app.get("/v1/export", tags=["analysts"], response_class=StreamingResponse)
    def export(
        who: Analyst,
        hospital: str | None = None,
        department: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> StreamingResponse:
        """Stored chats as contract JSONL with personal data masked: training data for ``yuyue train``."""
        f = filters(who, hospital, department, None, since, until)
        lines = (orjson.dumps(rec) + b"\n" for rec in state.service.export(f))
        return StreamingResponse(lines, media_type="application/x-ndjson")

    # ---- admin ---------------------------------------------------------------------------
    @app.post("/v1/admin/reload", tags=["admin"])
    def reload(who: Analyst) -> dict[str, Any]:
        """Switch to the registry's current champion (requests in flight finish on the old model)."""
        try:
            return state.reload()
        except Exception as exc:
            raise _http(503, f"could not load the champion: {exc}") from None

    @app.get("/v1/model", tags=["admin"])
    def model_info(who: Who) -> dict[str, Any]:
        """The model in use (version, what it contains) and who is calling (key name, role, consultant id)."""
        caller = {"name": who.name, "role": who.role, "consultant_id": who.consultant_id}
        if not state.models.ready:
            return {"version": None, "caller": caller}
        model, version = state.models.get()
        return {"version": version, **model.describe(), "caller": caller}

    # ---- operations ------------------------------------------------------------------------
    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> JSONResponse:
        problems = []
        if not state.models.ready:
            problems.append("no model loaded")
        try:
            with state.engine.connect() as cx:
                cx.exec_driver_sql("SELECT 1")
        except Exception as exc:
            problems.append(f"database: {exc}")
        status = 200 if not problems else 503
        return JSONResponse(
            {"ready": not problems, "model_version": state.models.version, "problems": problems},
            status_code=status,
        )

    @app.get("/metrics", tags=["ops"])
    def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ---- console ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def console() -> Response:
        page = STATIC / "console.html"
        if not page.exists():
            return JSONResponse({"detail": "console page not installed", "docs": "/docs"}, status_code=404)
        return FileResponse(page, media_type="text/html; charset=utf-8")

    return app


AUTH_HEADERS_DOC = {
    "parameters": [
        {"name": "authorization", "in": "header", "required": False, "schema": {"type": "string"}, "description": "Bearer <API key>"},
        {
            "name": "x-api-key",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "the API key (alternative to Authorization)",
        },
    ]
}


def _http(status: int, detail: str, retry_after: float | None = None) -> Exception:
    from fastapi import HTTPException

    headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))} if retry_after else None
    return HTTPException(status_code=status, detail=detail, headers=headers)


def fast_json(obj: Any, status: int = 200) -> Response:
    """JSON with orjson, skipping FastAPI's generic encoder (the per-message answer is on the hot path)."""
    return Response(
        orjson.dumps(obj, default=str, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


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


def warm_up(model: YuyueModel) -> None:
    """Run one throw-away chat through ``model`` so the first real request is not the slow one."""
    from datetime import UTC

    now = datetime.now(UTC)
    session, _ = model.open_chat(started_at=now)
    for role, text in (
        ("visitor", "你好，想了解一下价格"),
        ("consultant", "您好，请问怎么称呼？"),
        ("visitor", "姓李"),
    ):
        model.on_message(session, role, text, now)


def jsonable(obj: Any) -> Any:
    return orjson.loads(orjson.dumps(obj, default=str))
