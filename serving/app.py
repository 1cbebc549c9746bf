"""The FastAPI app: versioned endpoints for consoles, supervisors and analysts.

``create_app(settings)`` wires the event store (SQLite or PostgreSQL), the session
cache (in-process or Redis), API keys with roles and rate limits, and the model
(the registry's ``champion``, re-checked every ``model_poll_seconds`` and on
``POST /v1/admin/reload``). Every endpoint answers bad input with a 4xx whose
``detail`` names the problem; nothing is half-written (each write is one
transaction).
"""

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
import orjson
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from sqlalchemy import exc as sa_exc

from yuyue.config import Settings, get_settings
from yuyue.data.contract import Page, Text, Visit, bounded_text
from yuyue.models.bundle import YuyueModel
from yuyue.serving import schemas
from yuyue.serving.auth import ApiKey, KeyStore, hash_key
from yuyue.serving.cache import make_cache, redis_options
from yuyue.serving.db import create_all, engine_options, make_engine
from yuyue.serving.edge import Blocklist, EdgeMiddleware, Recent, RecentFilter, client_address
from yuyue.serving.metrics import Metrics
from yuyue.serving.ratelimit import RateLimiter
from yuyue.serving.requestid import RequestIdMiddleware
from yuyue.serving.service import LIVE_CODEC, Caller, ChatService, Forbidden, InvalidInput, ModelHolder
from yuyue.serving.store import FUNNEL_GROUPS, Conflict, EventStore, Filters, NotFound

log = logging.getLogger("yuyue.serving")
STATIC = Path(__file__).parent / "static"
CONVERSATION_ID = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w.\-:]+$")]
SUGGESTION_ID = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[\w.\-:]+$")]
FILTER = Annotated[bounded_text(128) | None, Query()]
QUOTE_CHARS = 64  # a 422 quotes at most this much of an offending value

API_KEY = APIKeyHeader(
    name="X-API-Key", scheme_name="APIKeyHeader", auto_error=False, description="the API key: yy_<prefix>_<secret>"
)
BEARER = HTTPBearer(scheme_name="HTTPBearer", auto_error=False, description="Authorization: Bearer <API key>")
SECURITY = [{"APIKeyHeader": []}, {"HTTPBearer": []}]


# ---- request bodies (with OpenAPI examples) ---------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PageIn(Page):
    at: Recent | None = None


class VisitIn(Visit):
    """The contract's visit trace, its page times within the accepted window around now."""

    pages: list[PageIn] | None = Field(None, max_length=1000)
    # the contract sets no maximum; a count beyond 64 bits could not be exported as JSON
    visits_before: StrictInt | None = Field(None, ge=0, le=1_000_000)


class OpenChat(_Body):
    conversation_id: CONVERSATION_ID | None = Field(
        None, description="your chat tool's id; generated when absent"
    )
    started_at: Recent | None = Field(None, description="chat start (default: now)")
    visit: VisitIn | None = None
    hospital: bounded_text(128) | None = None
    department: bounded_text(64) | None = None
    project: bounded_text(64) | None = None
    consultant_id: bounded_text(128) | None = Field(None, description="defaults to the calling consultant")

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
    text: Text = Field(min_length=1, max_length=10_000)
    at: Recent | None = Field(
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
    booked_at: Recent | None = None
    arrived_at: Recent | None = None
    close: bool = Field(False, description="the chat has ended: no more messages")

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"contact": True, "booked": True, "close": True}]}
    )


class Feedback(_Body):
    action: Literal["used", "edited", "dismissed"]
    final_text: bounded_text(10_000) | None = Field(None, description="what was sent, for 'edited'")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"action": "edited", "final_text": "王女士您好，隆鼻的费用要看方案…"}]
        },
    )


# ---- the app ----------------------------------------------------------------------------
class Yuyue:
    """Everything the endpoints share (one per app)."""

    def __init__(self, settings: Settings, model: YuyueModel | None = None, version: str | None = None):
        self.settings = settings
        self.engine = make_engine(settings.resolved_database_url, **engine_options(settings))
        import yuyue.serving.auth  # noqa: F401  (declares its tables)

        create_all(self.engine)
        self.keys = KeyStore(self.engine)
        self.limiter = RateLimiter(
            settings.redis_url, timeout=settings.ratelimit_redis_timeout_s, cooldown_s=settings.redis_cooldown_s
        )
        self.blocked = Blocklist()
        self.models = ModelHolder(model, version)
        self.service = ChatService(
            settings,
            EventStore(self.engine),
            make_cache(settings.redis_url, LIVE_CODEC, **redis_options(settings)),
            self.models,
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
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return validation_problem(exc.errors())

    for exc_type, status in ((NotFound, 404), (Conflict, 409), (Forbidden, 403)):

        def handler(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        app.add_exception_handler(exc_type, handler)

    # a request that is well-formed but that the chat's state does not allow: the 422 shape of every 422
    @app.exception_handler(InvalidInput)
    async def _not_allowed(request: Request, exc: InvalidInput) -> Response:
        return validation_problem([{"type": "invalid_input", "loc": ["body"], "msg": str(exc)}])

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

    # who the limiter refused (a key over its limit, an address over its failed authentications) is
    # answered 429 at the edge until its retry time, without reading the body or asking Redis
    def gate(scope: dict[str, Any], raw: str | None) -> tuple[float, str] | None:
        if not state.blocked:
            return None
        if raw is not None:
            digest = hash_key(raw.strip())
            hit = state.blocked.blocked("key:" + digest)
            if hit is not None or state.keys.known(digest):
                return hit
        elif not scope["path"].startswith("/v1/"):
            return None
        return state.blocked.blocked("addr:" + client_address(scope))

    back, ahead = settings.time_window_days
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.max_body_bytes,
        window=(timedelta(days=back), timedelta(days=ahead)),
        gate=gate,
    )
    app.add_middleware(TimingMiddleware, metrics=state.metrics)
    app.add_middleware(RequestIdMiddleware)  # outermost: every answer and log line carries the id

    # ---- auth -------------------------------------------------------------------------
    # dependencies are ``async def`` so they run on the event loop: a plain ``def`` would cost a
    # thread-pool round trip each, per request (keys are cached, so no I/O on the hot path)
    async def caller(
        request: Request,
        x_api_key: Annotated[str | None, Security(API_KEY)] = None,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    ) -> Caller:
        return authenticate(x_api_key or (bearer.credentials if bearer else None), request)

    def authenticate(raw: str | None, request: Request) -> Caller:
        if not raw:
            raise refused(request, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        key: ApiKey | None = state.keys.authenticate(raw)
        if key is None:
            raise refused(request, "invalid or revoked API key")
        per_minute = key.rate_per_minute or settings.rate_per_minute
        ok, retry = state.limiter.check(key.id, per_minute)
        if not ok:
            detail = f"rate limit of {per_minute}/min exceeded for key {key.name!r}"
            state.blocked.block("key:" + hash_key(raw.strip()), retry, detail)
            raise _http(429, detail, retry)
        return Caller(key.name, key.role, key.consultant_id)

    def refused(request: Request, detail: str) -> Exception:
        """401, or 429 once the client's address has spent its budget of failed authentications."""
        addr = client_address(request.scope)
        ok, retry = state.limiter.check(f"auth-failures:{addr}", settings.auth_failures_per_minute)
        if not ok:
            detail = (
                f"too many failed authentications from {addr} "
                f"(limit {settings.auth_failures_per_minute}/min); retry later"
            )
            state.blocked.block("addr:" + addr, retry, detail)
            return _http(429, detail, retry)
        return _http(401, detail)

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
    @app.post(
        "/v1/conversations",
        status_code=201,
        tags=["chats"],
        dependencies=[Depends(model_ready)],
        response_model=schemas.OpenedChat,
        responses=errors(400, 401, 403, 409, 413, 422, 429, 503),
    )
    def open_chat(body: OpenChat, who: Who) -> Response:
        """Open a chat with its visit trace; returns its id and the score from the visit trace alone."""
        out = state.service.open(
            who, **body.model_dump(exclude_none=False, exclude={"visit"}), visit=body.visit
        )
        return fast_json(out, 201)

    # the hot path: the key is checked in the endpoint, not as a dependency (FastAPI's dependency
    # resolution was about half of the framework's time per message); its security and answer are
    # documented here, not validated
    @app.post(
        "/v1/conversations/{conversation_id}/messages",
        tags=["chats"],
        openapi_extra={"security": SECURITY},
        responses={
            200: {"model": schemas.MessageScored, "description": "the message's scores, hints and suggestions"},
            **errors(400, 401, 403, 404, 409, 413, 422, 429, 503),
        },
    )
    async def add_message(conversation_id: CONVERSATION_ID, body: NewMessage, request: Request) -> Response:
        """Append one message; returns scores and their change, band, reasons, stage, hints, entities, suggestions."""
        authorization = request.headers.get("authorization")
        raw = request.headers.get("x-api-key") or (
            authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else None
        )
        who = authenticate(raw, request)
        await model_ready()
        # in a worker thread: a store write waiting on a lock (bounded by the database timeouts) must not
        # hold up the event loop, /healthz and the other chats
        out = await anyio.to_thread.run_sync(
            partial(
                state.service.message,
                who,
                conversation_id,
                body.role,
                body.text,
                body.at,
                k=min(body.k, settings.suggestions_k) if body.k else 0,
                expect_seq=body.seq,
            )
        )
        state.metrics.shown.inc(len(out["suggestions"]))
        state.metrics.cache_misses.set(state.service.cache_misses)
        return fast_json(out)

    @app.post(
        "/v1/conversations/{conversation_id}/outcome",
        tags=["chats"],
        response_model=schemas.ChatView,
        responses=errors(400, 401, 403, 404, 413, 422, 429, 503),
    )
    def record_outcome(conversation_id: CONVERSATION_ID, body: OutcomeUpdate, who: Who) -> dict[str, Any]:
        """Record contact / booked / arrived as they become known (console or booking system)."""
        values = body.model_dump(exclude={"close"})
        return state.service.outcome(who, conversation_id, values, body.close)

    @app.get(
        "/v1/conversations/{conversation_id}",
        tags=["chats"],
        response_model=schemas.ChatWithMessages,
        responses=errors(401, 403, 404, 422, 429, 503),
    )
    def get_chat(conversation_id: CONVERSATION_ID, who: Who) -> dict[str, Any]:
        """A stored chat with its messages (masked unless the caller is its consultant)."""
        return state.service.conversation(who, conversation_id)

    @app.post(
        "/v1/suggestions/{suggestion_id}/feedback",
        tags=["chats"],
        response_model=schemas.FeedbackRecorded,
        responses=errors(400, 401, 403, 404, 413, 422, 429, 503),
    )
    def suggestion_feedback(suggestion_id: SUGGESTION_ID, body: Feedback, who: Who) -> dict[str, Any]:
        """What the chat's consultant did with a suggestion: used, edited (with the final text) or dismissed.
        A supervisor or admin may record it too (recorded with their role)."""
        out = state.service.feedback(who, suggestion_id, body.action, body.final_text)
        state.metrics.feedback.labels(body.action).inc()
        return out

    # ---- supervisors ---------------------------------------------------------------------
    @app.get(
        "/v1/followups",
        tags=["supervisors"],
        response_model=schemas.FollowupPage,
        responses=errors(401, 403, 422, 429, 503),
    )
    def followups(
        who: Supervisor,
        hospital: FILTER = None,
        department: FILTER = None,
        consultant: FILTER = None,
        since: RecentFilter | None = Query(None, description="chats started at or after (with offset)"),
        until: RecentFilter | None = Query(None, description="chats started before (with offset)"),
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=1_000_000),
    ) -> dict[str, Any]:
        """Leads that left contact without booking and bookings at risk of not arriving, ranked, with reasons."""
        return state.service.followups(
            filters(who, hospital, department, consultant, since, until), limit, offset
        )

    @app.get(
        "/v1/stats/funnel",
        tags=["supervisors"],
        response_model=schemas.Funnel,
        responses=errors(401, 403, 422, 429, 503),
    )
    def funnel(
        who: Supervisor,
        group_by: Literal[tuple(FUNNEL_GROUPS)] | None = Query(
            None, description="one of " + ", ".join(FUNNEL_GROUPS)
        ),  # type: ignore[valid-type]
        hospital: FILTER = None,
        department: FILTER = None,
        consultant: FILTER = None,
        since: RecentFilter | None = None,
        until: RecentFilter | None = None,
    ) -> dict[str, Any]:
        """visits → chats → contact → booked → arrived, overall or grouped; plus suggestion acceptance."""
        return state.service.funnel(group_by, filters(who, hospital, department, consultant, since, until))

    @app.get(
        "/v1/export",
        tags=["analysts"],
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "one contract record (conversation.schema.json) per line, personal data masked",
                "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            },
            **errors(401, 403, 422, 429, 503),
        },
    )
    def export(
        who: Analyst,
        hospital: FILTER = None,
        department: FILTER = None,
        since: RecentFilter | None = None,
        until: RecentFilter | None = None,
    ) -> StreamingResponse:
        """Stored chats as contract JSONL with personal data masked: training data for ``yuyue train``."""
        f = filters(who, hospital, department, None, since, until)
        records = state.service.export(f)
        # the first batch is read before the answer starts: a failure there is a proper error status,
        # not a 200 whose stream is cut
        first = next(records, None)
        head = [] if first is None else [orjson.dumps(first) + b"\n"]
        lines = (orjson.dumps(rec) + b"\n" for rec in records)
        return StreamingResponse(_chain(head, lines), media_type="application/x-ndjson")

    # ---- admin ---------------------------------------------------------------------------
    @app.post(
        "/v1/admin/reload",
        tags=["admin"],
        response_model=schemas.Reloaded,
        responses=errors(401, 403, 429, 503),
    )
    def reload(who: Analyst) -> dict[str, Any]:
        """Switch to the registry's current champion (requests in flight finish on the old model)."""
        try:
            return state.reload()
        except Exception as exc:
            raise _http(503, f"could not load the champion: {exc}") from None

    @app.get("/v1/model", tags=["admin"], response_model=schemas.ModelInfo, responses=errors(401, 429, 503))
    def model_info(who: Who) -> dict[str, Any]:
        """The model in use (version, what it contains) and who is calling (key name, role, consultant id)."""
        caller = {"name": who.name, "role": who.role, "consultant_id": who.consultant_id}
        if not state.models.ready:
            return {"version": None, "caller": caller}
        model, version = state.models.get()
        return {"version": version, **model.describe(), "caller": caller}

    # ---- operations ------------------------------------------------------------------------
    @app.get("/healthz", tags=["ops"], response_model=schemas.Health)
    async def healthz() -> dict[str, str]:  # on the event loop: no thread, no dependency to wait for
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        response_model=schemas.Readiness,
        responses={503: {"model": schemas.Readiness, "description": "not ready: the problems say why"}},
    )
    def readyz() -> JSONResponse:
        problems = []
        if not state.models.ready:
            problems.append("no model loaded")
        try:
            with state.engine.connect() as cx:
                cx.exec_driver_sql("SELECT 1")
        except Exception as exc:
            problems.append(f"database: {str(getattr(exc, 'orig', None) or exc).strip()[:200]}")
        if settings.redis_url and not state.service.cache.ping():  # bounded: redis_timeout_s, breaker
            problems.append("redis: not answering (sessions and rate limits fall back to this process)")
        status = 200 if not problems else 503
        return JSONResponse(
            {"ready": not problems, "model_version": state.models.version, "problems": problems},
            status_code=status,
        )

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}}},
    )
    def metrics() -> Response:
        body, media_type = state.metrics.exposition()
        return Response(body, media_type=media_type)

    # ---- console ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def console() -> Response:
        page = STATIC / "console.html"
        if not page.exists():
            return JSONResponse({"detail": "console page not installed", "docs": "/docs"}, status_code=404)
        return FileResponse(page, media_type="text/html; charset=utf-8")

    return app


def _http(status: int, detail: str, retry_after: float | None = None) -> Exception:
    from fastapi import HTTPException

    headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))} if retry_after else {}
    if status == 401:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    return HTTPException(status_code=status, detail=detail, headers=headers or None)


WWW_AUTHENTICATE = 'Bearer realm="yuyue"'
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
ERRORS: dict[int, dict[str, Any]] = {
    400: {"model": schemas.Problem, "description": "a body that is not JSON text, or a bad Content-Length"},
    401: {
        "model": schemas.Problem,
        "description": "no API key, or an unknown or revoked one",
        "headers": {"WWW-Authenticate": {"description": WWW_AUTHENTICATE, "schema": {"type": "string"}}},
    },
    403: {"model": schemas.Problem, "description": "the key's role or consultant may not do this"},
    404: {"model": schemas.Problem, "description": "no such conversation or suggestion"},
    409: {"model": schemas.Problem, "description": "conflicts with the chat's state (exists, closed, seq taken)"},
    413: {"model": schemas.Problem, "description": "the body exceeds max_body_bytes"},
    422: {"model": schemas.ValidationProblem, "description": "invalid input: every problem named, with its field"},
    429: {
        "model": schemas.Problem,
        "description": "the key's rate limit, or the address's failed authentications, are spent",
        "headers": _RETRY_AFTER,
    },
    503: {
        "model": schemas.Problem,
        "description": "no model loaded yet, or the database is unavailable: retry",
        "headers": _RETRY_AFTER,
    },
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` for these error statuses, with their real bodies and headers."""
    return {status: ERRORS[status] for status in statuses}


def _quote(value: Any) -> Any:
    """At most :data:`QUOTE_CHARS` characters of an offending value, safe to encode as JSON."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else _quote(str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        try:
            text = orjson.dumps(value, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):
            text = repr(value)
        if len(text) <= QUOTE_CHARS:
            return value if isinstance(value, dict | list) and _encodable(value) else text
        value = text
    if len(value) > QUOTE_CHARS:
        value = f"{value[:QUOTE_CHARS]}… ({len(value)} characters)"
    # lone surrogates cannot be encoded: show them as escapes
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _encodable(value: Any) -> bool:
    try:
        orjson.dumps(value)
        return True
    except (TypeError, orjson.JSONEncodeError):
        return False


def validation_problem(errs: Any, status: int = 422) -> Response:
    """``{"detail": "field: message; ...", "errors": [...]}``, quoting at most a prefix of each bad value."""
    problems, items = [], []
    for e in errs:
        loc = [p if isinstance(p, int) else _quote(str(p)) for p in e.get("loc", ())]
        msg = str(e.get("msg", ""))[:500].encode("utf-8", "backslashreplace").decode("utf-8")
        where = ".".join(str(p) for p in loc if p != "body")
        problems.append(f"{where}: {msg}" if where else msg)
        item: dict[str, Any] = {"type": str(e.get("type", "invalid")), "loc": loc, "msg": msg}
        if "input" in e:
            item["input"] = _quote(e["input"])
        if e.get("ctx"):
            item["ctx"] = {str(k): _quote(v if isinstance(v, int | float | str | None) else str(v)) for k, v in e["ctx"].items()}
        items.append(item)
    return fast_json({"detail": "; ".join(problems), "errors": items}, status)


def _chain(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from rest


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
