"""Load benchmark of the per-message endpoint, through a real ``yuyue serve`` process.

Run:
    .venv/bin/python bench/bench_serve.py --model-dir DIR                # SQLite + in-process cache
    .venv/bin/python bench/bench_serve.py --model-dir DIR --pg --redis   # PostgreSQL + Redis
    .venv/bin/python bench/bench_serve.py --model-dir DIR --all          # both, one table
    options: --messages 3000 | --seconds 60, --chats 50, --think-ms 0, --mem-chats 400

For each configuration the script

1. creates a fresh var dir (and, with ``--pg``, a throwaway PostgreSQL database,
   dropped at the end), creates an admin key ``bench`` with a rate limit of
   1,000,000/min (``yuyue keys create``), starts ``yuyue serve --model-dir …`` on a
   free loopback port (one uvicorn worker) and waits for ``/readyz``;
2. pre-fills a few long chats (simulated chats concatenated with increasing
   timestamps) to ~190 messages (this is also the warm-up, not measured);
3. drives the server with ``--chats`` concurrent chats, each a coroutine that
   sends its chat's messages in order with one request in flight (closed loop,
   optional ``--think-ms`` pause between a chat's messages). The long chats
   continue past message 200 in some of the slots, new simulated chats run in the
   others, so latency at message ~5 and at message ~200 is measured at the same
   time under the same load;
4. opens ``--mem-chats`` more chats with a few messages each and reads the
   server's RSS (``/proc/<pid>/status``) before and after: RSS growth per open chat;
   the cached session blob size comes from Redis (``STRLEN``) or, with the
   in-process cache, by replaying the same chats through the model here;
5. stops the server (always, also on errors or Ctrl-C).

Latency is measured by the client (request sent → response parsed); with a
closed loop and no think time, latency ≈ concurrency / throughput (Little's law),
so use ``--think-ms`` to measure latency below saturation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"p50_ms": 10.0, "p99_ms": 40.0, "msgs_per_s": 300.0, "ratio_200_5": 1.2}
PG_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_DEFAULT = "redis://127.0.0.1:6379/14"
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)  # the server went away or did not answer
SESSION_PREFIX = "yuyue:session:"  # serving.cache.RedisCache default prefix


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ---- the server process -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_ms(header: str) -> float | None:
    """``app;dur=3.21`` (the Server-Timing header the app sets) → 3.21."""
    for part in header.split(";"):
        if part.strip().startswith("dur="):
            return float(part.strip()[4:])
    return None


class ServerError(RuntimeError):
    pass


class Server:
    """``yuyue serve --model-dir`` as a subprocess on loopback (``workers`` uvicorn workers, default 1).

    ``var_dir`` holds the log (``server.log``) and, without ``database_url``, the SQLite
    database. ``start()`` may be called again after ``kill()`` (same var dir and database).
    """

    def __init__(
        self,
        model_dir: Path,
        var_dir: Path,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        port: int | None = None,
        workers: int = 1,
    ):
        self.workers = workers
        self.model_dir = Path(model_dir).resolve()
        self.var_dir = Path(var_dir).resolve()
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.redis_url = redis_url
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.var_dir / "server.log"
        self.proc: subprocess.Popen | None = None

    # the command: this interpreter, so it works from the venv and from pytest alike
    @staticmethod
    def yuyue() -> list[str]:
        return [sys.executable, "-m", "yuyue.cli.main"]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("YUYUE_")}
        env["YUYUE_VAR_DIR"] = str(self.var_dir)
        env["YUYUE_CONFIG"] = str(self.var_dir / "no-config.toml")  # ignore any yuyue.toml in the checkout
        if self.database_url:
            env["YUYUE_DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["YUYUE_REDIS_URL"] = self.redis_url
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def create_key(self, name: str = "bench", role: str = "admin", rate: int = 1_000_000) -> str:
        """``yuyue keys create NAME --role ROLE --rate RATE``; returns the raw key."""
        cmd = [*self.yuyue(), "keys", "create", name, "--role", role, "--rate", str(rate)]
        out = subprocess.run(cmd, cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise ServerError(
                f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
            )
        lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        return lines[-1]

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerError("server not started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 240.0) -> float:
        """Start the server and wait until ``/readyz`` answers 200; returns the seconds it took."""
        if self.alive():
            raise ServerError("server already running")
        cmd = [
            *self.yuyue(),
            "serve",
            "--model-dir",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *(["--workers", str(self.workers)] if self.workers > 1 else []),
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed by the child's exit; we keep no handle)
        log.write(f"\n==== {datetime.now().isoformat()} {' '.join(cmd)}\n".encode())
        log.flush()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = t0 + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise ServerError(
                        f"server exited with {self.proc.returncode} during start-up; log:\n{self.log_tail()}"
                    )
                try:
                    if client.get(self.base_url + "/readyz").status_code == 200:
                        return time.monotonic() - t0
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise ServerError(f"server not ready after {timeout:.0f}s; log:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL (a crash: nothing is flushed, no shutdown hooks run)."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)  # the whole session: worker processes too
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
        if self.proc is None:
            return
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc.wait(timeout=30)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise ServerError("no VmRSS")

    def cpu_s(self) -> float:
        """User + system CPU seconds the server process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---- throwaway PostgreSQL database --------------------------------------------------------
@contextlib.contextmanager
def throwaway_pg(admin_url: str = PG_ADMIN_DEFAULT, prefix: str = "yuyue_bench") -> Iterator[str]:
    """Create a fresh database on the server of ``admin_url``; yield its URL; drop it afterwards."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# ---- chats to replay ----------------------------------------------------------------------
@dataclass
class Chat:
    """One chat to replay: the body that opens it and its messages ``(role, text, at)`` in order."""

    cid: str
    open_body: dict[str, Any]
    messages: list[dict[str, str]]
    kind: str = "normal"
    sent: int = 0  # messages acknowledged so far (the next message's seq)


def _open_body(rec: dict[str, Any], cid: str) -> dict[str, Any]:
    body = {"conversation_id": cid, "started_at": rec["started_at"]}
    for key in ("visit", "department", "project", "hospital", "consultant_id"):
        if rec.get(key) is not None:
            body[key] = rec[key]
    return body


def _msg(m: dict[str, Any], at: str | None = None) -> dict[str, str]:
    return {"role": m["role"], "text": m["text"], "at": at or m["at"]}


def simulated_chats(tag: str, seed: int, start: int = 0, min_messages: int = 1) -> Iterator[Chat]:
    """Simulated chats (``data.simulator.iter_records``) with ids ``<tag>-<i>``, endlessly."""
    from yuyue.data.simulator import iter_records

    i = start
    while True:
        for rec in iter_records(200, seed=seed, start=i):
            i += 1
            msgs = [_msg(m) for m in rec["messages"] if m["role"] in ("visitor", "consultant")]
            if len(msgs) >= min_messages:
                yield Chat(f"{tag}-{i:06d}", _open_body(rec, f"{tag}-{i:06d}"), msgs)


def long_chat(cid: str, n_messages: int, seed: int, start: int) -> Chat:
    """Simulated chats concatenated into one of at least ``n_messages`` messages, timestamps increasing.

    Each further chat keeps its own gaps and starts 60 s after the previous one ended.
    """
    from yuyue.data.simulator import iter_records

    first: dict[str, Any] | None = None
    msgs: list[dict[str, str]] = []
    last: datetime | None = None
    for rec in iter_records(10_000, seed=seed, start=start):
        parts = [m for m in rec["messages"] if m["role"] in ("visitor", "consultant")]
        if not parts:
            continue
        if first is None:
            first = rec
            shift = timedelta(0)
        else:
            shift = (last + timedelta(seconds=60)) - datetime.fromisoformat(parts[0]["at"])
        for m in parts:
            at = datetime.fromisoformat(m["at"]) + shift
            msgs.append(_msg(m, at.isoformat()))
            last = at
        if len(msgs) >= n_messages:
            break
    assert first is not None
    return Chat(cid, _open_body(first, cid), msgs, kind="long")


# ---- the async driver ---------------------------------------------------------------------
@dataclass
class Sample:
    t: float  # monotonic time the request was sent
    ms: float  # client latency
    pos: int  # position of the message in its chat (seq it should get)
    status: int  # HTTP status, 0 for a transport error
    kind: str  # normal | long
    server_ms: float | None = None  # the server's own handling time (Server-Timing header)
    seq: int | None = None
    role: str = ""  # visitor | consultant (a visitor message also gets reply suggestions)


@dataclass
class Budget:
    max_messages: int | None
    deadline: float | None
    started: int = 0

    def exhausted(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return True
        return self.max_messages is not None and self.started >= self.max_messages

    def take(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return False
        if self.max_messages is not None and self.started >= self.max_messages:
            return False
        self.started += 1
        return True


@dataclass
class Driver:
    """Sends chats to the server; one coroutine per chat slot, one request in flight per chat."""

    base_url: str
    key: str
    think_s: float = 0.0
    think_dist: str = "exp"  # "exp": exponential pauses with mean think_s (chats desynchronised); "fixed"
    seed: int = 0
    samples: list[Sample] = field(default_factory=list)
    open_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # every failure, transport errors included
    http_errors: list[str] = field(default_factory=list)  # answers with an unexpected status
    acked: list[tuple[str, int]] = field(default_factory=list)  # (conversation id, seq) answered 200
    opened: list[str] = field(default_factory=list)  # conversation ids answered 201
    attempted: list[str] = field(default_factory=list)  # conversation ids we tried to open

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def pause_s(self) -> float:
        """The next pause between a chat's messages.

        A fixed pause keeps the chats in lockstep (all 50 arrive within a few ms of each other,
        then nothing), so the last of each burst waits for the 49 before it; exponential pauses
        (each chat a Poisson source, as real visitors are) offer the same mean load, spread out.
        """
        if not self.think_s:
            return 0.0
        if self.think_dist == "fixed":
            return self.think_s
        return self._rng.expovariate(1.0 / self.think_s)

    def client(self, connections: int) -> aiohttp.ClientSession:
        # aiohttp rather than httpx: the client shares this machine's two cores with the server,
        # and aiohttp spent a fifth of httpx's CPU time per request here (1.0 vs 5.2 ms)
        connector = aiohttp.TCPConnector(limit=connections + 5, keepalive_timeout=2.0)
        return aiohttp.ClientSession(
            base_url=self.base_url,
            headers={"X-API-Key": self.key, "Content-Type": "application/json"},
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=60.0),
        )

    # keepalive_timeout: uvicorn closes connections idle for 5 s; a pooled connection idle that long could be
    # closed by the server just as the client reuses it (an error on a POST that may or may not have been
    # processed); expiring them on the client side first avoids the race.

    def _error(self, what: str, http: bool = False) -> None:
        self.errors.append(what)
        if http:
            self.http_errors.append(what)

    async def open(self, client: aiohttp.ClientSession, chat: Chat) -> bool:
        self.attempted.append(chat.cid)
        t0 = time.perf_counter()
        try:
            async with client.post("/v1/conversations", data=orjson.dumps(chat.open_body)) as r:
                status, body = r.status, await r.read()
        except TRANSPORT_ERRORS as exc:
            self._error(f"open {chat.cid}: {type(exc).__name__}: {exc}")
            return False
        self.open_ms.append((time.perf_counter() - t0) * 1e3)
        if status != 201:
            self._error(f"open {chat.cid}: {status} {body[:300].decode(errors='replace')}", http=True)
            return False
        self.opened.append(chat.cid)
        return True

    async def send(
        self, client: aiohttp.ClientSession, chat: Chat, budget: Budget, upto: int | None = None
    ) -> bool:
        """Send ``chat``'s next messages (up to position ``upto``) while the budget lasts; False on a transport error."""
        end = len(chat.messages) if upto is None else min(upto, len(chat.messages))
        while chat.sent < end and budget.take():
            pos = chat.sent
            role = chat.messages[pos]["role"]
            t_send = time.monotonic()
            t0 = time.perf_counter()
            try:
                async with client.post(
                    f"/v1/conversations/{chat.cid}/messages", data=orjson.dumps(chat.messages[pos])
                ) as r:
                    status, raw = r.status, await r.read()
                    timing = r.headers.get("server-timing", "")
            except TRANSPORT_ERRORS as exc:
                self.samples.append(
                    Sample(t_send, (time.perf_counter() - t0) * 1e3, pos, 0, chat.kind, role=role)
                )
                self._error(f"message {chat.cid}#{pos}: {type(exc).__name__}: {exc}")
                return False
            ms = (time.perf_counter() - t0) * 1e3
            if status == 200:
                body = orjson.loads(raw)
                seq = body.get("seq")
                self.samples.append(Sample(t_send, ms, pos, 200, chat.kind, _server_ms(timing), seq, role))
                self.acked.append((chat.cid, seq))
                if seq != pos:
                    self._error(f"message {chat.cid}#{pos}: answered seq {seq}, expected {pos}")
            else:
                self.samples.append(Sample(t_send, ms, pos, status, chat.kind, role=role))
                self._error(
                    f"message {chat.cid}#{pos}: {status} {raw[:300].decode(errors='replace')}", http=True
                )
            chat.sent += 1  # the server decides the seq; the next message goes on in order either way
            if self.think_s:
                await asyncio.sleep(self.pause_s())
        return True

    async def slot(
        self, client: aiohttp.ClientSession, first: Chat | None, chats: Iterator[Chat], budget: Budget
    ) -> None:
        """One chat slot: ``first`` (already open) if given, then new chats from ``chats`` until the budget ends."""
        chat = first
        if self.think_s and self.think_dist != "fixed":
            await asyncio.sleep(self._rng.uniform(0, self.think_s))  # start the slots out of step
        while True:
            if chat is None:
                if budget.exhausted():
                    return
                chat = next(chats)
                if not await self.open(client, chat):
                    chat = None
                    continue
            if not await self.send(client, chat, budget):
                return
            if chat.sent < len(chat.messages):
                return  # budget exhausted mid-chat
            chat = None

    async def run(
        self, chats: Iterator[Chat], budget: Budget, concurrency: int, firsts: list[Chat] | None = None
    ) -> float:
        """Run ``concurrency`` slots (the first ones start with ``firsts``); returns the wall time in seconds."""
        firsts = list(firsts or [])
        async with self.client(concurrency) as client:
            t0 = time.perf_counter()
            await asyncio.gather(
                *(
                    self.slot(client, firsts[i] if i < len(firsts) else None, chats, budget)
                    for i in range(concurrency)
                )
            )
            return time.perf_counter() - t0


# ---- statistics ---------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def window(samples: list[Sample], center: int, half: int, kind: str | None = None) -> list[Sample]:
    return [
        s
        for s in samples
        if s.status == 200 and abs(s.pos - center) <= half and (kind is None or s.kind == kind)
    ]


def matched_ratio(
    early: list[Sample], late: list[Sample], field: str = "ms"
) -> tuple[float, dict[str, float]]:
    """Latency at ~200 over latency at ~5, compared role by role.

    A visitor message costs more than a consultant's (it also gets reply suggestions), and the two
    windows need not hold the same mix of roles, so the medians are compared within each role and the
    per-role ratios averaged with the late window's role counts as weights. Returns
    ``(ratio, {role: ratio})``; NaN when no role has samples in both windows.
    """
    per_role, weights = {}, {}
    for role in sorted({s.role for s in late}):
        a = [getattr(s, field) for s in early if s.role == role and getattr(s, field) is not None]
        b = [getattr(s, field) for s in late if s.role == role and getattr(s, field) is not None]
        if a and b:
            per_role[role] = statistics.median(b) / statistics.median(a)
            weights[role] = len(b)
    if not per_role:
        return float("nan"), {}
    return sum(per_role[r] * weights[r] for r in per_role) / sum(weights.values()), per_role


# ---- one benchmark configuration ----------------------------------------------------------
@dataclass
class BenchConfig:
    name: str
    pg: bool = False
    redis: bool = False


@dataclass
class BenchArgs:
    model_dir: Path
    messages: int | None = 3000
    seconds: float | None = None
    chats: int = 50
    think_ms: float = 0.0
    think_dist: str = "exp"
    long_chats: int = 12
    prefill: int = 190
    mem_chats: int = 400
    mem_messages: int = 3
    seed: int = 424242
    pg_admin_url: str = PG_ADMIN_DEFAULT
    redis_url: str = REDIS_DEFAULT
    keep: bool = False


def run_config(cfg: BenchConfig, a: BenchArgs, echo=print) -> dict[str, Any]:
    tag = f"b{secrets.token_hex(3)}"
    var = Path(tempfile.mkdtemp(prefix=f"yuyue-bench-{cfg.name}-"))
    result: dict[str, Any] = {"config": cfg.name, "var_dir": str(var)}
    with contextlib.ExitStack() as stack:
        db_url = stack.enter_context(throwaway_pg(a.pg_admin_url)) if cfg.pg else None
        redis_client = None
        if cfg.redis:
            import redis

            redis_client = redis.Redis.from_url(a.redis_url)
            redis_client.ping()
            stack.callback(redis_client.close)
        server = Server(a.model_dir, var, database_url=db_url, redis_url=a.redis_url if cfg.redis else None)
        key = server.create_key("bench", "admin", 1_000_000)
        echo(
            f"[{cfg.name}] starting server (var {var}{', db ' + db_url.rsplit('/', 1)[-1] if db_url else ''}) …"
        )
        stack.callback(server.stop)
        ready_s = server.start()
        echo(
            f"[{cfg.name}] ready in {ready_s:.1f}s, pid {server.pid}, RSS {server.rss_kb() / 1024:.0f} MB, load {loadavg()}"
        )
        result.update(ready_s=ready_s, rss_start_mb=server.rss_kb() / 1024)
        all_ids: list[str] = []

        # 1. pre-fill the long chats (also the warm-up; not measured)
        long_len = a.prefill + 40 + (a.messages or 0) // max(1, a.chats) + int((a.seconds or 0) * 20)
        longs = [long_chat(f"{tag}-long{j}", long_len, a.seed + 1, start=j * 50) for j in range(a.long_chats)]
        warm = Driver(server.base_url, key)

        async def prefill() -> None:
            async with warm.client(len(longs)) as client:
                opened = await asyncio.gather(*(warm.open(client, c) for c in longs))
                budget = Budget(None, None)
                await asyncio.gather(
                    *(
                        warm.send(client, c, budget, upto=a.prefill)
                        for c, ok in zip(longs, opened, strict=True)
                        if ok
                    )
                )

        t0 = time.perf_counter()
        asyncio.run(prefill())
        all_ids += warm.attempted
        longs = [c for c in longs if c.sent == a.prefill]
        echo(
            f"[{cfg.name}] pre-filled {len(longs)} long chats to {a.prefill} messages in {time.perf_counter() - t0:.1f}s "
            f"({len(warm.errors)} errors), load {loadavg()}"
        )
        if warm.errors:
            echo("  first errors: " + " | ".join(warm.errors[:3]))

        # 2. the measured load
        drv = Driver(server.base_url, key, think_s=a.think_ms / 1000, think_dist=a.think_dist, seed=a.seed)
        budget = Budget(
            a.messages if a.seconds is None else None, time.monotonic() + a.seconds if a.seconds else None
        )
        load_before = loadavg()
        cpu0, client0 = server.cpu_s(), _self_cpu_s()
        wall = asyncio.run(drv.run(simulated_chats(tag, a.seed), budget, a.chats, firsts=longs))
        cpu1, client1 = server.cpu_s(), _self_cpu_s()
        load_after = loadavg()
        all_ids += drv.attempted + [c.cid for c in longs]
        ok = [s for s in drv.samples if s.status == 200]
        lat = [s.ms for s in ok]
        early, late = window(drv.samples, 5, 3), window(drv.samples, 200, 3, kind="long")
        early_ms, late_ms = (
            statistics.median(s.ms for s in early) if early else float("nan"),
            (statistics.median(s.ms for s in late) if late else float("nan")),
        )
        early_srv = [s.server_ms for s in early if s.server_ms is not None]
        late_srv = [s.server_ms for s in late if s.server_ms is not None]
        ratio, by_role = matched_ratio(early, late)
        srv_ratio, srv_by_role = matched_ratio(early, late, "server_ms")
        result.update(
            messages=len(drv.samples),
            ok=len(ok),
            errors=len(drv.errors),
            error_examples=drv.errors[:5],
            seconds=wall,
            msgs_per_s=len(ok) / wall if wall else float("nan"),
            p50_ms=pct(lat, 50),
            p90_ms=pct(lat, 90),
            p99_ms=pct(lat, 99),
            max_ms=max(lat) if lat else float("nan"),
            open_p50_ms=pct(drv.open_ms, 50),
            chats_opened=len(drv.opened),
            at5_ms=early_ms,
            at200_ms=late_ms,
            n_at5=len(early),
            n_at200=len(late),
            ratio_200_5=ratio,
            ratio_200_5_by_role=by_role,
            srv_ratio_200_5=srv_ratio,
            srv_ratio_200_5_by_role=srv_by_role,
            srv_at5_ms=statistics.median(early_srv) if early_srv else float("nan"),
            srv_at200_ms=statistics.median(late_srv) if late_srv else float("nan"),
            srv_p50_ms=pct([s.server_ms for s in ok if s.server_ms is not None], 50),
            load_during=f"{load_before} → {load_after}",
            server_cpu_ms=(cpu1 - cpu0) * 1e3 / max(1, len(drv.samples) + len(drv.opened)),
            client_cpu_ms=(client1 - client0) * 1e3 / max(1, len(drv.samples) + len(drv.opened)),
        )
        result["capacity_per_core"] = (
            1e3 / result["server_cpu_ms"] if result["server_cpu_ms"] else float("nan")
        )
        echo(
            f"[{cfg.name}] {len(drv.samples)} messages in {wall:.1f}s: {result['msgs_per_s']:.0f} msg/s, "
            f"p50 {result['p50_ms']:.1f} p90 {result['p90_ms']:.1f} p99 {result['p99_ms']:.1f} ms, "
            f"{len(drv.errors)} errors; load {result['load_during']}"
        )
        if drv.errors:
            echo("  first errors: " + " | ".join(drv.errors[:3]))
        echo(
            f"[{cfg.name}] server CPU {result['server_cpu_ms']:.1f} ms per request (≈ {result['capacity_per_core']:.0f} "
            f"requests/s per fully available core), client CPU {result['client_cpu_ms']:.1f} ms per request"
        )
        echo(
            f"[{cfg.name}] message ~5: {early_ms:.1f} ms (n={len(early)}), message ~200 of long chats: {late_ms:.1f} ms "
            f"(n={len(late)}); server handling {result['srv_at5_ms']:.2f} vs {result['srv_at200_ms']:.2f} ms"
        )
        echo(
            f"[{cfg.name}] ~200 / ~5, role by role: client {result['ratio_200_5']:.2f} ("
            + ", ".join(f"{r} {v:.2f}" for r, v in by_role.items())
            + f"), server {result['srv_ratio_200_5']:.2f} ("
            + ", ".join(f"{r} {v:.2f}" for r, v in srv_by_role.items())
            + ")"
        )

        # 3. memory per open chat
        mem_chats: list[Chat] = []
        if a.mem_chats > 0:
            time.sleep(1.0)
            rss0 = server.rss_kb()
            mem = Driver(server.base_url, key)
            gen = simulated_chats(f"{tag}m", a.seed + 2, min_messages=a.mem_messages)
            mem_chats = [next(gen) for _ in range(a.mem_chats)]

            async def fill() -> None:
                async with mem.client(a.chats) as client:
                    queue = list(mem_chats)

                    async def worker() -> None:
                        budget = Budget(None, None)
                        while queue:
                            c = queue.pop()
                            if await mem.open(client, c):
                                await mem.send(client, c, budget, upto=a.mem_messages)

                    await asyncio.gather(*(worker() for _ in range(a.chats)))

            asyncio.run(fill())
            all_ids += mem.attempted
            time.sleep(1.0)
            rss1 = server.rss_kb()
            result.update(
                rss_before_mb=rss0 / 1024,
                rss_after_mb=rss1 / 1024,
                rss_per_chat_kb=(rss1 - rss0) / max(1, len(mem.opened)),
                mem_chats_opened=len(mem.opened),
                mem_errors=len(mem.errors),
            )
            echo(
                f"[{cfg.name}] RSS {rss0 / 1024:.0f} → {rss1 / 1024:.0f} MB after opening {len(mem.opened)} chats with "
                f"{a.mem_messages} messages each: {result['rss_per_chat_kb']:.1f} KB per chat ({len(mem.errors)} errors)"
            )
        long_sent = max((c.sent for c in longs), default=0)
        result["long_sent"] = long_sent

        # 4. cached session blob sizes (Redis: read them; in-process cache: replay here after the server stops)
        if redis_client is not None:
            sizes = [redis_client.strlen(SESSION_PREFIX + c.cid) for c in mem_chats]
            sizes = [s for s in sizes if s]
            long_sizes = [redis_client.strlen(SESSION_PREFIX + c.cid) for c in longs]
            result.update(
                blob_b=statistics.median(sizes) if sizes else float("nan"),
                blob_long_b=statistics.median(long_sizes) if long_sizes else float("nan"),
                blob_source="redis STRLEN",
            )
            keys = [SESSION_PREFIX + cid for cid in set(all_ids)]
            for i in range(0, len(keys), 500):
                redis_client.delete(*keys[i : i + 500])
        server.stop()
        if redis_client is None and mem_chats:
            sizes_b = blob_sizes(a.model_dir, mem_chats[:50], a.mem_messages)
            long_b = blob_sizes(a.model_dir, longs[:1], long_sent) if longs else []
            result.update(
                blob_b=statistics.median(sizes_b),
                blob_long_b=long_b[0] if long_b else float("nan"),
                blob_source="replayed locally",
            )
        if "blob_b" in result:
            echo(
                f"[{cfg.name}] cached session blob: {result['blob_b']:.0f} B at {a.mem_messages} messages, "
                f"{result['blob_long_b']:.0f} B at {long_sent} messages ({result['blob_source']})"
            )
    if not a.keep:
        shutil.rmtree(var, ignore_errors=True)
    return result


def _self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


_MODEL_CACHE: dict[str, Any] = {}


def blob_sizes(model_dir: Path, chats: list[Chat], n_messages: int) -> list[int]:
    """Size of ``serving.service.Live(...).to_bytes()`` after ``n_messages`` of each chat, as the server caches it."""
    from yuyue.data.contract import Visit
    from yuyue.models.bundle import YuyueModel
    from yuyue.serving.service import Live

    key = str(model_dir)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = YuyueModel.load(model_dir)
    model = _MODEL_CACHE[key]
    out = []
    for c in chats:
        b = c.open_body
        session, _ = model.open_chat(
            started_at=datetime.fromisoformat(b["started_at"]),
            visit=Visit.model_validate(b["visit"]) if b.get("visit") else None,
            department=b.get("department"),
            project=b.get("project"),
            consultant_id=b.get("consultant_id"),
        )
        contacts: list[list[Any]] = []
        for seq, m in enumerate(c.messages[:n_messages]):
            ins = model.on_message(
                session, m["role"], m["text"], datetime.fromisoformat(m["at"]), suggest=False
            )
            if m["role"] == "visitor":
                contacts += [[s.type, s.value, seq] for s in ins.analysis.pii]
        last_at = datetime.fromisoformat(
            c.messages[min(n_messages, len(c.messages)) - 1]["at"] if c.messages else b["started_at"]
        )
        live = Live(min(n_messages, len(c.messages)), session, contacts, b.get("consultant_id"), last_at)
        out.append(len(live.to_bytes()))
    return out


# ---- report -------------------------------------------------------------------------------
def table(results: list[dict[str, Any]]) -> str:
    cols = [
        ("config", "config", "{}"),
        ("msgs", "messages", "{}"),
        ("err", "errors", "{}"),
        ("msg/s", "msgs_per_s", "{:.0f}"),
        ("p50 ms", "p50_ms", "{:.1f}"),
        ("p90 ms", "p90_ms", "{:.1f}"),
        ("p99 ms", "p99_ms", "{:.1f}"),
        ("srv CPU ms/req", "server_cpu_ms", "{:.1f}"),
        ("@5 ms", "at5_ms", "{:.1f}"),
        ("@200 ms", "at200_ms", "{:.1f}"),
        ("200/5", "ratio_200_5", "{:.2f}"),
        ("srv ms", "srv_p50_ms", "{:.2f}"),
        ("srv 200/5", "srv_ratio_200_5", "{:.2f}"),
        ("KB/chat", "rss_per_chat_kb", "{:.1f}"),
        ("blob B", "blob_b", "{:.0f}"),
        ("blob@200+ B", "blob_long_b", "{:.0f}"),
        ("load 1m", "load_during", "{}"),
    ]
    target = {
        "config": "target",
        "msgs_per_s": "≥300",
        "p50_ms": "≤10",
        "p99_ms": "≤40",
        "ratio_200_5": "≤1.2",
    }
    rows = [[h for h, _, _ in cols]]
    for r in results:
        row = []
        for _, k, f in cols:
            v = r.get(k)
            row.append("-" if v is None else (f.format(v) if not isinstance(v, str) else v))
        rows.append(row)
    rows.append([target.get(k, "") for _, k, _ in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--model-dir", type=Path, help="a saved model bundle (YuyueModel.save), e.g. /tmp/yy/model101"
    )
    bound = ap.add_mutually_exclusive_group()
    bound.add_argument(
        "--messages", type=int, default=3000, help="messages to send in the measured phase (default 3000)"
    )
    bound.add_argument("--seconds", type=float, help="or: run the measured phase this long")
    ap.add_argument("--chats", type=int, default=50, help="concurrent chats (default 50)")
    ap.add_argument(
        "--think-ms", type=float, default=0.0, help="pause between a chat's messages (default 0: closed loop)"
    )
    ap.add_argument(
        "--think-dist",
        choices=("exp", "fixed"),
        default="exp",
        help="pauses exponential with mean --think-ms (default; chats out of step, like real visitors) or fixed",
    )
    ap.add_argument(
        "--long-chats", type=int, default=12, help="long chats measured at message ~200 (default 12)"
    )
    ap.add_argument(
        "--prefill", type=int, default=190, help="messages pre-filled into each long chat (default 190)"
    )
    ap.add_argument(
        "--mem-chats", type=int, default=400, help="chats opened for the memory measurement (0: skip)"
    )
    ap.add_argument("--mem-messages", type=int, default=3, help="messages sent to each of those chats")
    ap.add_argument("--pg", action="store_true", help="PostgreSQL (a throwaway database) instead of SQLite")
    ap.add_argument("--redis", action="store_true", help="Redis session cache and rate limiter")
    ap.add_argument("--all", action="store_true", help="run SQLite+memory, then PostgreSQL+Redis")
    ap.add_argument(
        "--pg-admin-url",
        default=PG_ADMIN_DEFAULT,
        help=f"server to create the database on ({PG_ADMIN_DEFAULT})",
    )
    ap.add_argument("--redis-url", default=REDIS_DEFAULT, help=f"Redis URL ({REDIS_DEFAULT})")
    ap.add_argument("--seed", type=int, default=424242)
    ap.add_argument("--keep", action="store_true", help="keep the var dirs (server logs)")
    args = ap.parse_args(argv)
    if args.model_dir is None:
        ap.error(
            "pass --model-dir DIR: a saved model bundle (for example /tmp/yy/model101, or one written by "
            "YuyueModel.save); train one with `yuyue train` or tests/conftest.py's recipe"
        )
    if not (args.model_dir / "bundle.joblib").exists() and not args.model_dir.is_dir():
        ap.error(f"--model-dir {args.model_dir}: not a directory")
    a = BenchArgs(
        model_dir=args.model_dir.resolve(),
        messages=args.messages,
        seconds=args.seconds,
        chats=args.chats,
        think_ms=args.think_ms,
        think_dist=args.think_dist,
        long_chats=args.long_chats,
        prefill=args.prefill,
        mem_chats=args.mem_chats,
        mem_messages=args.mem_messages,
        seed=args.seed,
        pg_admin_url=args.pg_admin_url,
        redis_url=args.redis_url,
        keep=args.keep,
    )
    if args.all:
        configs = [BenchConfig("sqlite+mem"), BenchConfig("pg+redis", pg=True, redis=True)]
    else:
        name = ("pg" if args.pg else "sqlite") + ("+redis" if args.redis else "+mem")
        configs = [BenchConfig(name, pg=args.pg, redis=args.redis)]
    bound_text = f"{args.seconds:g}s" if args.seconds else f"{args.messages} messages"
    print(
        f"bench_serve: {args.chats} concurrent chats, {bound_text}"
        f", think {args.think_ms:g} ms ({args.think_dist}), one uvicorn worker, {os.cpu_count()} CPUs, load {loadavg()}"
    )
    results = []
    for cfg in configs:
        results.append(run_config(cfg, a))
    print()
    print(table(results))
    print(
        "latency: client-side per-message request; @5/@200: median at messages 2-8 of all chats / 197-203 of the long "
        "chats in the same run (at saturation mostly queueing); 200/5: their ratio compared role by role (visitor "
        "with visitor, consultant with consultant), weighted by the ~200 window's roles; srv ms / srv 200/5: median "
        "handling time inside the server (its Server-Timing header) and its role-matched ratio; srv CPU ms/req: server "
        "process CPU time per request in the measured phase (1000/it ≈ requests/s one free core could serve)"
    )
    errors = sum(r["errors"] for r in results)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
