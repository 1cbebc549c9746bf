"""Database engines and the shared table metadata of the service.

``make_engine`` accepts two kinds of URL:

- ``sqlite:///path/to/yuyue.db`` (the default, one machine): the parent folder is
  created (owner-only, 0700), the database file too (0600; SQLite gives its ``-wal``
  and ``-shm`` files the same mode), and every connection gets WAL journaling (readers
  never block the writer), ``synchronous=NORMAL`` (safe with WAL, much faster than
  FULL), foreign keys and a short busy timeout (``busy_timeout_ms``, 1 s): a write that
  finds another writer's lock held longer gets "database is locked", which the API
  answers 503 with ``Retry-After``, instead of waiting without bound.
  ``sqlite://`` / ``sqlite:///:memory:`` gives one in-memory database shared by
  all threads (tests only).
- ``postgresql://user@host/db`` (or ``postgres://``): mapped to the psycopg 3
  driver (``postgresql+psycopg://``). Every session gets ``statement_timeout``
  (2 s) and ``lock_timeout`` (1 s), connecting gives up after ``connect_timeout_s``
  (3 s) and waiting for a pooled connection after ``pool_timeout`` (3 s), so a
  locked table or a slow server costs a bounded wait and a 503, never a hung
  request. A pooled connection idle for more than :data:`PING_AFTER_IDLE_S` is
  pinged when checked out and replaced if the server dropped it; one reused sooner
  is not (under load a ping per transaction was a whole extra round trip per
  message, and a connection cannot go stale in seconds without the server going
  away, which the next statement reports).

Engines never log bound parameters (``hide_parameters=True``): they hold message
text and personal data, and SQLAlchemy puts them into every error message.
:func:`engine_options` gives the timeouts from the settings.

Modules that own tables declare them on :data:`metadata`. The schema is versioned by Alembic
(``serving/migrations``; ``yuyue store upgrade``, ``yuyue store current``): :func:`prepare_schema`
(what :func:`create_all` does for the service's tables) creates a fresh database at the head
revision and refuses one behind the code with a message naming ``yuyue store upgrade``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

    from yuyue.config import Settings

# the defaults of the settings of the same names (config.settings)
BUSY_TIMEOUT_MS = 1000
STATEMENT_TIMEOUT_MS = 2000
LOCK_TIMEOUT_MS = 1000
CONNECT_TIMEOUT_S = 3
POOL_TIMEOUT_S = 3.0
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


class UTCDateTime(sa.TypeDecorator[datetime]):
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


def _sqlite_on_connect(wal: bool, busy_timeout_ms: int) -> Callable[[sqlite3.Connection, Any], None]:
    def on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if wal:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    return on_connect


def _private_sqlite_file(path: Path) -> None:
    """Create ``path``'s folder (0700) and the file itself (0600) if missing; tighten the file and its
    ``-wal``/``-shm``/``-journal`` companions to owner-only if another process left them wider.

    A folder that already exists keeps its mode (it may be shared, like /tmp); the files do not.
    """
    path = path.expanduser()
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)  # mkdir's mode is filtered by the umask
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for p in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            p.chmod(stat.S_IMODE(st.st_mode) & 0o700)


def make_engine(
    url: str | URL,
    *,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
    connect_timeout_s: int = CONNECT_TIMEOUT_S,
    **kwargs: Any,
) -> Engine:
    """An engine for ``sqlite:///PATH`` or ``postgresql://...`` (see the module docstring).

    ``busy_timeout_ms`` applies to SQLite, the other timeouts to PostgreSQL (0: no limit).
    Extra keyword arguments go to :func:`sqlalchemy.create_engine` (``echo``, ``pool_size`` ...).
    """
    for name, value in (
        ("busy_timeout_ms", busy_timeout_ms),
        ("statement_timeout_ms", statement_timeout_ms),
        ("lock_timeout_ms", lock_timeout_ms),
        ("connect_timeout_s", connect_timeout_s),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    parsed = normalize_url(url)
    kwargs.setdefault("hide_parameters", True)  # bound values are message text: never in logs or errors
    if parsed.get_backend_name() == "sqlite":
        memory = _is_memory(parsed)
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": busy_timeout_ms / 1000}
        connect_args.update(kwargs.pop("connect_args", {}))
        if memory:
            kwargs.setdefault("poolclass", StaticPool)
        elif parsed.database:  # no name is an in-memory database (_is_memory)
            _private_sqlite_file(Path(parsed.database))
        engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_on_connect(not memory, busy_timeout_ms))
        return engine
    ping_after = kwargs.pop("ping_after_idle_s", PING_AFTER_IDLE_S)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
        kwargs.setdefault("pool_timeout", POOL_TIMEOUT_S)
    kwargs.setdefault("pool_recycle", 1800)
    options = f"-c statement_timeout={int(statement_timeout_ms)} -c lock_timeout={int(lock_timeout_ms)}"
    connect_args = {"connect_timeout": max(1, int(connect_timeout_s)) if connect_timeout_s else 0}
    connect_args.update(kwargs.pop("connect_args", {}))
    if "options" in connect_args:
        connect_args["options"] = f"{options} {connect_args['options']}"
    else:
        connect_args["options"] = options
    engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        sa.event.listen(engine, "checkin", _stamp_idle)
        sa.event.listen(engine, "checkout", _ping_if_idle(engine.dialect, ping_after))
    return engine


def engine_options(settings: Settings) -> dict[str, Any]:
    """:func:`make_engine`'s timeouts from the settings."""
    return {
        "busy_timeout_ms": settings.sqlite_busy_timeout_ms,
        "statement_timeout_ms": settings.db_statement_timeout_ms,
        "lock_timeout_ms": settings.db_lock_timeout_ms,
        "connect_timeout_s": settings.db_connect_timeout_s,
    }


def _stamp_idle(_dbapi_conn: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dialect: sa.engine.Dialect, after_s: float) -> Callable[[Any, Any, Any], None]:
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


# ---- a lock held elsewhere: one request waits on it, the others are told at once -------------------
class Busy(Exception):
    """Why a :class:`DatabaseBusy` was raised (its ``orig``)."""


class DatabaseBusy(sa.exc.OperationalError):
    """The database is locked by someone else; raised at once, without waiting, while a
    :class:`BusyGate` is tripped. An ``OperationalError``, so the API answers 503 with ``Retry-After``
    as for any database that cannot be reached."""

    def __init__(self, message: str):
        super().__init__(None, None, Busy(message), hide_parameters=True)


LOCK_SQLSTATES = {"55P03", "57014"}  # PostgreSQL lock_not_available, query_canceled (statement_timeout)


def is_lock_timeout(exc: BaseException) -> bool:
    """True for "a lock (or the statement) waited out its timeout": SQLite's "database is locked",
    PostgreSQL's lock_timeout and statement_timeout."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, Busy):
        return True
    if isinstance(orig, sqlite3.OperationalError):
        return "locked" in str(orig)
    return getattr(orig, "sqlstate", None) in LOCK_SQLSTATES


class BusyGate:
    """A circuit breaker for lock waits.

    When a statement waited out its lock or statement timeout, the lock is probably still held
    (a long transaction elsewhere, a ``LOCK TABLE``, a backup). For ``hold_s`` every caller gets
    :class:`DatabaseBusy` at once (the requests that queued for a worker thread behind the first
    waiters are answered then, instead of each waiting out a timeout of its own: with 4 threads
    and 6 waiting requests the last one waited two timeouts); after that, until ``cooldown_s``
    has passed or a call succeeds, one caller at a time (the probe) waits on the database and
    the others are still answered at once. A probe that times out again starts a new hold.
    """

    def __init__(self, hold_s: float = 1.0, cooldown_s: float = 5.0):
        self.hold_s = hold_s
        self.cooldown_s = max(cooldown_s, hold_s)
        self._tripped_at = -float("inf")
        self._probe = threading.Lock()
        self.trips = 0

    @property
    def tripped(self) -> bool:
        return time.monotonic() < self._tripped_at + self.cooldown_s

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        probe = False
        since = time.monotonic() - self._tripped_at
        if since < self.cooldown_s:
            if since < self.hold_s or not self._probe.acquire(blocking=False):
                raise DatabaseBusy("the database is locked by another transaction; retry in a moment")
            probe = True
        try:
            yield
        except sa.exc.DBAPIError as exc:
            if is_lock_timeout(exc) and not isinstance(exc, DatabaseBusy):
                self._tripped_at = time.monotonic()
                self.trips += 1
            raise
        else:
            if probe:
                self._tripped_at = -float("inf")
        finally:
            if probe:
                self._probe.release()


# ---- the schema: Alembic migrations (serving/migrations) ------------------------------------------
# the tables under migration; a table declared on :data:`metadata` and not listed here (a test's probe
# table) is created by :func:`create_all` as it is, outside the migrations
SCHEMA_TABLES = frozenset(
    {
        "api_keys",
        "appointments",
        "audit_log",
        "chat_summaries",
        "conversations",
        "erasures",
        "events",
        "hospital_knowledge",
        "patient_chats",
        "patient_incidents",
        "patient_keys",
        "patients",
        "reply_reviews",
        "suggestions",
        "task_attempts",
        "tasks",
    }
)
# the tables of the baseline revision (what a database created before migrations can hold)
BASELINE_TABLES = frozenset({"api_keys", "conversations", "events", "suggestions"})
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
UPGRADE_COMMAND = "yuyue store upgrade"
_SCHEMA_LOCK = 0x7975_7975  # PostgreSQL advisory lock: one process creates or upgrades the schema at a time


class SchemaError(RuntimeError):
    """The database's schema is not the one this code expects; the message says what to do."""


class SchemaBehind(SchemaError):
    """The database is older than the code (unversioned, or at an older revision)."""


class SchemaUnknown(SchemaError):
    """The database is at a revision this code does not know (written by a newer Yuyue)."""


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Any:
    """Alembic's configuration (no ini file): the migrations in ``serving/migrations``, run on
    ``connection`` (an open one, in a transaction) or on a new engine for ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", str(url).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The revision the code expects (the newest migration)."""
    head = _script().get_current_head()
    if head is None:  # the package ships its migrations: a missing head is a broken install
        raise RuntimeError(f"no migration head in {MIGRATIONS_DIR}")
    return head


def _revision_of(conn: sa.Connection) -> tuple[str | None, set[str]]:
    """The database's revision (None when unversioned) and the service's tables it has."""
    names = set(sa.inspect(conn).get_table_names())
    revision = None
    if VERSION_TABLE in names:
        revision = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    return revision, names & SCHEMA_TABLES


def current_revision(engine: Engine) -> str | None:
    """The database's revision; None for a database without ``alembic_version`` (empty, or made by
    ``create_all`` before migrations)."""
    with engine.connect() as conn:
        return _revision_of(conn)[0]


def _describe(engine: Engine) -> str:
    return f"the database {engine.url.render_as_string(hide_password=True)}"


def _check(engine: Engine, revision: str | None, tables: set[str]) -> None:
    """Raise :class:`SchemaError` unless the database is at the head revision."""
    head = head_revision()
    if revision == head:
        return
    if revision is None:
        raise SchemaBehind(
            f"{_describe(engine)} has tables ({', '.join(sorted(tables))}) but no schema revision: "
            f"it was created by a Yuyue without migrations. Run `{UPGRADE_COMMAND}` to bring it to "
            f"revision {head} (existing rows are kept), then start again."
        )
    _check_known(engine, revision)
    raise SchemaBehind(
        f"{_describe(engine)} is at schema revision {revision}, behind the code ({head}). "
        f"Run `{UPGRADE_COMMAND}` to upgrade it (existing rows are kept), then start again."
    )


def _check_known(engine: Engine, revision: str) -> None:
    try:
        known = _script().get_revision(revision) is not None
    except Exception:  # alembic.util.CommandError: unknown revision
        known = False
    if not known:
        raise SchemaUnknown(
            f"{_describe(engine)} is at schema revision {revision!r}, which this Yuyue does not know "
            f"(it expects {head_revision()}): it was written by a newer version; run that version."
        )


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})


def _schema_tables() -> list[sa.Table]:
    import yuyue.serving.appointments  # noqa: F401  (declares appointments)
    import yuyue.serving.auth  # noqa: F401  (declares api_keys)
    import yuyue.serving.knowledge  # noqa: F401  (declares hospital_knowledge)
    import yuyue.serving.patients  # noqa: F401  (declares patients, patient_keys, patient_chats, patient_incidents)
    import yuyue.serving.reviews  # noqa: F401  (declares reply_reviews)
    import yuyue.serving.store  # noqa: F401  (declares events, conversations, suggestions)
    import yuyue.serving.tasks  # noqa: F401  (declares tasks, task_attempts)

    return [t for t in metadata.sorted_tables if t.name in SCHEMA_TABLES]


def prepare_schema(engine: Engine) -> str:
    """Make sure the database has the schema of this code, for the server (and ``yuyue keys``).

    - at the head revision: nothing to do (``"current"``);
    - empty (none of the service's tables): create them at head and record the revision
      (``"created"``), in one transaction, under an advisory lock on PostgreSQL so that several
      workers starting together create it once;
    - anything else raises :class:`SchemaBehind` (unversioned but populated: created before
      migrations; or at an older revision), whose message names ``yuyue store upgrade``, or
      :class:`SchemaUnknown` (a revision from a newer version). The server never migrates by
      itself: an upgrade is an operator's decision (take a backup first).
    """
    tables = _schema_tables()
    with engine.connect() as conn:
        revision, present = _revision_of(conn)
    if revision is None and not present:
        from alembic.migration import MigrationContext

        with engine.begin() as conn:
            _lock(conn)
            revision, present = _revision_of(conn)  # another process may have created it meanwhile
            if revision is None and not present:
                metadata.create_all(conn, tables=tables, checkfirst=True)
                MigrationContext.configure(conn).stamp(_script(), "head")
                return "created"
    _check(engine, revision, present)
    return "current"


def upgrade_schema(engine: Engine, echo: Any = None) -> list[str]:
    """``yuyue store upgrade``: bring the database to the head revision; returns what was done.

    A database created by ``create_all`` before migrations (tables, no ``alembic_version``) is
    recognised: it is taken as the baseline revision (its tables kept, missing ones created) and then
    upgraded. An empty database gets every revision in turn. One transaction (on PostgreSQL the DDL
    is transactional: a failed upgrade leaves the database as it was).
    """
    from alembic import command

    lines = []
    with engine.begin() as conn:
        _lock(conn)
        before, present = _revision_of(conn)
        head = head_revision()
        if before == head:
            return [f"already at the head revision {head}"]
        if before is not None:
            _check_known(engine, before)
        if before is None and present:
            base = _script().get_base()
            lines.append(
                f"unversioned database with tables {', '.join(sorted(present))} (created before migrations): "
                f"stamped as the baseline {base}"
                + (
                    f", created the missing tables {', '.join(sorted(BASELINE_TABLES - present))}"
                    if BASELINE_TABLES - present
                    else ""
                )
            )
        elif before is None:
            lines.append("empty database: creating the schema")
        steps = [s.revision for s in _script().iterate_revisions(head, before)]
        command.upgrade(alembic_config(conn), "head")
        after = _revision_of(conn)[0]
    lines.append(f"upgraded {before or 'unversioned'} -> {after} ({', '.join(reversed(steps))})")
    return lines


def create_all(engine: Engine, tables: list[sa.Table] | None = None) -> None:
    """Create the tables declared on :data:`metadata` (or just ``tables``).

    The service's tables (:data:`SCHEMA_TABLES`) go through :func:`prepare_schema`: a fresh database
    gets all of them at the head revision, one behind the code raises :class:`SchemaBehind`. Other
    tables (a test's probe table) are created as they are if missing.
    """
    chosen = list(metadata.sorted_tables) if tables is None else list(tables)
    if tables is None or any(t.name in SCHEMA_TABLES for t in chosen):
        prepare_schema(engine)
    others = [t for t in chosen if t.name not in SCHEMA_TABLES]
    if others:
        metadata.create_all(engine, tables=others, checkfirst=True)
