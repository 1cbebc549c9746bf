"""Crash test: SIGKILL the server under load, restart it, and check no acknowledged message was lost.

Run:
    .venv/bin/python bench/crash_test.py --model-dir /tmp/yy/model101            # SQLite (default)
    .venv/bin/python bench/crash_test.py --model-dir /tmp/yy/model101 --pg       # PostgreSQL (throwaway database)
    options: --chats 20 --kill-after 8 --redis

1. Creates an admin key (``yuyue keys create``), starts ``yuyue serve --model-dir`` on a
   fresh var dir (and database) and drives it with ``--chats`` concurrent simulated
   chats (one message in flight per chat), recording every (conversation, seq) the
   server answered 200 for.
2. After ``--kill-after`` seconds (and at least ``--min-acked`` acknowledged messages)
   sends SIGKILL to the server (no shutdown, nothing flushed).
3. Restarts it on the same var dir / database and, with the admin key,
   ``GET /v1/conversations/{id}`` for every chat it tried to open:
   (a) acknowledged, stored, lost (acknowledged but not stored: must be 0) and
   stored-but-unacknowledged (in flight at the kill: allowed, at most one per chat);
   (b) sends the next message of one chat: its session is no longer in any cache
   (the in-process cache died with the process), so the server rebuilds it from the
   event store (``yuyue_session_cache_misses`` in /metrics) and the message must get
   the next seq.

Exit code 1 if anything acknowledged was lost (or the continued chat got the wrong seq).
``run_crash()`` is what ``tests/serving/test_crash.py`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx


def _sibling(name: str) -> ModuleType:
    """bench/<name>.py as a module (bench/ is not a package)."""
    mod_name = f"yuyue_bench_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod


bs = _sibling("bench_serve")


@dataclass
class CrashResult:
    backend: str
    chats_attempted: int
    chats_opened_acked: int
    acknowledged: int
    stored: int
    lost: list[tuple[str, int]] = field(default_factory=list)  # acknowledged, not stored
    lost_chats: list[str] = field(default_factory=list)  # open acknowledged, chat not found after restart
    unacked_stored: list[tuple[str, int]] = field(default_factory=list)  # in flight at the kill
    gaps: list[str] = field(default_factory=list)  # stored seqs not 0..n-1, or > 1 unacknowledged per chat
    wrong_seq: list[str] = field(default_factory=list)  # 200 answers whose seq was not the chat's next
    errors_before_kill: list[str] = field(default_factory=list)  # non-2xx answers while the server was up
    killed_after_s: float = 0.0
    restart_s: float = 0.0
    continued: dict[str, Any] = field(default_factory=dict)
    load: str = ""

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.lost_chats
            and not self.gaps
            and not self.wrong_seq
            and self.continued.get("ok", False)
        )

    def report(self) -> str:
        c = self.continued
        lines = [
            f"backend {self.backend}: killed after {self.killed_after_s:.1f}s, restarted in {self.restart_s:.1f}s (load {self.load})",
            f"chats: {self.chats_attempted} attempted, {self.chats_opened_acked} opened (201)",
            f"messages: acknowledged {self.acknowledged}, stored {self.stored}, lost {len(self.lost)}, "
            f"stored-but-unacknowledged {len(self.unacked_stored)} (in flight at the kill; allowed)",
        ]
        if self.lost:
            lines.append(f"  LOST (acknowledged, not stored): {self.lost[:20]}")
        if self.lost_chats:
            lines.append(f"  LOST chats (201, not found after restart): {self.lost_chats[:20]}")
        if self.gaps:
            lines.append(f"  inconsistent: {self.gaps[:10]}")
        if self.wrong_seq:
            lines.append(f"  wrong seq answered: {self.wrong_seq[:10]}")
        if self.errors_before_kill:
            lines.append(
                f"  {len(self.errors_before_kill)} error answers before the kill, e.g. {self.errors_before_kill[:3]}"
            )
        if c:
            lines.append(
                f"continued {c.get('conversation_id')} after restart: stored {c.get('stored_before')} messages, "
                f"next message got seq {c.get('seq')} (expected {c.get('expected_seq')}), status {c.get('status')}, "
                f"cache misses (rebuilt from the event store) {c.get('cache_misses_before')} → {c.get('cache_misses_after')}, "
                f"stored now {c.get('stored_after')}: {'OK' if c.get('ok') else 'FAILED'}"
            )
        lines.append("RESULT: " + ("OK, nothing acknowledged was lost" if self.ok else "FAILED"))
        return "\n".join(lines)


def _cache_misses(client: httpx.Client) -> float | None:
    text = client.get("/metrics").text
    m = re.search(r"^yuyue_session_cache_misses\s+([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def run_crash(
    model_dir: Path,
    var_dir: Path,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    chats: int = 20,
    kill_after: float = 8.0,
    min_acked: int = 20,
    seed: int = 777,
    echo=print,
) -> CrashResult:
    """The whole scenario (see the module docstring); the server is always stopped at the end.

    The kill comes ``kill_after`` seconds into the load, or later once ``min_acked`` messages
    have been acknowledged (at most a minute later).
    """
    backend = ("postgresql" if database_url else "sqlite") + ("+redis" if redis_url else "")
    server = bs.Server(model_dir, var_dir, database_url=database_url, redis_url=redis_url)
    key = server.create_key("crash-admin", "admin", 1_000_000)
    tag = f"crash{int(time.time()) % 100000:05d}"
    drv = None
    try:
        echo(f"starting server ({backend}, var {var_dir}) …")
        server.start()
        echo(
            f"ready (pid {server.pid}); driving {chats} chats, SIGKILL after {kill_after:g}s; load {bs.loadavg()}"
        )
        drv = bs.Driver(server.base_url, key)
        budget = bs.Budget(None, None)
        killed_at: list[float] = []

        scripts: dict[str, Any] = {}

        def chats_to_send():
            for c in bs.simulated_chats(tag, seed):
                scripts[c.cid] = c
                yield c

        async def load_then_kill() -> None:
            gen = chats_to_send()
            t0 = time.monotonic()
            task = asyncio.ensure_future(drv.run(gen, budget, chats))
            await asyncio.sleep(kill_after)
            # on a busy machine the first answers can take long: wait (up to a minute) for some acknowledgements
            give_up = time.monotonic() + 60
            while len(drv.acked) < min_acked and time.monotonic() < give_up and not task.done():
                await asyncio.sleep(0.1)
            server.kill()  # blocking for a moment is fine: the point is that requests are in flight
            killed_at.append(time.monotonic() - t0)
            budget.deadline = time.monotonic()  # no new messages; in-flight ones fail with transport errors
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=60)

        asyncio.run(load_then_kill())
        load = bs.loadavg()
        echo(
            f"killed after {killed_at[0]:.1f}s: {len(drv.acked)} messages acknowledged, {len(drv.opened)} chats opened"
        )

        t0 = time.monotonic()
        server.start()
        restart_s = time.monotonic() - t0
        echo(f"restarted in {restart_s:.1f}s (pid {server.pid})")

        acked: dict[str, set[int]] = {}
        for cid, seq in drv.acked:
            acked.setdefault(cid, set()).add(seq)
        wrong = [e for e in drv.errors if "answered seq" in e]
        res = CrashResult(
            backend=backend,
            chats_attempted=len(set(drv.attempted)),
            chats_opened_acked=len(drv.opened),
            acknowledged=len(drv.acked),
            stored=0,
            wrong_seq=wrong,
            errors_before_kill=list(drv.http_errors),  # transport errors are the kill itself
            killed_after_s=killed_at[0],
            restart_s=restart_s,
            load=load,
        )
        stored: dict[str, list[int]] = {}
        opened = set(drv.opened)
        with httpx.Client(base_url=server.base_url, headers={"X-API-Key": key}, timeout=60) as client:
            for cid in dict.fromkeys(drv.attempted):
                r = client.get(f"/v1/conversations/{cid}")
                if r.status_code == 404:
                    if cid in opened:
                        res.lost_chats.append(cid)
                    continue
                r.raise_for_status()
                seqs = [m["seq"] for m in r.json()["messages"]]
                stored[cid] = seqs
                res.stored += len(seqs)
                got, want = set(seqs), acked.get(cid, set())
                res.lost += sorted((cid, s) for s in want - got)
                extra = sorted(got - want)
                res.unacked_stored += [(cid, s) for s in extra]
                if sorted(seqs) != list(range(len(seqs))):
                    res.gaps.append(f"{cid}: stored seqs {sorted(seqs)[:5]}… are not 0..{len(seqs) - 1}")
                if len(extra) > 1:
                    res.gaps.append(
                        f"{cid}: {len(extra)} stored-but-unacknowledged messages (at most 1 can be in flight)"
                    )

            # (b) continue one chat whose session must be rebuilt from the event store
            # prefer a chat whose last stored message was in flight at the kill (stored, never acknowledged)
            in_flight = [cid for cid, _ in res.unacked_stored]
            candidates = [cid for cid, seqs in stored.items() if seqs] or list(stored)
            if candidates:
                cid = in_flight[0] if in_flight else max(candidates, key=lambda c: len(stored[c]))
                n = len(stored[cid])
                script = scripts[cid]
                if n < len(script.messages):
                    body = dict(script.messages[n])
                else:  # the chat's script is used up: one more visitor message, a minute after the last
                    last = datetime.fromisoformat(script.messages[-1]["at"])
                    body = {
                        "role": "visitor",
                        "text": "好的，那我周六上午过去可以吗",
                        "at": (last + timedelta(minutes=1)).isoformat(),
                    }
                before = _cache_misses(client)
                r = client.post(f"/v1/conversations/{cid}/messages", json=body)
                after = _cache_misses(client)
                seq = r.json().get("seq") if r.status_code == 200 else None
                stored_after = len(client.get(f"/v1/conversations/{cid}").json()["messages"])
                res.continued = {
                    "conversation_id": cid,
                    "stored_before": n,
                    "expected_seq": n,
                    "seq": seq,
                    "status": r.status_code,
                    "detail": None if r.status_code == 200 else r.text[:300],
                    "cache_misses_before": before,
                    "cache_misses_after": after,
                    "stored_after": stored_after,
                    "ok": r.status_code == 200
                    and seq == n
                    and stored_after == n + 1
                    and (redis_url is not None or (after or 0) > (before or 0)),
                }
            else:
                res.continued = {"ok": False, "detail": "no chat was stored before the kill"}
        return res
    finally:
        server.stop()
        if redis_url:
            _drop_sessions(redis_url, list(drv.attempted) if drv is not None else [])


def _drop_sessions(redis_url: str, cids: list[str]) -> None:
    """Delete this run's cached sessions from Redis (conversation ids are unique to the run)."""
    import redis

    with contextlib.suppress(redis.RedisError), redis.Redis.from_url(redis_url) as r:
        keys = [bs.SESSION_PREFIX + cid for cid in cids]
        for i in range(0, len(keys), 1000):
            r.delete(*keys[i : i + 1000])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, help="a saved model bundle, e.g. /tmp/yy/model101")
    ap.add_argument("--chats", type=int, default=20, help="concurrent chats (default 20)")
    ap.add_argument(
        "--kill-after", type=float, default=8.0, help="seconds of load before SIGKILL (default 8)"
    )
    ap.add_argument(
        "--min-acked", type=int, default=20, help="kill only once this many messages were acknowledged"
    )
    ap.add_argument("--pg", action="store_true", help="PostgreSQL (throwaway database) instead of SQLite")
    ap.add_argument("--redis", action="store_true", help="Redis session cache (entries survive the kill)")
    ap.add_argument("--pg-admin-url", default=bs.PG_ADMIN_DEFAULT)
    ap.add_argument("--redis-url", default=bs.REDIS_DEFAULT)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--var-dir", type=Path, help="var dir to use (default: a new temporary folder)")
    args = ap.parse_args(argv)
    if args.model_dir is None:
        ap.error(
            "pass --model-dir DIR: a saved model bundle (e.g. /tmp/yy/model101, or one written by YuyueModel.save)"
        )
    if not args.model_dir.is_dir():
        ap.error(f"--model-dir {args.model_dir}: not a directory")
    var = args.var_dir or Path(tempfile.mkdtemp(prefix="yuyue-crash-"))
    with contextlib.ExitStack() as stack:
        db = stack.enter_context(bs.throwaway_pg(args.pg_admin_url, "yuyue_crash")) if args.pg else None
        res = run_crash(
            args.model_dir,
            var,
            database_url=db,
            redis_url=args.redis_url if args.redis else None,
            chats=args.chats,
            kill_after=args.kill_after,
            min_acked=args.min_acked,
            seed=args.seed,
        )
    print(res.report())
    print(f"server log: {var / 'server.log'}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
