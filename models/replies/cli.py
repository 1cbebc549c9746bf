"""``yuyue compliance``: audit texts and script libraries against the compliance rules."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from yuyue.models.replies.guard import CombinedGuard, ComplianceGuard, RulesFileError, default_classifier
from yuyue.models.replies.scripts import LibraryError, load_library

compliance_app = typer.Typer(
    help="Compliance guard: audit reply texts and script libraries (话术库).", no_args_is_help=True
)

RulesOption = Annotated[
    Path | None, typer.Option("--rules", help="compliance rules YAML (default: the shipped rules)")
]


class InputError(Exception):
    """The input cannot be read as UTF-8 text."""


def _guard(rules: Path | None) -> ComplianceGuard:
    try:
        return ComplianceGuard.from_yaml(rules) if rules is not None else ComplianceGuard.default()
    except RulesFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def read_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    """Lines of a UTF-8 byte stream without their line ends (a leading BOM is dropped)."""
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{name}: line {number} is not valid UTF-8 (byte {exc.start + 1})") from None
        yield line.rstrip("\r\n")


def audit(
    lines: Iterable[str], guard: ComplianceGuard, combined: CombinedGuard | None = None
) -> Iterator[dict[str, object]]:
    """One ``{text, allowed, rules}`` record per input line; with ``combined`` the classifier may
    block too (its hits are named ``classifier_<category>``)."""
    for text in lines:
        if combined is not None:
            verdict = combined.check(text)
            yield {"text": text, "allowed": verdict["allowed"], "rules": [h["id"] for h in verdict["rules"]]}
        else:
            rules_verdict = guard.check(text)
            yield {"text": text, "allowed": rules_verdict.allowed, "rules": rules_verdict.rules}


def _print(records: Iterable[dict[str, object]]) -> None:
    for record in records:
        typer.echo(json.dumps(record, ensure_ascii=False))


@compliance_app.command()
def check(
    file: Annotated[
        str, typer.Argument(help="UTF-8 text file, one reply per line; '-' reads standard input")
    ],
    rules: RulesOption = None,
    rules_only: Annotated[
        bool, typer.Option("--rules-only", help="skip the learned classifier; report rule hits only")
    ] = False,
) -> None:
    """Print one JSON line {"text", "allowed", "rules"} per input line.

    Rules first, then the learned classifier (its hits are named classifier_<category>).
    This is an audit: exit 0 even when texts are disallowed; exit 2 on usage errors
    (missing file, bytes that are not UTF-8, invalid rules file).
    """
    guard = _guard(rules)
    combined = None if rules_only else CombinedGuard(guard, default_classifier())
    try:
        if file == "-":
            _print(audit(read_lines(typer.get_binary_stream("stdin"), "<stdin>"), guard, combined))
            return
        path = Path(file)
        if not path.exists():
            typer.echo(f"error: {path}: no such file", err=True)
            raise typer.Exit(2)
        if path.is_dir():
            typer.echo(f"error: {path}: is a directory, expected a text file", err=True)
            raise typer.Exit(2)
        with path.open("rb") as stream:
            _print(audit(read_lines(stream, str(path)), guard, combined))
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@compliance_app.command("check-library")
def check_library(
    file: Annotated[
        Path | None, typer.Argument(help="script library YAML (default: the shipped one)")
    ] = None,
    rules: RulesOption = None,
) -> None:
    """Validate a script library and run every script through the guard; exit 1 if any fails."""
    guard = _guard(rules)
    try:
        entries = load_library(file)
    except LibraryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    failed = 0
    for entry in entries:
        verdict = guard.check(entry.text)
        if not verdict.allowed:
            failed += 1
            typer.echo(f"{entry.id}: {', '.join(verdict.rules)}: {entry.text}")
    typer.echo(f"{len(entries)} scripts, {failed} disallowed", err=True)
    if failed:
        raise typer.Exit(1)


@compliance_app.command("rules")
def list_rules(rules: RulesOption = None) -> None:
    """List the rules: id, category and legal basis."""
    for rule in _guard(rules).rules:
        typer.echo(f"{rule.id}\t{rule.category.value}\t{rule.cite}")
