"""Entry point of the ``yuyue`` command; each package contributes a sub-app."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from yuyue.data.cli import app as data_app
from yuyue.features.cli import pii_app
from yuyue.models.replies.cli import compliance_app
from yuyue.models.replies.pool_cli import replies_app
from yuyue.serving.backscore_cli import score_command
from yuyue.serving.keys_cli import keys_app
from yuyue.serving.knowledge_cli import ensure_example_knowledge, knowledge_app
from yuyue.serving.monitor_cli import monitor_command, shadow_command
from yuyue.serving.store_cli import store_app
from yuyue.serving.tasks_cli import tasks_app
from yuyue.training.cli import evaluate_command, models_app, retrain_command, train_command
from yuyue.training.ranker_upgrade import upgrade_command

app = typer.Typer(
    name="yuyue",
    help="Yuyue (预约): booking scores, stages and reply suggestions for consultation desks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(replies_app, name="replies", help="Review the reply pool: list, allow, block.")
models_app.command("upgrade-ranker")(upgrade_command)
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
app.command("retrain")(retrain_command)
app.add_typer(compliance_app, name="compliance")
app.add_typer(keys_app, name="keys")
app.add_typer(knowledge_app, name="knowledge")
app.add_typer(store_app, name="store")
app.add_typer(tasks_app, name="tasks")
app.add_typer(pii_app, name="pii")
app.command("monitor")(monitor_command)
app.command("score")(score_command)
models_app.command("shadow")(shadow_command)


@app.command()
def start(
    n: int = typer.Option(20000, "--n", min=1, help="conversations to generate when no dataset exists yet"),
    seed: int = typer.Option(7, help="simulator seed"),
) -> None:
    """Make sure a dataset and a champion model exist, then replay one chat through it (no server)."""
    from yuyue.config import get_settings
    from yuyue.training.demo import replay_chat

    settings = get_settings()
    _ensure_champion(settings, n, seed)
    typer.echo("\nreplaying a held-out simulated chat through the champion, message by message:")
    replay_chat(settings, echo=typer.echo)


@app.command()
def serve(
    host: str = typer.Option(None, help="listen address (default: the host setting, 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default: the port setting, 8000)"),
    n: int = typer.Option(20000, "--n", min=1, help="conversations to generate when no model is registered"),
    seed: int = typer.Option(7, help="simulator seed for that dataset"),
    model_dir: Path = typer.Option(None, help="serve this saved bundle instead of the registry's champion"),
    log_json: bool = typer.Option(None, "--log-json", help="log JSON lines (default: the log_json setting)"),
    workers: int = typer.Option(
        1, min=1, max=64, help="server processes (more than 1 needs PostgreSQL and Redis)"
    ),
) -> None:
    """The main job: train and promote a model if none is registered, then serve the API and the console."""
    import uvicorn
    from threadpoolctl import threadpool_limits

    from yuyue.config import get_settings
    from yuyue.config.logs import configure_logging
    from yuyue.serving.app import create_app
    from yuyue.serving.db import SchemaError
    from yuyue.serving.workers import prepare_multiprocess, workers_problem

    # requests run in a thread pool; nested OpenMP/BLAS threads would only spin against each other
    threadpool_limits(limits=1)
    from yuyue.serving.keys_cli import ensure_demo_keys

    settings = get_settings()
    if log_json is not None:
        settings = settings.model_copy(update={"log_json": log_json})
        os.environ["YUYUE_LOG_JSON"] = "true" if log_json else "false"  # for the worker processes
    configure_logging(settings.log_level, settings.log_json)
    if problem := workers_problem(settings, workers):
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    model = None
    if model_dir is not None:
        from yuyue.models.bundle import YuyueModel

        try:
            model = YuyueModel.load(model_dir)
        except (FileNotFoundError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        settings = settings.model_copy(update={"model_poll_seconds": 0})
    else:
        _ensure_champion(settings, n, seed)
        _upgrade_ranker_in_background(settings)
    try:
        for line in [*ensure_demo_keys(settings), *ensure_example_knowledge(settings)]:
            typer.echo(line)
    except SchemaError as exc:  # a database behind the code: `yuyue store upgrade` first
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    host, port = host or settings.host, port or settings.port
    typer.echo(f"serving on http://{host}:{port}/ (console) and http://{host}:{port}/docs (API)")
    if workers > 1:
        typer.echo(f"{workers} worker processes; sessions in Redis, chats in PostgreSQL")
        prepare_multiprocess(settings, model_dir)
        uvicorn.run(
            "yuyue.serving.workers:app_from_env",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
        )
        return
    app_ = create_app(settings, model, f"dir:{model_dir.name}" if model_dir else None)
    uvicorn.run(app_, host=host, port=port, log_config=None, access_log=False)


def _ensure_champion(settings, n: int, seed: int) -> None:
    from yuyue.training.workflow import DatasetError, ensure_champion

    try:
        ensure_champion(settings, n=n, seed=seed, echo=typer.echo)
    except DatasetError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _upgrade_ranker_in_background(settings) -> None:
    """With ``neural_ranker = "auto"``: a champion without the hybrid reply ranker gets one fitted by a
    child process; the server serves the lexical suggester meanwhile and switches when it is promoted."""
    from yuyue.training import registry
    from yuyue.training.ranker_upgrade import needs_upgrade, start_background, upgrades_wanted

    if not upgrades_wanted(settings):
        return  # before loading the bundle: nothing to do
    try:
        model, version = registry.load(registry.CHAMPION, settings)
        if not needs_upgrade(settings, version, model):
            return
    except registry.RegistryError:
        return
    log_path = settings.var_dir / "logs" / "ranker-upgrade.log"
    start_background(settings, version, log_path)
    typer.echo(
        f"fitting the hybrid reply ranker for version {version} in the background (log: {log_path}); "
        "suggestions come from the lexical ranker until it is promoted"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
