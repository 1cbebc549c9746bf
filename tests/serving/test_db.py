"""serving.db: engines for SQLite and PostgreSQL, the shared metadata, create_all."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from yuyue.serving.db import UTCDateTime, create_all, make_engine, metadata, normalize_url

probe = sa.Table(
    "test_db_probe",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("label", sa.String(50), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=True),
)
probe_child = sa.Table(
    "test_db_probe_child",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("probe_id", sa.Integer, sa.ForeignKey("test_db_probe.id"), nullable=False),
)


@pytest.fixture(scope="module", autouse=True)
def _forget_probe_tables():
    """Keep the shared metadata clean for other test modules."""
    yield
    metadata.remove(probe_child)
    metadata.remove(probe)


def test_postgres_urls_use_psycopg3():
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u:p@h:5433/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


@pytest.mark.parametrize("url", ["mysql://u@h/db", "", "not a url"])
def test_unsupported_urls_are_rejected(url):
    with pytest.raises(ValueError):
        make_engine(url)


def test_sqlite_creates_parent_dir_and_sets_pragmas(tmp_path):
    path = tmp_path / "a" / "b" / "yuyue.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert path.exists()
    finally:
        engine.dispose()


def test_sqlite_memory_is_shared_between_threads():
    engine = make_engine("sqlite://")
    create_all(engine, tables=[probe])
    with engine.begin() as conn:
        conn.execute(probe.insert().values(id=1, label="x"))
    seen = []

    def read():
        with engine.connect() as conn:
            seen.append(conn.execute(sa.select(probe.c.label)).scalar_one())

    t = threading.Thread(target=read)
    t.start()
    t.join()
    assert seen == ["x"]
    engine.dispose()


def test_sqlite_threads_write_concurrently(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'y.db'}")
    create_all(engine, tables=[probe])
    errors = []

    def write(base: int):
        try:
            for i in range(20):
                with engine.begin() as conn:
                    conn.execute(probe.insert().values(id=base + i, label=f"t{base}"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(probe)).scalar_one() == 80
    engine.dispose()


def test_create_all_round_trip_and_foreign_keys(engine):
    create_all(engine)
    create_all(engine)  # idempotent
    assert {"test_db_probe", "test_db_probe_child"} <= set(sa.inspect(engine).get_table_names())
    at = datetime(2025, 3, 5, 14, 2, 11, tzinfo=timezone(timedelta(hours=8)))
    with engine.begin() as conn:
        conn.execute(probe.insert().values(id=1, label="一", at=at))
    with engine.connect() as conn:
        row = conn.execute(sa.select(probe)).one()
    assert row.label == "一"
    assert row.at == at and row.at.tzinfo is not None and row.at.utcoffset() == timedelta(0)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(probe_child.insert().values(id=1, probe_id=999))


def test_naive_datetimes_are_refused(engine):
    create_all(engine, tables=[probe])
    with pytest.raises(sa.exc.StatementError), engine.begin() as conn:
        conn.execute(probe.insert().values(id=2, label="n", at=datetime(2025, 1, 1)))
    with engine.begin() as conn:
        conn.execute(probe.insert().values(id=3, label="u", at=datetime(2025, 1, 1, tzinfo=UTC)))


def test_postgres_engine_uses_psycopg(pg_url):
    engine = make_engine(pg_url)
    try:
        assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()


def _kill_pooled_connection(engine, pg_url: str) -> int:
    """Check a connection out and back in, then have the server end its backend; returns that backend's pid."""
    pid = _backend_pid(engine)
    other = make_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with other.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    finally:
        other.dispose()
    time.sleep(0.05)
    return pid


def test_postgres_pool_replaces_a_dropped_idle_connection(pg_url):
    # pinged on checkout once idle longer than ping_after_idle_s: the server killed it, the pool reconnects
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, ping_after_idle_s=0.0)
    try:
        pid = _kill_pooled_connection(engine, pg_url)
        assert _backend_pid(engine) != pid  # a fresh connection, no error
    finally:
        engine.dispose()


def test_postgres_pool_does_not_ping_a_connection_reused_at_once(pg_url):
    # within ping_after_idle_s the pooled connection is handed out as is (no round trip per checkout):
    # proven by a dead one surfacing as an error, after which the pool starts afresh
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, ping_after_idle_s=3600.0)
    try:
        pid = _kill_pooled_connection(engine, pg_url)
        with pytest.raises(sa.exc.OperationalError):
            _backend_pid(engine)
        assert _backend_pid(engine) != pid
    finally:
        engine.dispose()
