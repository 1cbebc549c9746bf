"""What the endpoints depend on: the app's state, the caller (an authenticated key), role
requirements, the store and the service.

The state is ``request.app.state.yuyue`` (:func:`get_state`, typed). Dependencies are ``async def``
so they run on the event loop: a plain ``def`` would cost a thread-pool round trip each, per
request. Keys are cached (:class:`KeyStore`, 5 s), so the usual path does no I/O; a cache miss looks
the key up in a worker thread (:func:`authenticate`), so a slow or locked ``api_keys`` table holds up
that request only (up to the database's lock/statement timeout, then 503), never ``/healthz`` or
the requests of keys already cached.

The per-message endpoint takes none of these: it calls :func:`authenticate` and
:func:`check_model` itself (FastAPI's dependency resolution was about half of the framework's
time per message).
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import datetime
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from yuyue.serving.auth import (
    ApiKey,
    Caller,
    Role,
    hash_key,
    parse_key,
    report_consultant,
    require_role,
)
from yuyue.serving.auth import require_group as auth_require_group
from yuyue.serving.edge import client_address
from yuyue.serving.errors import Forbidden, InvalidInput, http_error
from yuyue.serving.service import ChatService
from yuyue.serving.state import Yuyue
from yuyue.serving.store import EventStore, Filters

API_KEY = APIKeyHeader(
    name="X-API-Key",
    scheme_name="APIKeyHeader",
    auto_error=False,
    description="the API key: yy_<prefix>_<secret>",
)
BEARER = HTTPBearer(scheme_name="HTTPBearer", auto_error=False, description="Authorization: Bearer <API key>")
SECURITY: list[dict[str, list[str]]] = [
    {"APIKeyHeader": []},
    {"HTTPBearer": []},
]  # the same, for an endpoint that checks keys itself


# ---- the state, the store, the service ---------------------------------------------------
def get_state(request: Request) -> Yuyue:
    """The app's shared state (set by ``create_app``)."""
    state: Yuyue = request.app.state.yuyue
    return state


async def _state(request: Request) -> Yuyue:
    return get_state(request)


async def _service(request: Request) -> ChatService:
    return get_state(request).service


async def _store(request: Request) -> EventStore:
    return get_state(request).service.store


State = Annotated[Yuyue, Depends(_state)]
Service = Annotated[ChatService, Depends(_service)]
Store = Annotated[EventStore, Depends(_store)]


# ---- the caller ----------------------------------------------------------------------------
async def caller(
    request: Request,
    x_api_key: Annotated[str | None, Security(API_KEY)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> Caller:
    return await authenticate(x_api_key or (bearer.credentials if bearer else None), request)


def raw_key(request: Request) -> str | None:
    """The raw API key a request carries (``X-API-Key``, else ``Authorization: Bearer``), without
    FastAPI's security dependencies (for the per-message endpoint)."""
    authorization = request.headers.get("authorization")
    return request.headers.get("x-api-key") or (
        authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else None
    )


# worker threads for key look-ups that miss the cache: their own, so that look-ups waiting on a locked
# api_keys table never take the threads of the chat endpoints (and a flood of new keys queues here)
KEY_LOOKUP_THREADS = 8
_key_lookups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _lookup_limiter() -> anyio.CapacityLimiter:
    """The running event loop's limiter (one per loop: a limiter's waiters belong to one loop)."""
    loop = asyncio.get_running_loop()
    limiter = _key_lookups.get(loop)
    if limiter is None:
        limiter = _key_lookups[loop] = anyio.CapacityLimiter(KEY_LOOKUP_THREADS)
    return limiter


async def authenticate(raw: str | None, request: Request) -> Caller:
    """The caller holding the raw key ``raw``: 401 without a valid key, 429 over its rate limit.

    A cached key is answered on the event loop (no I/O); a well-formed key that is not cached is looked
    up in a worker thread, so the loop (``/healthz``, cached keys) never waits on the database; a
    malformed key is refused without a look-up. A database that does not answer within its timeouts
    gives a 503 with ``Retry-After`` (the error handlers)."""
    state = get_state(request)
    if not raw:
        raise _refused(request, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    key: ApiKey | None = state.keys.cached(raw)
    if key is None and parse_key(raw) is not None:
        key = await anyio.to_thread.run_sync(state.keys.authenticate, raw, limiter=_lookup_limiter())
    if key is None:
        raise _refused(request, "invalid or revoked API key")
    per_minute = key.rate_per_minute or state.settings.rate_per_minute
    ok, retry = state.limiter.check(key.id, per_minute)
    if not ok:
        detail = f"rate limit of {per_minute}/min exceeded for key {key.name!r}"
        state.blocked.block("key:" + hash_key(raw.strip()), retry, detail)
        raise http_error(429, detail, retry)
    return Caller(key.name, key.role, key.consultant_id, key.hospitals or None)


def _refused(request: Request, detail: str) -> Exception:
    """401, or 429 once the client's address has spent its budget of failed authentications."""
    state = get_state(request)
    limit = state.settings.auth_failures_per_minute
    addr = client_address(request.scope)
    ok, retry = state.limiter.check(f"auth-failures:{addr}", limit)
    if not ok:
        detail = f"too many failed authentications from {addr} (limit {limit}/min); retry later"
        state.blocked.block("addr:" + addr, retry, detail)
        return http_error(429, detail, retry)
    return http_error(401, detail)


# ---- roles ---------------------------------------------------------------------------------
def require(*roles: Role) -> Any:
    """A dependency: the caller, when its role is one of ``roles`` or admin; 403 otherwise."""

    async def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
        return require_role(who, roles)

    return check


def require_group(*roles: Role, what: str) -> Any:
    """A dependency: the caller, when its role is one of ``roles`` (or admin) and its key is group-level
    (``what`` concerns every hospital); 403 otherwise, before the body is read."""

    async def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
        return auth_require_group(require_role(who, roles), what)

    return check


Who = Annotated[Caller, Depends(caller)]
# every role reads the follow-up queue and the funnel; a consultant's view is narrowed to its own
# chats (see report_filters)
AnyRole = Annotated[Caller, Depends(require(Role.SUPERVISOR, Role.ANALYST, Role.CONSULTANT))]
Analyst = Annotated[Caller, Depends(require(Role.ANALYST))]


# ---- the model -----------------------------------------------------------------------------
def check_model(state: Yuyue) -> None:
    """503 while no model is loaded."""
    if not state.models.ready:
        raise http_error(
            503, "no model loaded yet: train and promote one (yuyue train), then POST /v1/admin/reload"
        )


async def model_ready(request: Request) -> None:
    check_model(get_state(request))


# ---- report filters ------------------------------------------------------------------------
def report_filters(
    who: Caller,
    hospital: str | None,
    department: str | None,
    consultant: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Filters:
    """The filters of a report (queue, funnel, export) as ``who`` may see it: a consultant's own chats,
    the key's hospitals (403 asking for another hospital)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} must carry a timezone offset, e.g. 2025-03-05T00:00:00+08:00")
    consultant = report_consultant(who, consultant)
    return Filters(hospital, department, consultant, since, until, hospitals=caller_hospitals(who, hospital))


def caller_hospitals(who: Caller, hospital: str | None = None) -> tuple[str, ...] | None:
    """``Filters.hospitals`` for ``who``: the key's hospitals (None: every hospital); 403 when the
    request asks for a ``hospital`` outside them."""
    if hospital is not None and not who.in_scope(hospital):
        scope = ", ".join(repr(h) for h in who.hospitals or ())
        raise Forbidden(f"hospital {hospital!r} is outside key {who.name!r}'s hospitals ({scope})")
    return who.hospitals
