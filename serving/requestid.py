"""A request id on every answer (``X-Request-ID``) and on every log line written while handling it."""

from __future__ import annotations

import re
import uuid
from typing import Any

from yuyue.config.logs import request_id

_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class RequestIdMiddleware:
    """Pure ASGI middleware: takes the client's ``X-Request-ID`` when it is short and plain, else makes one."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
        rid = given.decode() if _VALID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())],
                }
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
