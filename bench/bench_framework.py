"""What the web framework adds per message: the same chats through the ASGI app and straight into ChatService.

Run: .venv/bin/python bench/bench_framework.py --model-dir DIR [--chats 60]

Builds the app on a temporary SQLite store and in-process cache, then replays
``--chats`` simulated chats twice: as ASGI calls into the FastAPI app (key check,
body validation, routing, JSON answer; no sockets, no uvicorn) and as direct
``ChatService.open`` / ``message`` calls with the answer serialised by orjson. The
difference in CPU time per message is FastAPI's share; uvicorn and the kernel's
socket work come on top (``bench/bench_serve.py`` measures the whole server).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from threadpoolctl import threadpool_limits

from yuyue.config import Settings
from yuyue.data.contract import Conversation
from yuyue.data.simulator import iter_records
from yuyue.models.bundle import YuyueModel
from yuyue.serving.app import create_app
from yuyue.serving.service import Caller


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--chats", type=int, default=60)
    ap.add_argument("--seed", type=int, default=424242)
    args = ap.parse_args()
    threadpool_limits(1)  # as `yuyue serve`
    convs = [Conversation.model_validate(r).without_truth() for r in iter_records(args.chats, seed=args.seed)]
    with tempfile.TemporaryDirectory() as var:
        app = create_app(Settings(var_dir=var), YuyueModel.load(args.model_dir), "bench")
        state = app.state.yuyue
        key = state.keys.create("bench", "admin", rate_per_minute=10**9)[1]
        asgi_ms, n = asyncio.run(_through_asgi(app, key, convs))
        who = Caller("bench", "admin")
        cpu0 = time.process_time()
        for conv in convs:
            opened = state.service.open(
                who,
                conversation_id=None,
                started_at=conv.started_at,
                visit=None,
                hospital=None,
                department=None,
                project=None,
                consultant_id=None,
            )
            orjson.dumps(opened)
            for m in conv.messages:
                orjson.dumps(
                    state.service.message(who, opened["conversation_id"], m.role, m.text, m.at, k=3),
                    default=str,
                )
        direct_ms = (time.process_time() - cpu0) / n * 1e3
    print(
        f"{n} messages in {len(convs)} chats: through the ASGI app {asgi_ms:.2f} ms CPU per message, "
        f"ChatService directly {direct_ms:.2f} ms; the framework adds {asgi_ms - direct_ms:.2f} ms"
    )


async def _through_asgi(app: Any, key: str, convs: list[Conversation]) -> tuple[float, int]:
    async def call(path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        raw = orjson.dumps(body)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"x-api-key", key.encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": raw, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] not in (200, 201):
            raise RuntimeError(f"{path}: {sent[0]['status']} {sent[1].get('body', b'')[:300]!r}")
        return sent

    n = 0
    async with app.router.lifespan_context(app):
        cpu0 = time.process_time()
        for conv in convs:
            sent = await call("/v1/conversations", {"started_at": conv.started_at.isoformat()})
            cid = orjson.loads(sent[1]["body"])["conversation_id"]
            for m in conv.messages:
                await call(
                    f"/v1/conversations/{cid}/messages",
                    {"role": m.role, "text": m.text, "at": m.at.isoformat()},
                )
                n += 1
        return (time.process_time() - cpu0) / n * 1e3, n


if __name__ == "__main__":
    main()
