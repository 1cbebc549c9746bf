"""Fault test: slow or failing dependencies under a bounded load; nothing lost, nothing stored twice,
every request answered in bounded time, ``/healthz`` never waiting.

Run:
    .venv/bin/python bench/fault_test.py --model-dir /work/scratch/testmodel            # both set-ups
    options: --only pg|sqlite  --chats 6  --fault-s 5  --pg-admin-url URL

Set-ups (each a fresh server, ``yuyue serve --model-dir``, one worker, loopback only):

- ``pg``: PostgreSQL (a throwaway database) + a private ``redis-server`` started on a free
  port (never the shared one): faults ``redis-pause`` (SIGSTOP on that redis for ``--fault-s``,
  then SIGCONT), ``pg-lock`` (``LOCK TABLE conversations`` held in another connection),
  ``pg-kill`` (``pg_terminate_backend`` on every backend of the server, three times).
- ``sqlite``: SQLite + the private Redis: fault ``sqlite-lock`` (another connection holds
  ``BEGIN EXCLUSIVE``).

``--chats`` chats are driven concurrently, one message in flight per chat, each message with
its ``seq``; a 503 is retried after its ``Retry-After`` with the same seq (a 409 "already holds"
then means it had been stored: counted as such, not resent). A prober asks ``/healthz`` every
50 ms. Each fault window runs from the fault's start to ``--recover-s`` after its end. At the end
every chat is read back from the event store (its database, raw) and compared with what
was sent: lost = acknowledged (200) but not stored; duplicated = a stored message that is not
the script's message at that position (a message stored twice shows up so).

Rows: the warm-up (the first 3 s: connections made, first-use costs), each fault window, and
"no fault" (the quiet second after each window). Also checked: no mobile number (every third
chat's visitor leaves one) in any cached session in Redis (they are encrypted) or in the server
log. Exit code 1 when anything was lost or duplicated, a 5xx other than 503 was answered, a
mobile number was found, or (outside the warm-up) a request waited longer than ``--max-stall-s``
or ``/healthz`` longer than 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import orjson


def _sibling(name: str) -> ModuleType:
    mod_name = f"yuyue_bench_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod


bs = _sibling("bench_serve")
HEALTHZ_TARGET_MS = 100.0
PHONE = "13966012847"  # left by every third chat's visitor
MOBILE = re.compile(rb"(?<!\d)1[3-9]\d{9}(?!\d)")  # a mainland mobile number, as the simulated visitors leave


# ---- a private redis-server ---------------------------------------------------------------
class PrivateRedis:
    """``redis-server`` on a free loopback port, no persistence; ``pause``/``resume`` by SIGSTOP/SIGCONT."""

    def __init__(self, folder: Path):
        self.port = bs.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = os.environ.get("REDIS_SERVER", "redis-server")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.port, socket_timeout=0.5) as r:
                    if r.ping():
                        return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"private redis-server on port {self.port} did not start")

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def raw_values(self) -> list[bytes]:
        """Every value under the session prefix (to check that nothing raw is cached)."""
        import redis

        with redis.Redis(port=self.port, socket_timeout=5) as r:
            return [r.get(k) or b"" for k in r.scan_iter(match=bs.SESSION_PREFIX + "*", count=500)]


# ---- faults -------------------------------------------------------------------------------
def _hold_in_thread(body: Callable[[threading.Event], None]) -> Callable[[float], None]:
    """A fault that holds something for ``seconds`` in a thread (the event loop keeps driving the load)."""

    def run(seconds: float) -> None:
        stop = threading.Event()
        t = threading.Thread(target=body, args=(stop,), daemon=True)
        t.start()
        time.sleep(seconds)
        stop.set()
        t.join(30)

    return run


def redis_pause(redis_srv: PrivateRedis) -> Callable[[float], None]:
    def run(seconds: float) -> None:
        redis_srv.pause()
        try:
            time.sleep(seconds)
        finally:
            redis_srv.resume()

    return run


def pg_lock(db_url: str) -> Callable[[float], None]:
    import psycopg

    def body(stop: threading.Event) -> None:
        with psycopg.connect(db_url, connect_timeout=5) as conn:
            conn.execute("LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE")
            stop.wait(60)
            conn.rollback()

    return _hold_in_thread(body)


def pg_kill(db_url: str, times: int = 3) -> Callable[[float], None]:
    import psycopg

    def run(seconds: float) -> None:
        with psycopg.connect(db_url, autocommit=True, connect_timeout=5) as conn:
            for i in range(times):
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                if i < times - 1:
                    time.sleep(seconds / times)
        time.sleep(seconds / times)

    return run


def sqlite_lock(path: Path) -> Callable[[float], None]:
    def body(stop: threading.Event) -> None:
        cx = sqlite3.connect(path, isolation_level=None, timeout=10)
        cx.execute("BEGIN EXCLUSIVE")
        stop.wait(60)
        cx.execute("ROLLBACK")
        cx.close()

    return _hold_in_thread(body)


# ---- the load -----------------------------------------------------------------------------
@dataclass
class Req:
    phase: str
    t0: float
    ms: float
    status: int  # 0: transport error / client timeout
    cid: str
    pos: int
    note: str = ""


@dataclass
class Load:
    base_url: str
    key: str
    chats: int
    think_s: float = 0.1
    phase: str = "warm-up"
    stop: bool = False
    reqs: list[Req] = field(default_factory=list)
    health_ms: list[tuple[str, float, int]] = field(default_factory=list)
    acked: dict[tuple[str, int], str] = field(default_factory=dict)  # (cid, seq) -> phase
    stored_unacked: set[tuple[str, int]] = field(default_factory=set)  # 409 "already holds" after a retry
    first_sent: dict[tuple[str, int], str] = field(default_factory=dict)
    scripts: dict[str, Any] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)

    async def _post(self, client: aiohttp.ClientSession, path: str, body: dict, cid: str, pos: int):
        t0 = time.monotonic()
        phase = self.phase
        try:
            async with client.post(path, data=orjson.dumps(body)) as r:
                raw = await r.read()
                status, retry = r.status, r.headers.get("retry-after")
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.reqs.append(Req(phase, t0, (time.monotonic() - t0) * 1e3, 0, cid, pos, type(exc).__name__))
            return 0, b"", None
        self.reqs.append(
            Req(
                phase,
                t0,
                (time.monotonic() - t0) * 1e3,
                status,
                cid,
                pos,
                raw[:200].decode(errors="replace") if status >= 400 else "",
            )
        )
        return status, raw, retry

    async def chat(self, client: aiohttp.ClientSession, script: Any) -> None:
        cid = script.cid
        self.scripts[cid] = script
        if len(self.scripts) % 3 == 1:  # every third chat's visitor leaves a phone number (privacy check)
            first = next((m for m in script.messages if m["role"] == "visitor"), None)
            if first is not None:
                first["text"] += f"，我电话{PHONE}"
        for attempt in range(20):
            status, _, retry = await self._post(client, "/v1/conversations", script.open_body, cid, -1)
            if status == 201 or (status == 409 and attempt > 0):
                break
            if self.stop:
                return
            await asyncio.sleep(float(retry or 1) if status == 503 else 1.0)
        else:
            self.given_up.append(f"{cid}: open")
            return
        self.opened.append(cid)
        for pos, msg in enumerate(script.messages):
            if self.stop:
                return
            body = {**msg, "seq": pos}
            self.first_sent.setdefault((cid, pos), self.phase)
            for attempt in range(30):
                status, raw, retry = await self._post(
                    client, f"/v1/conversations/{cid}/messages", body, cid, pos
                )
                if status == 200:
                    self.acked[(cid, orjson.loads(raw)["seq"])] = self.phase
                    break
                if status == 409 and attempt > 0 and b"already holds" in raw:
                    self.stored_unacked.add((cid, pos))  # an earlier try landed, its answer did not
                    break
                if status in (0, 503) or status >= 500:
                    await asyncio.sleep(min(2.0, float(retry or 0.5)))
                    continue
                self.given_up.append(f"{cid}#{pos}: {status} {raw[:120]!r}")
                return
            else:
                self.given_up.append(f"{cid}#{pos}: no answer after 30 tries")
                return
            await asyncio.sleep(self.think_s)

    async def slot(self, client: aiohttp.ClientSession, next_chat: Callable[[], Any]) -> None:
        while not self.stop:
            # simulating a chat is CPU work: in a thread, so this loop (and the /healthz prober's
            # timing) is not held up by it
            await self.chat(client, await asyncio.to_thread(next_chat))

    async def prober(self) -> None:
        async with aiohttp.ClientSession(self.base_url, timeout=aiohttp.ClientTimeout(total=30)) as client:
            while not self.stop:
                t0 = time.monotonic()
                try:
                    async with client.get("/healthz") as r:
                        await r.read()
                        status = r.status
                except (TimeoutError, aiohttp.ClientError):
                    status = 0
                self.health_ms.append((self.phase, (time.monotonic() - t0) * 1e3, status))
                await asyncio.sleep(0.05)


@dataclass
class Row:
    setup: str
    fault: str
    requests: int = 0
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    s503: int = 0
    s5xx_other: int = 0
    errors_other: int = 0
    max_stall_ms: float = 0.0
    p99_ms: float = 0.0
    healthz_max_ms: float = 0.0
    healthz_n: int = 0
    notes: list[str] = field(default_factory=list)
    slowest: list[str] = field(default_factory=list)  # the three longest waits: ms, status, chat#position


def run_setup(
    setup: str,
    model_dir: Path,
    var_dir: Path,
    *,
    pg_admin_url: str,
    chats: int,
    fault_s: float,
    recover_s: float,
    seed: int,
    echo=print,
) -> tuple[list[Row], dict[str, Any]]:
    """One server with its faults (see the module docstring); returns a row per fault and extras."""
    var_dir.mkdir(parents=True, exist_ok=True)
    redis_srv = PrivateRedis(var_dir)
    extras: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        redis_srv.start()
        stack.callback(redis_srv.stop)
        if setup == "pg":
            db_url = stack.enter_context(bs.throwaway_pg(pg_admin_url, "yuyue_fault"))
            faults = [
                ("redis-pause", redis_pause(redis_srv)),
                ("pg-lock", pg_lock(db_url)),
                ("pg-kill", pg_kill(db_url)),
            ]
        else:
            db_url = None
            faults = [("sqlite-lock", sqlite_lock(var_dir / "yuyue.db"))]
        server = bs.Server(model_dir, var_dir, database_url=db_url, redis_url=redis_srv.url)
        key = server.create_key("fault-admin", "admin", 1_000_000)
        echo(f"[{setup}] starting server (private redis on port {redis_srv.port}) …")
        server.start()
        stack.callback(server.stop)
        echo(f"[{setup}] ready; {chats} chats, faults {', '.join(f for f, _ in faults)} ({fault_s:g}s each)")
        load = Load(server.base_url, key, chats)
        tag = f"fault{setup}{int(time.time()) % 100000:05d}"

        async def drive() -> list[tuple[str, float, float]]:
            windows = []
            gen = bs.simulated_chats(tag, seed, min_messages=4)
            gen_lock = threading.Lock()

            def next_chat() -> Any:
                with gen_lock:  # one generator, several threads
                    return next(gen)

            timeout = aiohttp.ClientTimeout(total=60)
            headers = {"X-API-Key": key, "Content-Type": "application/json"}
            async with aiohttp.ClientSession(server.base_url, headers=headers, timeout=timeout) as client:
                tasks = [asyncio.ensure_future(load.slot(client, next_chat)) for _ in range(chats)]
                probe = asyncio.ensure_future(load.prober())
                await asyncio.sleep(3.0)
                for name, fault in faults:
                    load.phase = name
                    t0 = time.monotonic()
                    echo(f"[{setup}] fault {name} …")
                    await asyncio.to_thread(fault, fault_s)
                    await asyncio.sleep(recover_s)
                    windows.append((name, t0, time.monotonic()))
                    load.phase = f"after {name}"
                    await asyncio.sleep(1.0)
                load.stop = True
                await asyncio.wait_for(asyncio.gather(*tasks, probe, return_exceptions=True), 120)
            return windows

        asyncio.run(drive())
        extras["redis_values"] = redis_srv.raw_values()
        stored = read_back(db_url or f"sqlite:///{var_dir / 'yuyue.db'}", load)
        extras["log"] = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
        extras["messages_sent_total"] = len(load.first_sent)
    rows = [summarise(setup, "warm-up", load, stored)]
    for name, _ in faults:
        rows.append(summarise(setup, name, load, stored))
    rows.append(summarise(setup, "no fault", load, stored))
    return rows, extras


def read_back(database_url: str, load: Load) -> dict[str, list[dict[str, Any]]]:
    """Every opened chat's stored messages, raw, straight from the event store."""
    from yuyue.serving.db import make_engine
    from yuyue.serving.store import EventStore

    engine = make_engine(database_url, statement_timeout_ms=0)
    try:
        store = EventStore(engine)
        return {cid: store.messages(cid) for cid in load.opened}
    finally:
        engine.dispose()


def summarise(setup: str, fault: str, load: Load, stored: dict[str, list[dict[str, Any]]]) -> Row:
    def in_phase(p: str) -> bool:
        return p.startswith("after ") if fault == "no fault" else p == fault

    row = Row(setup, fault)
    reqs = [r for r in load.reqs if in_phase(r.phase)]
    row.requests = len(reqs)
    row.s503 = sum(r.status == 503 for r in reqs)
    row.s5xx_other = sum(r.status >= 500 and r.status != 503 for r in reqs)
    row.errors_other = sum(r.status == 0 or (400 <= r.status < 500 and r.status != 409) for r in reqs)
    lat = sorted(r.ms for r in reqs)
    row.max_stall_ms = lat[-1] if lat else 0.0
    row.p99_ms = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else 0.0
    health = [ms for p, ms, _ in load.health_ms if in_phase(p)]
    row.healthz_max_ms = max(health, default=0.0)
    row.healthz_n = len(health)
    acked = {k for k, p in load.acked.items() if in_phase(p)}
    row.acknowledged = len(acked)
    for cid, msgs in stored.items():
        script = load.scripts[cid].messages
        for m in msgs:
            seq = m["seq"]
            if not in_phase(load.first_sent.get((cid, seq), "")):
                continue
            if seq < len(script) and m["text"] == script[seq]["text"] and m["role"] == script[seq]["role"]:
                row.stored += 1
            else:
                row.duplicated += 1
    for cid, seq in acked:
        msgs = stored.get(cid, [])
        if not any(m["seq"] == seq and m["text"] == load.scripts[cid].messages[seq]["text"] for m in msgs):
            row.lost += 1
    notes = sorted({r.note[:100] for r in reqs if r.status >= 500 and r.status != 503 or r.status == 0})
    row.notes = notes[:3]
    row.slowest = [
        f"{r.ms:.0f}ms {r.status} {r.cid}#{r.pos} {r.note[:80]}"
        for r in sorted(reqs, key=lambda r: -r.ms)[:3]
    ]
    return row


def table(rows: list[Row]) -> str:
    head = (
        "setup",
        "fault",
        "requests",
        "acked",
        "stored",
        "lost",
        "dup",
        "503",
        "5xx other",
        "other err",
        "max stall ms",
        "p99 ms",
        "healthz max ms",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            f"| {r.setup} | {r.fault} | {r.requests} | {r.acknowledged} | {r.stored} | {r.lost} | "
            f"{r.duplicated} | "
            f"{r.s503} | {r.s5xx_other} | {r.errors_other} | {r.max_stall_ms:.0f} | {r.p99_ms:.0f} | "
            f"{r.healthz_max_ms:.1f} |"
        )
    return "\n".join(lines)


def problems(rows: list[Row], max_stall_s: float) -> list[str]:
    """What misses the targets; the warm-up (first requests: model caches filled, connections made)
    is reported but only its losses and errors count."""
    out = []
    for r in rows:
        where = f"{r.setup}/{r.fault}"
        if r.lost:
            out.append(f"{where}: {r.lost} acknowledged messages lost")
        if r.duplicated:
            out.append(f"{where}: {r.duplicated} messages stored that were not sent at that position")
        if r.s5xx_other:
            out.append(f"{where}: {r.s5xx_other} 5xx answers other than 503 ({r.notes})")
        if r.fault == "warm-up":
            continue
        if r.max_stall_ms > max_stall_s * 1000:
            out.append(f"{where}: a request waited {r.max_stall_ms:.0f} ms (limit {max_stall_s:g} s)")
        if r.healthz_max_ms > HEALTHZ_TARGET_MS:
            out.append(f"{where}: /healthz took {r.healthz_max_ms:.0f} ms (limit {HEALTHZ_TARGET_MS:g} ms)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, required=True, help="a saved model bundle")
    ap.add_argument("--only", choices=("pg", "sqlite"), help="one set-up only (default: both)")
    ap.add_argument("--chats", type=int, default=6, help="concurrent chats (default 6)")
    ap.add_argument("--fault-s", type=float, default=5.0, help="how long each fault lasts (default 5)")
    ap.add_argument("--recover-s", type=float, default=2.0, help="seconds after a fault counted with it")
    ap.add_argument("--max-stall-s", type=float, default=2.0, help="longest acceptable wait for an answer")
    ap.add_argument("--pg-admin-url", default=bs.PG_ADMIN_DEFAULT)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument(
        "--var-dir", type=Path, help="folder for the servers' var dirs (default: a new temp folder)"
    )
    args = ap.parse_args(argv)
    if not args.model_dir.is_dir():
        ap.error(f"--model-dir {args.model_dir}: not a directory")
    base = args.var_dir or Path(tempfile.mkdtemp(prefix="yuyue-fault-"))
    rows: list[Row] = []
    privacy: list[str] = []
    for setup in [args.only] if args.only else ["pg", "sqlite"]:
        got, extras = run_setup(
            setup,
            args.model_dir,
            base / setup,
            pg_admin_url=args.pg_admin_url,
            chats=args.chats,
            fault_s=args.fault_s,
            recover_s=args.recover_s,
            seed=args.seed,
        )
        rows += got
        raw_redis = sum(bool(MOBILE.search(v)) for v in extras["redis_values"])
        raw_log = sum(bool(MOBILE.search(line.encode())) for line in extras["log"].splitlines())
        if raw_redis or raw_log:
            privacy.append(f"{setup}: {raw_redis} Redis values and {raw_log} log lines hold a mobile number")
        print(f"[{setup}] mobile numbers in Redis values: {raw_redis}; in the server log: {raw_log}")
        print(
            f"[{setup}] {len(extras['redis_values'])} cached sessions in the private redis; server log: "
            f"{base / setup / 'server.log'}"
        )
    print(table(rows))
    for r in rows:
        print(f"slowest {r.setup}/{r.fault}: " + "; ".join(r.slowest))
    bad = problems(rows, args.max_stall_s) + privacy
    print("RESULT: " + ("OK" if not bad else "FAILED\n  " + "\n  ".join(bad)))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
