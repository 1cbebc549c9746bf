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


# ---- bounded waits: a lock held elsewhere costs a short wait and an error, not a hung request ---------
def _hold_lock(start_lock, release: threading.Event, held: threading.Event, errors: list) -> threading.Thread:
    def run():
        try:
            start_lock()
        except Exception as exc:  # pragma: no cover - reported by the test
            errors.append(exc)
            held.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert held.wait(10), "the lock holder did not start"
    return t


def test_sqlite_write_behind_an_exclusive_lock_fails_fast(tmp_path):
    import sqlite3

    path = tmp_path / "locked.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=200)
    create_all(engine, tables=[probe])
    release, held, errors = threading.Event(), threading.Event(), []

    def hold():
        cx = sqlite3.connect(path, isolation_level=None)
        cx.execute("BEGIN EXCLUSIVE")
        held.set()
        release.wait(30)  # released by the test, or after 30 s
        cx.execute("ROLLBACK")
        cx.close()

    t = _hold_lock(hold, release, held, errors)
    try:
        with pytest.raises(sa.exc.OperationalError, match="database is locked"), engine.begin() as conn:
            conn.execute(probe.insert().values(id=1, label="一"))
        assert not release.is_set()  # the write gave up while the lock was still held
        with engine.connect() as conn:  # readers are not blocked (WAL)
            assert conn.execute(sa.select(sa.func.count()).select_from(probe)).scalar_one() == 0
    finally:
        release.set()
        t.join()
        engine.dispose()
    assert errors == []


def test_make_engine_rejects_bad_timeouts():
    with pytest.raises(ValueError, match="busy_timeout_ms"):
        make_engine("sqlite://", busy_timeout_ms=-1)
    with pytest.raises(ValueError, match="lock_timeout_ms"):
        make_engine("sqlite://", lock_timeout_ms="1s")


def test_sqlite_files_are_owner_only(tmp_path):
    import os
    import stat

    old = os.umask(0o022)  # a usual umask: files 0644, folders 0755 unless asked otherwise
    try:
        path = tmp_path / "var" / "db" / "yuyue.db"
        engine = make_engine(f"sqlite:///{path}")
        create_all(engine, tables=[probe])
        with engine.begin() as conn:  # a write: the -wal and -shm files exist now
            conn.execute(probe.insert().values(id=1, label="x"))
        with engine.connect() as conn:
            conn.execute(sa.select(probe)).all()
            files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
        assert {"yuyue.db", "yuyue.db-wal", "yuyue.db-shm"} <= set(files)
        assert set(files.values()) == {0o600}, files
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700
        engine.dispose()
        # a database left readable by others (an older version, a copy) is tightened on the next start
        path.chmod(0o644)
        make_engine(f"sqlite:///{path}").dispose()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_errors_never_carry_bound_parameters(engine, caplog):
    create_all(engine, tables=[probe])
    secret = "我的电话13966012847"
    with engine.begin() as conn:
        conn.execute(probe.insert().values(id=7, label="x"))
    with pytest.raises(sa.exc.IntegrityError) as err, engine.begin() as conn:
        conn.execute(probe.insert().values(id=7, label=secret))  # duplicate key: the error quotes it
    assert "13966012847" not in str(err.value) and "hidden" in str(err.value)


def test_postgres_sessions_carry_statement_and_lock_timeouts(pg_url):
    engine = make_engine(pg_url, statement_timeout_ms=1500, lock_timeout_ms=700, connect_timeout_s=2)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1500ms"
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "700ms"
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                conn.exec_driver_sql("SELECT pg_sleep(5)")
    finally:
        engine.dispose()


def test_postgres_write_behind_a_table_lock_fails_fast(pg_url):
    engine = make_engine(pg_url, lock_timeout_ms=200)
    create_all(engine, tables=[probe])
    release, held, errors = threading.Event(), threading.Event(), []
    locker = make_engine(pg_url, poolclass=sa.pool.NullPool, statement_timeout_ms=0, lock_timeout_ms=0)

    def hold():
        with locker.begin() as conn:
            conn.exec_driver_sql("LOCK TABLE test_db_probe IN ACCESS EXCLUSIVE MODE")
            held.set()
            release.wait(30)

    t = _hold_lock(hold, release, held, errors)
    try:
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"), engine.begin() as conn:
            conn.execute(probe.insert().values(id=1, label="一"))
        assert not release.is_set()
    finally:
        release.set()
        t.join()
        with engine.begin() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(probe)).scalar_one() == 0
            conn.execute(probe.insert().values(id=1, label="一"))  # and it works again once released
        probe_child.drop(engine, checkfirst=True)
        probe.drop(engine)
        engine.dispose()
        locker.dispose()
    assert errors == []
