"""``yuyue store``: the database schema (Alembic migrations in ``serving/migrations``).

- ``yuyue store current``: the database's schema revision, or ``unversioned`` (empty, or created by a
  Yuyue without migrations), and whether it is the revision this code expects.
- ``yuyue store upgrade``: bring the database to the head revision. A database created before
  migrations (tables but no revision) is recognised, stamped as the baseline, then upgraded.
- ``yuyue store purge --older-than DAYS`` (default: the ``retention_days`` setting): retention -- mask the
  raw text of chats last active before then (``serving/privacy.py``); prints the counts.

The database is ``--url``, else ``get_settings().resolved_database_url`` (``YUYUE_DATABASE_URL``, else
``sqlite:///<var_dir>/yuyue.db``). The server refuses to start on a database behind the code and
names ``yuyue store upgrade``; take a backup before upgrading a production database.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import typer

from yuyue.cli.common import fail, one_line

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

store_app = typer.Typer(
    name="store",
    help="The database: show its schema revision, upgrade it to this version's, purge old raw text.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app = store_app

URL_HELP = "database URL (default: the database_url setting, else sqlite:///<var_dir>/yuyue.db)"
# a schema change may wait for readers to finish: longer lock waits than the server's, no statement limit
LOCK_WAIT_MS = 30_000


def _engine(url: str | None) -> Engine:
    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.serving.db import make_engine

    try:
        if url is None:
            from yuyue.config import get_settings

            url = get_settings().resolved_database_url
        return make_engine(
            url, busy_timeout_ms=LOCK_WAIT_MS, lock_timeout_ms=LOCK_WAIT_MS, statement_timeout_ms=0
        )
    except (ValueError, OSError, SQLAlchemyError) as exc:
        fail(f"cannot open the database: {one_line(exc)}")


@store_app.command("current")
def current(url: str = typer.Option(None, "--url", help=URL_HELP)) -> None:
    """Print the database's schema revision ("unversioned" when it has none) and the code's."""
    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.serving.db import current_revision, head_revision

    engine = _engine(url)
    try:
        revision = current_revision(engine)
    except SQLAlchemyError as exc:
        fail(f"database error: {one_line(exc)}")
    finally:
        engine.dispose()
    head = head_revision()
    typer.echo(revision or "unversioned")
    if revision != head:
        typer.echo(f"the code expects {head}: run `yuyue store upgrade`", err=True)


@store_app.command("upgrade")
def upgrade(url: str = typer.Option(None, "--url", help=URL_HELP)) -> None:
    """Upgrade the database to this version's schema (rows are kept; take a backup first)."""
    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.serving.db import SchemaError, upgrade_schema

    engine = _engine(url)
    try:
        for line in upgrade_schema(engine):
            typer.echo(line)
    except SchemaError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"upgrade failed (on PostgreSQL nothing was changed): {one_line(exc)}")
    finally:
        engine.dispose()


@store_app.command("purge")
def purge(
    older_than: float = typer.Option(
        None,
        "--older-than",
        metavar="DAYS",
        help="mask the raw text of chats whose last message is older than this many days "
        "(default: the retention_days setting)",
    ),
    url: str = typer.Option(None, "--url", help=URL_HELP),
) -> None:
    """Retention: mask the raw text of old chats (personal data masked for good; the masked chats, outcomes
    and statistics stay). Idempotent; recorded in the audit log. Run it daily (cron) with retention_days."""
    import getpass

    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.config import get_settings
    from yuyue.serving.db import SchemaError, prepare_schema
    from yuyue.serving.privacy import purge as purge_chats
    from yuyue.serving.store import EventStore

    settings = get_settings()
    days = older_than if older_than is not None else settings.retention_days
    if days is None:
        fail("no retention given: pass --older-than DAYS or set retention_days (YUYUE_RETENTION_DAYS)")
    if not days > 0:
        fail(f"--older-than must be a positive number of days, got {days:g}")
    engine = _engine(url)
    cache = None
    try:
        prepare_schema(engine)
        if settings.redis_url:  # cached sessions of the purged chats go too
            from yuyue.serving.cache import make_cache, redis_options
            from yuyue.serving.service import LIVE_CODEC

            cache = make_cache(settings.redis_url, LIVE_CODEC, **redis_options(settings))
        out = purge_chats(EventStore(engine), days, actor=f"cli:{_user(getpass)}", role="cli", cache=cache)
    except SchemaError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"purge failed: {one_line(exc)}")
    finally:
        if cache is not None:
            cache.close()
        engine.dispose()
    typer.echo(
        f"masked {out['conversations']} conversations last active before {out['cutoff']}: "
        f"{out['messages']} messages, {out['suggestions']} suggestions, {out['events']} events rewritten"
    )


def _user(getpass: ModuleType) -> str:
    try:
        return str(getpass.getuser())
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown"
