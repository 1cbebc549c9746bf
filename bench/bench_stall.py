"""End-to-end stall check (issue 15): adversarial 10,000-character messages against the real server
while another thread polls ``/healthz`` every 10 ms.

The server is ``yuyue serve`` (``bench_serve.Server``, one worker, SQLite unless ``--pg``). For every
text kind (``bench_adversarial.adversarial_texts``; the issue's ``"qq号是12345 " * 1000`` is ``qq``)
it opens a chat and sends, in order:

1. the text as the visitor's message, then a short visitor message (the suggestion context still holds
   the text, so it is scanned again);
2. the text as the consultant's message, then a short visitor message.

Per message it prints the answer's status and time, ``/healthz``'s answers, worst and p99 latency while
the message was in flight (the polls that overlapped it), and the short message's time. Targets: the
message well under 1 s, ``/healthz`` under 100 ms.

    .venv/bin/python bench/bench_stall.py --model /work/scratch/testmodel [--kinds qq,phone] [--pg]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

TARGET_MESSAGE_MS = 1000.0
TARGET_HEALTHZ_MS = 100.0
DEFAULT_KINDS = ("qq", "phone", "digits", "digits_spaced", "wechat", "time", "mixed", "signals", "surnames")
SHORT = "好的，那大概多少钱"


def _sibling(name: str) -> ModuleType:
    mod_name = f"yuyue_bench_{name}"
    if mod_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod_name, Path(__file__).with_name(f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[mod_name]


def adversarial_texts(length: int = 10_000, kinds: tuple[str, ...] = DEFAULT_KINDS) -> dict[str, str]:
    """Kind -> text of ``length`` characters; ``qq`` is the issue's ``"qq号是12345 " * 1000``."""
    texts = _sibling("bench_adversarial").adversarial_texts(length)
    if kinds == ("all",):
        return texts
    missing = [k for k in kinds if k not in texts]
    if missing:
        raise SystemExit(f"unknown text kinds {missing}; known: {', '.join(sorted(texts))}")
    return {k: texts[k] for k in kinds}


# ---- the /healthz poller ---------------------------------------------------------------------
class Poller:
    """GET ``/healthz`` in a thread every ``interval_s`` (after the previous answer); keeps every poll's
    ``(start, end, status)`` in ``time.perf_counter`` seconds."""

    def __init__(self, base_url: str, interval_s: float = 0.010):
        self.base_url = base_url
        self.interval_s = interval_s
        self.polls: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    status = client.get("/healthz").status_code
                except httpx.HTTPError:
                    status = 0
                self.polls.append((t0, time.perf_counter(), status))
                self._stop.wait(self.interval_s)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def during(self, t0: float, t1: float) -> list[tuple[float, float, int]]:
        """The polls that overlapped ``[t0, t1]`` (started before its end, ended after its start)."""
        return [p for p in list(self.polls) if p[0] < t1 and p[1] > t0]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Row:
    kind: str
    role: str
    status: int
    message_ms: float
    healthz_n: int  # polls that overlapped the message
    healthz_done_inside: int  # ... of which answered before the message's answer
    healthz_worst_ms: float
    healthz_p99_ms: float
    healthz_bad: int  # polls that overlapped and did not answer 200
    next_status: int
    next_ms: float
    extra: dict[str, Any] = field(default_factory=dict)


def _timed_post(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[int, float, float, float]:
    t0 = time.perf_counter()
    r = client.post(path, json=body)
    t1 = time.perf_counter()
    return r.status_code, t0, t1, (t1 - t0) * 1000


def run(base_url: str, key: str, texts: dict[str, str], poll_s: float = 0.010) -> list[Row]:
    """Send every text as the visitor's and as the consultant's message (each followed by a short
    visitor message) with ``/healthz`` polled meanwhile; one :class:`Row` per text and role."""
    rows = []
    headers = {"X-API-Key": key}
    with (
        httpx.Client(base_url=base_url, headers=headers, timeout=600) as client,
        Poller(base_url, poll_s) as poller,
    ):
        for kind, text in texts.items():
            cid = f"stall-{kind}-{int(time.time() * 1000)}"
            r = client.post("/v1/conversations", json={"conversation_id": cid})
            if r.status_code != 201:
                raise RuntimeError(f"opening a chat: {r.status_code} {r.text[:300]}")
            path = f"/v1/conversations/{cid}/messages"
            client.post(path, json={"role": "visitor", "text": "你好，想问下隆鼻"})
            for role in ("visitor", "consultant"):
                status, t0, t1, ms = _timed_post(client, path, {"role": role, "text": text})
                time.sleep(2 * poll_s)  # let the last overlapping poll finish
                polls = poller.during(t0, t1)
                lat = [(e - s) * 1000 for s, e, _ in polls]
                next_status, _, _, next_ms = _timed_post(client, path, {"role": "visitor", "text": SHORT})
                rows.append(
                    Row(
                        kind=kind,
                        role=role,
                        status=status,
                        message_ms=ms,
                        healthz_n=len(polls),
                        healthz_done_inside=sum(1 for _, e, _ in polls if e <= t1),
                        healthz_worst_ms=max(lat, default=float("nan")),
                        healthz_p99_ms=pct(lat, 0.99),
                        healthz_bad=sum(1 for *_, st in polls if st != 200),
                        next_status=next_status,
                        next_ms=next_ms,
                    )
                )
    return rows


def table(rows: list[Row]) -> str:
    head = (
        f"{'kind':<14} {'role':<10} {'status':>6} {'msg ms':>8} {'healthz n':>9} {'worst ms':>8} "
        f"{'p99 ms':>7} {'next':>4} {'next ms':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.kind:<14} {r.role:<10} {r.status:>6} {r.message_ms:>8.1f} {r.healthz_n:>9} "
            f"{r.healthz_worst_ms:>8.1f} {r.healthz_p99_ms:>7.1f} {r.next_status:>4} {r.next_ms:>8.1f}"
        )
    worst_msg = max(r.message_ms for r in rows)
    worst_hz = max((r.healthz_worst_ms for r in rows if r.healthz_n), default=float("nan"))
    worst_next = max(r.next_ms for r in rows)
    ok = (
        worst_msg < TARGET_MESSAGE_MS
        and worst_hz < TARGET_HEALTHZ_MS
        and all(r.status == 200 and r.next_status == 200 and not r.healthz_bad for r in rows)
    )
    lines.append(
        f"worst: message {worst_msg:.1f} ms (target < {TARGET_MESSAGE_MS:.0f}), /healthz {worst_hz:.1f} ms "
        f"(target < {TARGET_HEALTHZ_MS:.0f}), next short message {worst_next:.1f} ms -> "
        + ("OK" if ok else "MISSED")
    )
    return "\n".join(lines)


@contextlib.contextmanager
def server(model_dir: Path, pg: bool = False) -> Iterator[tuple[str, str]]:
    """``yuyue serve`` on SQLite (or a throwaway PostgreSQL database); yields ``(base_url, key)``."""
    bs = _sibling("bench_serve")
    with contextlib.ExitStack() as stack:
        var = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="yuyue-stall-")))
        database_url = stack.enter_context(bs.throwaway_pg()) if pg else None
        srv = bs.Server(model_dir, var, database_url=database_url)
        key = srv.create_key("stall", "supervisor")
        stack.enter_context(srv)
        srv.start()
        yield srv.base_url, key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="a saved model bundle directory")
    ap.add_argument(
        "--kinds", default=",".join(DEFAULT_KINDS), help="text kinds (bench_adversarial), or 'all'"
    )
    ap.add_argument("--length", type=int, default=10_000)
    ap.add_argument("--poll-ms", type=float, default=10.0)
    ap.add_argument("--pg", action="store_true", help="PostgreSQL (a throwaway database) instead of SQLite")
    args = ap.parse_args()
    texts = adversarial_texts(args.length, tuple(k for k in args.kinds.split(",") if k))
    with server(args.model, args.pg) as (base_url, key):
        rows = run(base_url, key, texts, args.poll_ms / 1000)
    print(
        f"{len(texts)} kinds x {args.length} characters, /healthz every {args.poll_ms:g} ms, "
        f"{'PostgreSQL' if args.pg else 'SQLite'}, one worker"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
