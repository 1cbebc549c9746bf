"""``yuyue replies``: review the reply pool (list entries, allow, block or edit them).

Decisions are written to the service's database (the settings' ``database_url``, or ``--database``),
the same ``reply_reviews`` table the server reads (``serving/reviews.py``): a running server applies
them to its next suggestions without retraining or a restart, and they survive retraining.

The replies listed are those of the model the server uses: the registry's champion, else the bundle
training wrote last (``<var_dir>/models/latest``); ``--model DIR`` or ``--pool FILE`` choose another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from yuyue.cli.common import fail
from yuyue.models.replies.pool import ReplyPool

replies_app = typer.Typer(
    help="Review mined replies: list, allow, block, edit (decisions in the service's database).",
    no_args_is_help=True,
)

PoolOption = typer.Option(None, "--pool", help="a reply pool file (default: the champion model's pool)")
ModelOption = typer.Option(None, "--model", help="a model bundle directory whose pool to review")
DatabaseOption = typer.Option(None, "--database", help="database URL (default: the settings' database)")


def default_pool_path() -> Path:
    """The pool training wrote last (``<var_dir>/models/latest/replies/pool.jsonl``)."""
    from yuyue.config import get_settings

    return get_settings().var_dir / "models" / "latest" / "replies" / "pool.jsonl"


def _load(pool: Path | None, model: Path | None) -> ReplyPool:
    if pool is None and model is not None:
        pool = model / "replies" / "pool.jsonl"
    if pool is None:
        champion = _champion_pool()
        if champion is not None:
            return champion
        pool = default_pool_path()
    if not pool.exists():
        fail(f"no reply pool at {pool} (train a model, or pass --pool / --model)")
    try:
        return ReplyPool.load(pool)
    except (OSError, ValueError) as exc:
        fail(str(exc))


def _champion_pool() -> ReplyPool | None:
    """The pool of the registry's champion (what the server serves), or None without one."""
    from yuyue.training import registry

    try:
        if registry.alias_version(registry.CHAMPION) is None:
            return None
        model, _ = registry.load(registry.CHAMPION)
    except Exception:  # no registry yet, or unreadable: fall back to the latest bundle
        return None
    return model.suggester.pool if model.suggester is not None else None


def _book(database: str | None) -> Any:
    from yuyue.config import get_settings
    from yuyue.serving.db import SchemaError, make_engine, prepare_schema
    from yuyue.serving.reviews import ReviewBook

    settings = get_settings()
    try:
        engine = make_engine(database or settings.resolved_database_url)
        prepare_schema(engine)
    except (SchemaError, ValueError) as exc:
        fail(str(exc))
    return ReviewBook(engine, serve_unreviewed=settings.serve_unreviewed)


@replies_app.command("list")
def list_entries(
    status: str | None = typer.Option(None, "--status", help="unreviewed, allowed, blocked or edited"),
    limit: int = typer.Option(50, "--limit", min=1, help="at most this many rows"),
    offset: int = typer.Option(0, "--offset", min=0, help="skip this many rows"),
    pool: Path | None = PoolOption,
    model: Path | None = ModelOption,
    database: str | None = DatabaseOption,
) -> None:
    """Entries, most used first: id, status, source, stage, mined uses, times shown, text (masked;
    an edited reply shows ``=> served text``)."""
    from yuyue.serving.reviews import LIST_STATUSES

    if status is not None and status not in LIST_STATUSES:
        fail(f"--status must be one of {', '.join(LIST_STATUSES)}")
    rp = _load(pool, model)
    book = _book(database)
    _, rows = book.listing(rp, status, limit, offset)
    usage = book.usage([e.id for e, _, _ in rows])
    for e, st, d in rows:
        text = e.text + (f" => {d.text}" if d is not None and d.text else "")
        typer.echo(f"{e.id}\t{st}\t{e.source}\t{e.stage or '-'}\t{e.count}\t{usage[e.id]['shown']}\t{text}")


def _decide(
    ids: list[str], action: str, text: str | None, pool: Path | None, model: Path | None, database: str | None
) -> None:
    from yuyue.serving.reviews import ReviewError

    rp = _load(pool, model)
    missing = [i for i in ids if i not in rp]
    if missing:
        fail(f"unknown reply id(s): {', '.join(missing)}; nothing changed")
    book = _book(database)
    try:
        for i in ids:
            book.decide(rp.get(i), action, text, actor="cli", role="admin")
    except ReviewError as exc:
        fail(str(exc))
    status = {"allow": "allowed", "block": "blocked", "edit": "edited"}[action]
    typer.echo(f"{status}: {len(ids)} repl{'y' if len(ids) == 1 else 'ies'}")


@replies_app.command()
def allow(
    ids: list[str] = typer.Argument(..., help="reply ids"),
    pool: Path | None = PoolOption,
    model: Path | None = ModelOption,
    database: str | None = DatabaseOption,
) -> None:
    """Mark replies as reviewed and allowed."""
    _decide(ids, "allow", None, pool, model, database)


@replies_app.command()
def block(
    ids: list[str] = typer.Argument(..., help="reply ids"),
    pool: Path | None = PoolOption,
    model: Path | None = ModelOption,
    database: str | None = DatabaseOption,
) -> None:
    """Mark replies as blocked: they are never suggested."""
    _decide(ids, "block", None, pool, model, database)


@replies_app.command()
def edit(
    reply_id: str = typer.Argument(..., help="reply id"),
    text: str = typer.Argument(
        ..., help="the text to suggest instead (slots such as {address_form} allowed)"
    ),
    pool: Path | None = PoolOption,
    model: Path | None = ModelOption,
    database: str | None = DatabaseOption,
) -> None:
    """Replace a reply's text; it must pass the compliance guard and hold no personal data."""
    _decide([reply_id], "edit", text, pool, model, database)


__all__ = ["default_pool_path", "replies_app"]
