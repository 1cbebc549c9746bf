"""``yuyue replies``: review the reply pool (list entries, allow or block them)."""

from __future__ import annotations

from pathlib import Path

import typer

from yuyue.models.replies.pool import STATUSES, ReplyPool, UnknownReplyError

replies_app = typer.Typer(help="Review mined replies: list, allow, block.", no_args_is_help=True)

PoolOption = typer.Option(
    None, "--pool", help="reply pool file (default: <var_dir>/models/replies/pool.jsonl)"
)


def default_pool_path() -> Path:
    """Where the pool lives unless ``--pool`` says otherwise."""
    from yuyue.config import get_settings

    return get_settings().var_dir / "models" / "replies" / "pool.jsonl"


def _load(pool: Path | None) -> ReplyPool:
    path = pool or default_pool_path()
    if not path.exists():
        typer.echo(f"error: no reply pool at {path}", err=True)
        raise typer.Exit(1)
    try:
        return ReplyPool.load(path)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@replies_app.command("list")
def list_entries(
    status: str | None = typer.Option(None, "--status", help="only entries with this status"),
    limit: int = typer.Option(50, "--limit", min=1, help="at most this many rows"),
    pool: Path | None = PoolOption,
) -> None:
    """Entries, most used first: id, status, source, stage, uses, booking prior, text (masked)."""
    if status is not None and status not in STATUSES:
        typer.echo(f"error: --status must be one of {', '.join(STATUSES)}", err=True)
        raise typer.Exit(1)
    rp = _load(pool)
    for e in rp.select(status=status, limit=limit):
        typer.echo(
            f"{e.id}\t{e.status}\t{e.source}\t{e.stage or '-'}\t{e.count}\t{e.booked_after:.3f}\t{e.text}"
        )


def _set(ids: list[str], status: str, pool: Path | None) -> None:
    rp = _load(pool)
    try:
        rp.set_status(ids, status)
    except UnknownReplyError as exc:
        typer.echo(f"error: {exc}; nothing changed", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{status}: {len(ids)} repl{'y' if len(ids) == 1 else 'ies'}")


@replies_app.command()
def allow(ids: list[str] = typer.Argument(..., help="reply ids"), pool: Path | None = PoolOption) -> None:
    """Mark replies as reviewed and allowed."""
    _set(ids, "allowed", pool)


@replies_app.command()
def block(ids: list[str] = typer.Argument(..., help="reply ids"), pool: Path | None = PoolOption) -> None:
    """Mark replies as blocked: they are never suggested."""
    _set(ids, "blocked", pool)


__all__ = ["default_pool_path", "replies_app"]
