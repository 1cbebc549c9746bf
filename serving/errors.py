"""Errors and their answers, mapped once.

Every error the API answers carries its status: :class:`ApiError` subclasses name it themselves
(:class:`Forbidden` 403, :class:`InvalidInput` 422), the store's errors get theirs from
:data:`STORE_STATUS`. :func:`install` registers the handlers on an app; :data:`ERRORS` /
:func:`errors` document the same answers in the OpenAPI document.

Bodies: ``{"detail": str}``; a 422 adds ``errors`` (one item per problem, quoting at most
:data:`QUOTE_CHARS` characters of the offending value). A dropped or unreachable database is a
503 with ``Retry-After`` (not the caller's fault).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as sa_exc

from yuyue.serving import schemas
from yuyue.serving.store import Conflict, NotFound

log = logging.getLogger("yuyue.serving")
QUOTE_CHARS = 64  # a 422 quotes at most this much of an offending value
WWW_AUTHENTICATE = 'Bearer realm="yuyue"'


class ApiError(Exception):
    """An error the API answers with :attr:`status` and ``{"detail": <message>}``."""

    status = 500

    def response(self) -> Response:
        return JSONResponse({"detail": str(self)}, status_code=self.status)


class Forbidden(ApiError):
    """The caller's role or consultant may not do this."""

    status = 403


class InvalidInput(ApiError):
    """Well-formed request that the chat's state does not allow (out of order, closed …)."""

    status = 422

    def response(self) -> Response:  # the 422 shape of every 422
        return validation_problem([{"type": "invalid_input", "loc": ["body"], "msg": str(self)}])


# the store's errors (it knows nothing of HTTP)
STORE_STATUS: dict[type[Exception], int] = {NotFound: 404, Conflict: 409}


def install(app: FastAPI) -> None:
    """Register every error handler on ``app``."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(ApiError, _api_error)
    for exc_type in STORE_STATUS:
        app.add_exception_handler(exc_type, _store_error)
    app.add_exception_handler(sa_exc.OperationalError, _database_down)
    app.add_exception_handler(sa_exc.InterfaceError, _database_down)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(exc.errors())


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _store_error(request: Request, exc: Exception) -> Response:
    status = next(s for t, s in STORE_STATUS.items() if isinstance(exc, t))
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def _database_down(request: Request, exc: Exception) -> Response:
    """The database went away (restart, failover, a dropped connection): not the caller's fault, and
    worth a retry; the pool replaces the dead connection on the next request."""
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


def http_error(status: int, detail: str, retry_after: float | None = None) -> HTTPException:
    """An :class:`HTTPException` with ``Retry-After`` (when given) and, for a 401, ``WWW-Authenticate``."""
    headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))} if retry_after else {}
    if status == 401:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    return HTTPException(status_code=status, detail=detail, headers=headers or None)


# ---- the same answers in the OpenAPI document ----------------------------------------------
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}
ERRORS: dict[int, dict[str, Any]] = {
    400: {"model": schemas.Problem, "description": "a body that is not JSON text, or a bad Content-Length"},
    401: {
        "model": schemas.Problem,
        "description": "no API key, or an unknown or revoked one",
        "headers": {"WWW-Authenticate": {"description": WWW_AUTHENTICATE, "schema": {"type": "string"}}},
    },
    403: {"model": schemas.Problem, "description": "the key's role or consultant may not do this"},
    404: {"model": schemas.Problem, "description": "no such conversation or suggestion"},
    409: {
        "model": schemas.Problem,
        "description": "conflicts with the chat's state (exists, closed, seq taken)",
    },
    413: {"model": schemas.Problem, "description": "the body exceeds max_body_bytes"},
    422: {
        "model": schemas.ValidationProblem,
        "description": "invalid input: every problem named, with its field",
    },
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


# ---- 422 bodies --------------------------------------------------------------------------------
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
            item["ctx"] = {
                str(k): _quote(v if isinstance(v, int | float | str | None) else str(v))
                for k, v in e["ctx"].items()
            }
        items.append(item)
    return fast_json({"detail": "; ".join(problems), "errors": items}, status)


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


def fast_json(obj: Any, status: int = 200) -> Response:
    """JSON with orjson, skipping FastAPI's generic encoder (the per-message answer is on the hot path)."""
    return Response(
        orjson.dumps(obj, default=str, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )
