"""``yuyue train``, ``yuyue evaluate`` and ``yuyue models``: thin wrappers over training functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from yuyue.config import get_settings

models_app = typer.Typer(
    help="The model registry: list versions, promote one to champion.", no_args_is_help=True
)


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _check_file(path: Path) -> None:
    if not path.exists():
        _fail(f"{path}: no such file", 2)
    if path.is_dir():
        _fail(f"{path}: is a directory, expected a JSONL file", 2)


def train_command(
    data: Annotated[Path, typer.Option("--data", help="JSONL conversations (contract format)")],
    experiment: Annotated[str, typer.Option(help="MLflow experiment name")] = "yuyue",
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: local store under var/)")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="fail on the first invalid record instead of skipping it")
    ] = False,
    register: Annotated[bool, typer.Option(help="register a new model version")] = True,
    promote_if_first: Annotated[
        bool, typer.Option(help="make it champion when no champion exists yet")
    ] = True,
    workers: Annotated[int, typer.Option(min=1, help="processes for feature extraction")] = 2,
) -> None:
    """Train every model the data supports, evaluate on the latest chats, log to MLflow and register."""
    from yuyue.data.io import InvalidRecordError
    from yuyue.training.scorers import UnusableDataError
    from yuyue.training.workflow import train_and_register

    _check_file(data)
    try:
        train_and_register(
            data,
            get_settings(),
            experiment=experiment,
            tracking_uri=tracking_uri,
            strict=strict,
            register=register,
            promote_if_first=promote_if_first,
            workers=workers,
            echo=typer.echo,
        )
    except (UnusableDataError, InvalidRecordError) as exc:
        _fail(str(exc))


CHAMPION = "champion"


def evaluate_command(
    data: Annotated[Path, typer.Option("--data", help="JSONL conversations to evaluate on")],
    model: Annotated[str, typer.Option("--model", help="'champion' or a version number")] = CHAMPION,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    report: Annotated[
        Path | None, typer.Option(help="write an HTML report comparing with the champion")
    ] = None,
) -> None:
    """Evaluate a registered model on a dataset (metrics absent when the data cannot support them)."""
    from yuyue.training import registry
    from yuyue.training.evaluate import evaluate, public

    _check_file(data)
    settings = get_settings()
    try:
        bundle, version = registry.load(model, settings, tracking_uri)
    except registry.RegistryError as exc:
        _fail(f"{exc}. Train one with `yuyue train --data FILE`.")
    metrics = evaluate(bundle, data)
    result = {"model_version": version, **public(metrics)}
    if report is not None:
        from yuyue.training.report import write_report

        others = {}
        if model != CHAMPION:
            try:
                champ, champ_version = registry.load(CHAMPION, settings, tracking_uri)
                others[f"champion (v{champ_version})"] = evaluate(champ, data)
            except registry.RegistryError:
                pass
        write_report(report, {f"v{version}": metrics, **others}, data)
        typer.echo(f"report written to {report}", err=True)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        for k, v in result.items():
            typer.echo(f"{k:32} {v}")


@models_app.command("list")
def list_command(
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Registered versions with their aliases and headline metrics."""
    from yuyue.training import registry

    versions = registry.list_versions(get_settings(), tracking_uri)
    if as_json:
        typer.echo(json.dumps(versions, ensure_ascii=False))
        return
    if not versions:
        typer.echo("no registered versions; train one with `yuyue train --data FILE`")
        return
    typer.echo(
        f"{'version':>7}  {'aliases':<12}{'booked.auc':>11}{'booked.ece':>11}{'arrived.auc':>12}{'reply.r10@1':>12}"
    )
    for v in versions:

        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.4f}"

        typer.echo(
            f"{v['version']:>7}  {','.join(v['aliases']):<12}{f(v['booked.auc']):>11}{f(v['booked.ece']):>11}"
            f"{f(v['arrived.auc']):>12}{f(v['reply.r10_at_1']):>12}"
        )


@models_app.command("promote")
def promote_command(
    version: Annotated[str, typer.Argument(help="version number to make champion")],
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
) -> None:
    """Point the ``champion`` alias at VERSION (serving loads the champion)."""
    from yuyue.training import registry

    try:
        registry.promote(version, get_settings(), tracking_uri)
    except registry.RegistryError as exc:
        _fail(str(exc))
    typer.echo(f"version {version} is now champion")
