"""``yuyue data``: generate, validate, import and summarise conversation files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from yuyue.data.io import InvalidRecordError, SkipReport
from yuyue.data.summary import format_summary, summarize
from yuyue.data.validate import validate_file

app = typer.Typer(help="Conversation data: generate, validate, import, summarise.", no_args_is_help=True)

MAX_SHOWN = 50


def print_problems(file: Path, report: SkipReport) -> None:
    for p in report.problems[:MAX_SHOWN]:
        typer.echo(p.format(file), err=True)
    if report.n_problems > MAX_SHOWN:
        typer.echo(f"... and {report.n_problems - MAX_SHOWN} more problems", err=True)


def _require_file(path: Path) -> None:
    if not path.exists():
        typer.echo(f"error: {path}: no such file", err=True)
        raise typer.Exit(2)
    if path.is_dir():
        typer.echo(f"error: {path}: is a directory, expected a JSONL file", err=True)
        raise typer.Exit(2)


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="JSONL file of conversation records")]) -> None:
    """Check every record against the contract; exit 1 and list problems if any is invalid."""
    _require_file(file)
    report = validate_file(file, keep=MAX_SHOWN)
    if report.n_problems:
        print_problems(file, report)
        typer.echo(f"{file}: {report.skipped} invalid of {report.read + report.skipped} records", err=True)
        raise typer.Exit(1)
    typer.echo(f"{file}: all {report.read} records valid")


@app.command()
def summary(
    file: Annotated[Path, typer.Argument(help="JSONL file of conversation records")],
    strict: Annotated[bool, typer.Option(help="fail on the first invalid record")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Counts and outcome rates by department, engine and consultant."""
    _require_file(file)
    report = SkipReport(keep=MAX_SHOWN)
    try:
        result = summarize(file, strict=strict, report=report)
    except InvalidRecordError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if report.skipped:
        typer.echo(
            f"warning: skipped {report.skipped} invalid records (use `yuyue data validate` to list them)",
            err=True,
        )
    typer.echo(
        json.dumps(result.as_dict(), ensure_ascii=False, indent=2) if as_json else format_summary(result)
    )


@app.command()
def generate(
    n: Annotated[int, typer.Option("--n", min=1, help="number of conversations")] = 1000,
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same file")] = 0,
    out: Annotated[Path, typer.Option(help="output JSONL file (.gz to compress)")] = Path(
        "var/data/synthetic.jsonl"
    ),
    workers: Annotated[int, typer.Option(min=1, help="processes to generate with")] = 1,
    variant: Annotated[
        str,
        typer.Option(help="simulated world: default, or shifted (other phrasing, rates and consultants)"),
    ] = "default",
) -> None:
    """Write N simulated conversations (with truth for evaluation) to a JSONL file."""
    from yuyue.data.simulator import generate_file
    from yuyue.data.simulator.bank import VARIANTS

    if variant not in VARIANTS:
        typer.echo(f"error: unknown --variant {variant!r}; choose one of: {', '.join(VARIANTS)}", err=True)
        raise typer.Exit(2)
    count = generate_file(out, n=n, seed=seed, workers=workers, variant=variant)
    typer.echo(f"wrote {count} conversations to {out}")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="chat-tool export (.csv or .xlsx)")],
    mapping: Annotated[Path, typer.Option(help="mapping YAML (see data/importers/mappings/)")],
    out: Annotated[Path, typer.Option(help="output JSONL file")],
    strict: Annotated[bool, typer.Option(help="fail if any row cannot be parsed")] = False,
) -> None:
    """Convert a chat-tool export to contract JSONL; report rows that could not be parsed."""
    from yuyue.data.importers import ImportError_, import_export

    _require_file(file)
    _require_file(mapping)
    try:
        result = import_export(file, mapping, out, strict=strict)
    except ImportError_ as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for column in result.missing_columns:
        typer.echo(
            f"warning: {file}: optional column {column} not in the export; that field stays empty", err=True
        )
    for row, problem in result.problems[:MAX_SHOWN]:
        typer.echo(f"{file}:row {row}: {problem}", err=True)
    if strict and result.problems:
        typer.echo(f"nothing written (--strict): {len(result.problems)} of {result.rows} rows not parsed")
        raise typer.Exit(1)
    typer.echo(
        f"imported {result.written} of {result.rows} rows to {out}; {len(result.problems)} rows not parsed"
    )
