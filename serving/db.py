"""Database engines and the shared table metadata of the service.

``make_engine`` accepts two kinds of URL:

- ``sqlite:///path/to/yuyue.db`` (the default, one machine): the parent folder is
  created, and every connection gets WAL journaling (readers never block the
  writer), ``synchronous=NORMAL`` (safe with WAL, much faster than FULL), foreign
  keys and a busy timeout, so the FastAPI thread pool can share the engine.
  ``sqlite://`` / ``sqlite:///:memory:`` gives one in-memory database shared by
  all threads (tests only).
- ``postgresql://user@host/db`` (or ``postgres://``): mapped to the psycopg 3
  driver (``postgresql+psycopg://``). A pooled connection idle for more than
  :data:`PING_AFTER_IDLE_S` is pinged when checked out and replaced if the server
  dropped it; one reused sooner is not (under load a ping per transaction was a
  whole extra round trip per message, and a connection cannot go stale in
  seconds without the server going away, which the next statement reports).

Modules that own tables declare them on :data:`metadata`; :func:`create_all`
creates every table declared by the modules imported so far (import
``serving.auth``, ``serving.store`` ... before calling it).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import StaticPool

BUSY_TIMEOUT_MS = 5000
PING_AFTER_IDLE_S = 10.0

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware value (e.g. serving.db.utcnow())")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and pick the driver: psycopg 3 for PostgreSQL, pysqlite for SQLite."""
    if isinstance(url, str):
        text = url.strip()
        if not text:
            raise ValueError("empty database URL")
        if text.startswith("postgres://"):
            text = "postgresql://" + text[len("postgres://") :]
        try:
            parsed = make_url(text)
        except Exception as exc:  # sqlalchemy.exc.ArgumentError
            raise ValueError(f"invalid database URL {text!r}: {exc}") from None
    else:
        parsed = url
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername in ("postgresql", "postgresql+psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise ValueError(
            f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
            "use sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    return parsed


def _is_memory(url: URL) -> bool:
    db = url.database or ""
    return db in ("", ":memory:") or db.startswith("file::memory:") or "mode=memory" in db


def _sqlite_on_connect(wal: bool):
    def on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if wal:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    return on_connect


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``sqlite:///PATH`` or ``postgresql://...`` (see the module docstring).

    Extra keyword arguments go to :func:`sqlalchemy.create_engine` (``echo``, ``pool_size`` ...).
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = _is_memory(parsed)
        connect_args = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
        connect_args.update(kwargs.pop("connect_args", {}))
        if memory:
            kwargs.setdefault("poolclass", StaticPool)
        else:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_on_connect(wal=not memory))
        return engine
    ping_after = kwargs.pop("ping_after_idle_s", PING_AFTER_IDLE_S)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_recycle", 1800)
    connect_args = {"connect_timeout": 10}
    connect_args.update(kwargs.pop("connect_args", {}))
    engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        sa.event.listen(engine, "checkin", _stamp_idle)
        sa.event.listen(engine, "checkout", _ping_if_idle(engine.dialect, ping_after))
    return engine


def _stamp_idle(_dbapi_conn: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dialect: sa.engine.Dialect, after_s: float):
    """Checkout hook: ping (as ``pool_pre_ping`` does, with the dialect's own ping) a connection that
    sat in the pool longer than ``after_s``.

    Raising :class:`sqlalchemy.exc.DisconnectionError` makes the pool drop the connection
    and check out another (a fresh one if need be), as ``pool_pre_ping`` would.
    """

    def on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since <= after_s:
            return  # new, or back in the pool only moments ago
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise sa.exc.DisconnectionError(
                f"pooled connection idle {time.monotonic() - since:.0f}s is gone: {exc}"
            ) from exc

    return on_checkout


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def create_all(engine: Engine, tables: list[sa.Table] | None = None) -> None:
    """Create the tables declared on :data:`metadata` (or just ``tables``) that do not exist yet."""
    metadata.create_all(engine, tables=tables, checkfirst=True)
