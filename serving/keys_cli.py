"""``yuyue keys``: create, revoke and list API keys.

The database is ``get_settings().resolved_database_url`` (``YUYUE_DATABASE_URL``,
else ``sqlite:///<var_dir>/yuyue.db``). Hashes are never printed; the raw key is
printed once, by ``create``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import typer

from yuyue.cli.common import fail, one_line

if TYPE_CHECKING:
    from yuyue.config import Settings
    from yuyue.serving.auth import KeyStore

T = TypeVar("T")

keys_app = typer.Typer(
    name="keys",
    help="Manage API keys: create (shows the key once), revoke, list.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app = keys_app


def _store() -> KeyStore:
    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.config import get_settings
    from yuyue.serving.auth import KeyStore
    from yuyue.serving.db import make_engine

    try:
        url = get_settings().resolved_database_url
        return KeyStore(make_engine(url), cache_ttl=0)
    except (ValueError, OSError, SQLAlchemyError) as exc:
        fail(f"cannot open the key database: {one_line(exc)}")


def _run(fn: Callable[[], T]) -> T:
    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.serving.auth import AuthError

    try:
        return fn()
    except AuthError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"database error: {one_line(exc)}")


@keys_app.command("create")
def create_command(
    name: str = typer.Argument(..., help="who the key is for (unique among active keys)"),
    role: str = typer.Option(..., "--role", help="consultant, supervisor, analyst or admin"),
    consultant_id: str | None = typer.Option(
        None,
        "--consultant-id",
        help="the consultant id a consultant key serves as (required for consultants)",
    ),
    rate: int | None = typer.Option(
        None, "--rate", help="requests per minute for this key (default: the service's)"
    ),
    hospital: list[str] | None = typer.Option(
        None,
        "--hospital",
        help="scope the key to this hospital (repeat for several); none: every hospital (group level)",
    ),
) -> None:
    """Create a key and print it once."""
    store = _store()
    key, raw = _run(
        lambda: store.create(
            name, role, consultant_id=consultant_id, rate_per_minute=rate, hospitals=hospital or None
        )
    )
    store.engine.dispose()
    extra = f", consultant {key.consultant_id}" if key.consultant_id else ""
    extra += f", hospitals {', '.join(key.hospitals)}" if key.hospitals else ", every hospital"
    rate_text = f", {key.rate_per_minute}/min" if key.rate_per_minute else ""
    typer.echo(
        f"created key {key.id} {key.name!r} (role {key.role}{extra}{rate_text}, prefix {key.key_prefix})"
    )
    typer.echo(raw)
    typer.echo("store this key now: it is shown only once and cannot be recovered.", err=True)


@keys_app.command("revoke")
def revoke_command(name_or_id: str = typer.Argument(..., help="the active key's name, or a key id")) -> None:
    """Revoke a key (running services stop accepting it within a few seconds)."""
    store = _store()
    key = _run(lambda: store.revoke(name_or_id))
    store.engine.dispose()
    typer.echo(f"revoked key {key.id} {key.name!r} (role {key.role}, prefix {key.key_prefix})")


@keys_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="one JSON array"),
    active: bool = typer.Option(False, "--active", help="only keys that are not revoked"),
) -> None:
    """List keys (never their hashes)."""
    store = _store()
    keys = _run(lambda: store.list(include_revoked=not active))
    store.engine.dispose()
    if as_json:
        typer.echo(json.dumps([k.as_dict() for k in keys], ensure_ascii=False))
        return
    if not keys:
        typer.echo("no keys")
        return
    header = ("id", "name", "role", "consultant", "hospitals", "prefix", "rate/min", "created", "status")
    rows = [
        (
            str(k.id),
            k.name,
            k.role,
            k.consultant_id or "-",
            ",".join(k.hospitals) or "all",
            k.key_prefix,
            str(k.rate_per_minute or "-"),
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            "active" if k.active else f"revoked {k.revoked_at:%Y-%m-%d %H:%M}",
        )
        for k in keys
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


DEMO_KEYS = (
    ("demo-admin", "admin", None),
    ("demo-supervisor", "supervisor", None),
    ("demo-consultant", "consultant", "c01"),
)


def ensure_demo_keys(settings: Settings) -> list[str]:
    """On a fresh install (no active key at all), create one key per role for trying the console.

    The raw keys go to ``<var_dir>/demo-keys.json`` (readable by the owner only); returns lines to print.
    """
    import os

    from yuyue.serving.auth import KeyStore
    from yuyue.serving.db import make_engine

    path = settings.var_dir / "demo-keys.json"
    engine = make_engine(settings.resolved_database_url)
    try:
        store = KeyStore(engine, cache_ttl=0)
        if store.list(include_revoked=False):
            hint = f"; demo keys in {path}" if path.exists() else ""
            return [f"API keys: {len(store.list(include_revoked=False))} active (yuyue keys list){hint}"]
        created = {}
        for name, role, consultant in DEMO_KEYS:
            _, raw = store.create(name, role, consultant_id=consultant)
            created[name] = {"role": role, "consultant_id": consultant, "key": raw}
    finally:
        engine.dispose()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(created, f, ensure_ascii=False, indent=2)
    lines = [
        f"no API keys yet: created demo keys (saved to {path}; revoke them with `yuyue keys revoke NAME`):"
    ]
    lines += [f"  {name:16} {v['role']:11} {v['key']}" for name, v in created.items()]
    return lines
