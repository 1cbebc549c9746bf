"""The edge of the HTTP API: what is refused before a request reaches an endpoint.

- **Body size**: a request whose ``Content-Length`` exceeds ``max_body_bytes`` gets 413 before a
  byte of its body is read; a body sent without a length (chunked) is counted as it arrives and
  refused with 413 as soon as it passes the limit (never read in full).
- **Refusals that cost nothing**: :class:`Blocklist` remembers, in process, who the rate limiter
  refused and until when: a key over its limit, a client address over its budget of failed
  authentications. Their next requests get 429 here, without reading the body, looking the key
  up, asking Redis or routing, so a client flooding at its limit costs the others next to
  nothing. A token bucket cannot refill before the retry time it named, so answering 429
  until then refuses exactly what the limiter would have refused.
- **The time window**: :data:`TIME_WINDOW` holds how far back and ahead of now the API
  accepts timestamps, set per app for the request's validation (see :func:`recent`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, AwareDatetime
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException

from yuyue.data.contract import check_instant

DEFAULT_WINDOW = (timedelta(days=3650), timedelta(days=30))
TIME_WINDOW: ContextVar[tuple[timedelta, timedelta]] = ContextVar("yuyue_time_window", default=DEFAULT_WINDOW)
MAX_BLOCKED = 10_000


def in_window(value: datetime) -> datetime:
    """``value`` unless it lies outside the accepted window around now (a naive value is left to the
    caller, which asks for an offset); a clear error naming the window otherwise."""
    if value.tzinfo is None:
        return value
    check_instant(value)
    back, ahead = TIME_WINDOW.get()
    now = datetime.now(UTC)
    if value > now + ahead or value < now - back:
        raise PydanticCustomError(
            "datetime_outside_window",
            "{value} is not within {back} days before and {ahead} days after now ({now})",
            {
                "value": value.isoformat(),
                "back": f"{back.total_seconds() / 86400:g}",
                "ahead": f"{ahead.total_seconds() / 86400:g}",
                "now": now.replace(microsecond=0).isoformat(),
            },
        )
    return value


# a timestamp the API accepts: with an offset, within the window around now
Recent = Annotated[AwareDatetime, AfterValidator(in_window)]
# a query filter: the offset is asked for by the endpoint (its own message), the window checked here
RecentFilter = Annotated[datetime, AfterValidator(in_window)]


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, length: int | None = None):
        told = f"{length} bytes" if length is not None else "more"
        super().__init__(413, f"request body of {told} exceeds the limit of {limit} bytes")


class Blocklist:
    """Who is refused until when: ``ident -> (until (monotonic), detail)``; in process, no I/O."""

    def __init__(self, max_items: int = MAX_BLOCKED):
        self._until: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self.max_items = max_items

    def __len__(self) -> int:
        return len(self._until)

    def block(self, ident: str, retry_after: float, detail: str) -> None:
        with self._lock:
            if len(self._until) >= self.max_items:
                now = time.monotonic()
                self._until = {k: v for k, v in self._until.items() if v[0] > now}
                if len(self._until) >= self.max_items:
                    self._until.clear()
            self._until[ident] = (time.monotonic() + retry_after, detail)

    def blocked(self, ident: str) -> tuple[float, str] | None:
        """``(seconds left, detail)`` while ``ident`` is refused, else None."""
        hit = self._until.get(ident)
        if hit is None:
            return None
        left = hit[0] - time.monotonic()
        if left <= 0:
            with self._lock:
                self._until.pop(ident, None)
            return None
        return left, hit[1]

    def unblock(self, ident: str) -> None:
        with self._lock:
            self._until.pop(ident, None)


def api_key_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The raw API key a request carries (``X-API-Key`` first, then ``Authorization: Bearer``)."""
    bearer = None
    for name, value in headers:
        if name == b"x-api-key" and value:
            return value.decode("latin-1")
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:].decode("latin-1").strip() or None
    return bearer


def client_address(scope: Mapping[str, Any]) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


class EdgeMiddleware:
    """Pure ASGI middleware: the time window for validation, the body size limit, and 429s for
    whoever ``gate(scope, raw_key)`` says is blocked (``(retry_after, detail)`` or None)."""

    def __init__(
        self,
        app: Any,
        *,
        max_body_bytes: int,
        window: tuple[timedelta, timedelta] = DEFAULT_WINDOW,
        gate: Callable[[dict[str, Any], str | None], tuple[float, str] | None] | None = None,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.window = window
        self.gate = gate

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        TIME_WINDOW.set(self.window)
        headers = scope.get("headers") or []
        if self.gate is not None:
            refused = self.gate(scope, api_key_of(headers))
            if refused is not None:
                retry, detail = refused
                await _answer(send, 429, detail, {b"retry-after": str(max(1, int(retry + 0.999))).encode()})
                return
        length = None
        for name, value in headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _answer(send, 400, f"invalid Content-Length {value[:32].decode('latin-1')!r}")
                    return
                break
        limit = self.max_body_bytes
        if length is not None and length > limit:
            await _answer(send, 413, BodyTooLarge(limit, length).detail, {b"connection": b"close"})
            return

        seen = 0
        started = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _answer(send, 413, exc.detail, {b"connection": b"close"})


async def _answer(send: Any, status: int, detail: str, headers: dict[bytes, bytes] | None = None) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or {}).items(),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
