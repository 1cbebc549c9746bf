"""``yuyue pii mask FILE|-``: scrub personal data from text, one JSON line per input line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import orjson
import typer

from yuyue.features.pii import TYPE_PLACEHOLDERS, find_pii_raw

pii_app = typer.Typer(help="Personal data: find and mask it.", no_args_is_help=True)


def mask_line(line: str) -> dict[str, object]:
    """``{"masked": ..., "spans": [{"type", "start", "end"}]}`` for one line; offsets index ``line``."""
    spans = find_pii_raw(line)
    parts: list[str] = []
    pos = 0
    for s in spans:
        parts.append(line[pos : s.start])
        parts.append(TYPE_PLACEHOLDERS[s.type])
        pos = s.end
    parts.append(line[pos:])
    return {
        "masked": "".join(parts),
        "spans": [{"type": s.type, "start": s.start, "end": s.end} for s in spans],
    }


def _mask_stream(source: TextIO) -> None:
    out = sys.stdout
    for line in source:
        out.write(orjson.dumps(mask_line(line.rstrip("\r\n"))).decode() + "\n")


@pii_app.command("mask")
def mask(
    file: str = typer.Argument(..., help="a UTF-8 text file, one message per line, or - for standard input"),
) -> None:
    """Print one JSON line per input line: the line with each piece of personal data replaced by its type
    (<phone>, <wechat>, <qq>, <id_card>, <surname>, <email>, <address>) and the spans found (offsets into
    the line, in characters)."""
    if file == "-":
        _mask_stream(sys.stdin)
        return
    path = Path(file)
    if not path.is_file():
        typer.echo(f"error: {file}: no such file", err=True)
        raise typer.Exit(2)
    try:
        with path.open(encoding="utf-8") as f:
            _mask_stream(f)
    except UnicodeDecodeError as exc:
        typer.echo(f"error: {file} is not UTF-8 text ({exc.reason} at byte {exc.start})", err=True)
        raise typer.Exit(2) from None
