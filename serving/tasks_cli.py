"""``yuyue tasks``: the desk's work list from the command line.

- ``yuyue tasks sweep [--now TIME] [--url URL] [--json]``: run the desk's rules once (``serving/tasks.py``):
  mark the appointments whose time plus ``no_show_grace_minutes`` has passed with nothing recorded as
  no-shows (each with its callback task), bring snoozed tasks whose time came back, open a lead task for
  every chat that left contact without booking, and link every chat not linked to its patient yet (or
  grown since). Idempotent: a second run finds nothing to do. Run it from cron every few minutes: the
  API also applies the time-based rules lazily on every read of the work list, but nobody may read it
  at night.

The database is ``--url``, else ``get_settings().resolved_database_url``; it must be at this version's
schema (``yuyue store upgrade``).
"""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import typer

from yuyue.cli.common import fail, one_line

tasks_app = typer.Typer(
    name="tasks",
    help="The desk's work list: run its rules (no-shows, snoozes, lead tasks, patient links).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app = tasks_app


@tasks_app.command("sweep")
def sweep(
    url: str = typer.Option(None, "--url", help="database URL (default: the database_url setting)"),
    now: str = typer.Option(
        None, "--now", metavar="TIME", help="run as of this time (ISO 8601 with an offset; default: now)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the counts as one JSON object"),
) -> None:
    """Mark due no-shows, wake snoozed tasks, open lead tasks and link chats to patients; idempotent."""
    import orjson
    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.config import get_settings
    from yuyue.serving.cache import MemoryCache
    from yuyue.serving.db import SchemaError, make_engine, prepare_schema
    from yuyue.serving.service import ChatService, ModelHolder
    from yuyue.serving.store import EventStore
    from yuyue.serving.tasks import install

    at = None
    if now is not None:
        try:
            at = datetime.fromisoformat(now)
        except ValueError:
            fail(f"--now: not an ISO 8601 time: {now!r} (e.g. 2025-03-06T18:00:00+08:00)")
        if at.tzinfo is None:
            fail(f"--now must carry a timezone offset, e.g. {now}+08:00")
    settings = get_settings()
    try:
        engine = make_engine(url or settings.resolved_database_url)
    except (ValueError, OSError, SQLAlchemyError) as exc:
        fail(f"cannot open the database: {exc}")
    try:
        prepare_schema(engine)
        # outcomes only: no model and no session cache are needed (no message is scored)
        service = ChatService(settings, EventStore(engine), MemoryCache(16), ModelHolder())
        desk = install(SimpleNamespace(settings=settings, service=service))
        if at is not None:
            desk.clock = lambda: at
        counts = desk.sweep(leads=True, link_limit=None)
    except SchemaError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"database error: {one_line(exc)}")
    finally:
        engine.dispose()
    if as_json:
        typer.echo(orjson.dumps(counts).decode())
    else:
        typer.echo(
            f"no-shows marked: {counts['no_shows']}, snoozed tasks woken: {counts['woken']}, "
            f"lead tasks opened: {counts['leads']}, chats linked to patients: {counts['linked']}"
        )
