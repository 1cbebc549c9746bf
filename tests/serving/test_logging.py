"""Logging set-up and request ids: one handler, timestamps, JSON lines, the id on answers and log lines."""

from __future__ import annotations

import io
import json
import logging

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from yuyue.config import logs
from yuyue.serving.requestid import RequestIdMiddleware


def _app() -> Starlette:
    def hello(request):
        logging.getLogger("yuyue.serving").warning("handled %s", request.url.path)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/x", hello)])
    app.add_middleware(RequestIdMiddleware)
    return app


def _capture(json_lines: bool) -> io.StringIO:
    logs.configure_logging("INFO", json_lines=json_lines)
    buf = io.StringIO()
    (handler,) = [h for h in logging.getLogger().handlers if h.get_name() == "yuyue"]
    handler.setStream(buf)
    return buf


def test_json_lines_carry_the_request_id_of_the_answer():
    buf = _capture(json_lines=True)
    try:
        r = TestClient(_app()).get("/x")
        rid = r.headers["x-request-id"]
        assert len(rid) == 32
        lines = [json.loads(x) for x in buf.getvalue().strip().splitlines()]
        (line,) = [x for x in lines if x["message"] == "handled /x"]
        assert line["request_id"] == rid and line["level"] == "WARNING" and line["logger"] == "yuyue.serving"
        assert line["ts"].endswith("+00:00")
    finally:
        logs.configure_logging("WARNING")


def test_client_request_id_is_kept_when_plain_and_replaced_otherwise():
    buf = _capture(json_lines=False)
    try:
        client = TestClient(_app())
        assert (
            client.get("/x", headers={"X-Request-ID": "desk-7.abc"}).headers["x-request-id"] == "desk-7.abc"
        )
        assert "[desk-7.abc] handled /x" in buf.getvalue()
        odd = client.get("/x", headers={"X-Request-ID": "a b;" + "x" * 100}).headers["x-request-id"]
        assert odd != "a b" and len(odd) == 32
        logging.getLogger("yuyue").warning("outside a request")
        assert "[-] outside a request" in buf.getvalue()
    finally:
        logs.configure_logging("WARNING")


def test_configure_twice_keeps_one_handler():
    logs.configure_logging("INFO")
    logs.configure_logging("WARNING", json_lines=True)
    assert [h.get_name() for h in logging.getLogger().handlers].count("yuyue") == 1
    assert logging.getLogger().level == logging.WARNING
