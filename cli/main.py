"""Entry point of the ``yuyue`` command; each package contributes a sub-app."""

from __future__ import annotations

import typer

from data.cli import app as data_app
from models.replies.cli import compliance_app
from models.replies.pool_cli import replies_app
from training.cli import evaluate_command, models_app, train_command

app = typer.Typer(
    name="yuyue",
    help="Yuyue (预约): booking scores, stages and reply suggestions for consultation desks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(replies_app, name="replies", help="Review the reply pool: list, allow, block.")
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
app.add_typer(compliance_app, name="compliance")


@app.command()
def start(
    n: int = typer.Option(20000, "--n", min=1, help="conversations to generate when no dataset exists yet"),
    seed: int = typer.Option(7, help="simulator seed"),
) -> None:
    """The main job: make sure a dataset and a champion model exist, then show the model at work."""
    from config import get_settings
    from data.simulator import generate_file
    from data.summary import format_summary, summarize
    from data.validate import validate_file
    from training.demo import replay_chat
    from training.workflow import has_champion, train_and_register

    settings = get_settings()
    path = settings.data_dir / "synthetic.jsonl"
    if not path.exists():
        typer.echo(f"no dataset at {path}: generating {n} simulated conversations (seed {seed}) ...")
        generate_file(path, n=n, seed=seed, workers=2)
    report = validate_file(path)
    typer.echo(f"{path}: {report.read} valid records, {report.skipped} invalid")
    if report.n_problems:
        for p in report.problems[:10]:
            typer.echo(p.format(path), err=True)
        raise typer.Exit(1)
    typer.echo(format_summary(summarize(path)))
    if not has_champion(settings):
        typer.echo("\nno champion model registered: training one on this dataset ...")
        train_and_register(path, settings, echo=typer.echo)
    typer.echo("\nreplaying a held-out simulated chat through the champion, message by message:")
    replay_chat(settings, echo=typer.echo)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
