"""What the ``yuyue`` subcommands share: how a command fails, and a database error in one line."""

from __future__ import annotations

from typing import NoReturn

import typer

__all__ = ["fail", "one_line"]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: <message>`` on stderr and end the command with exit status ``code`` (1: it
    failed; 2: bad usage, as Typer's own usage errors)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (a driver's own error for a SQLAlchemy one, which
    wraps it as ``orig``); the exception's class name when it has no message."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
