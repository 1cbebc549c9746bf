"""``yuyue monitor`` and ``yuyue models shadow``: the model's health on live chats from the command line.

- ``yuyue monitor [--since TIME] [--until TIME] [--version V] [--by week|department|engine|consultant]
  [--json] [--fail-on-flag]``: the report of ``GET /v1/model/health`` (``serving/monitoring.py``) read
  straight from the event store (``--url``, else the ``database_url`` setting), with the registry's
  champion (``--model-dir`` for a saved bundle) as the reference of the offline metrics and of drift.
  ``--fail-on-flag`` exits 3 when the drift or accuracy flag is up (for cron).
- ``yuyue models shadow VERSION``: make VERSION the challenger (the registry alias ``challenger``); a
  server following the registry scores every message with it too, in the shadow, within
  ``model_poll_seconds``. ``--off`` removes the alias.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import typer

FLAGGED_EXIT = 3


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{name}: not an ISO 8601 time: {value!r} (e.g. 2025-03-01T00:00:00+08:00)", 2)
    if at.tzinfo is None:
        _fail(f"{name} must carry a timezone offset, e.g. {value}+08:00", 2)
    return at


def monitor_command(
    since: str = typer.Option(
        None, "--since", metavar="TIME", help="chats started at or after (ISO 8601, offset)"
    ),
    until: str = typer.Option(
        None, "--until", metavar="TIME", help="chats started before (ISO 8601, offset)"
    ),
    version: str = typer.Option(None, "--version", help="only this model version"),
    by: str = typer.Option("week", "--by", help="slices: week, hospital, department, engine or consultant"),
    as_json: bool = typer.Option(False, "--json", help="print the whole report as one JSON object"),
    url: str = typer.Option(None, "--url", help="database URL (default: the database_url setting)"),
    model_dir: Path = typer.Option(
        None, "--model-dir", help="the champion's saved bundle (default: registry)"
    ),
    no_drift: bool = typer.Option(False, "--no-drift", help="skip the drift check (it reads recent texts)"),
    fail_on_flag: bool = typer.Option(False, "--fail-on-flag", help=f"exit {FLAGGED_EXIT} when a flag is up"),
) -> None:
    """The champion's (and every served version's) accuracy on chats with known outcomes, drift, the
    challenger against the champion, suggestion acceptance: the report of GET /v1/model/health."""
    import orjson

    from yuyue.config import get_settings
    from yuyue.serving import monitoring

    if by not in monitoring.GROUPS:
        _fail(f"--by must be one of {', '.join(monitoring.GROUPS)}, not {by!r}", 2)
    start, end = _time("--since", since), _time("--until", until)
    if start and end and end <= start:
        _fail("--until must be after --since", 2)
    settings = get_settings()
    models, notes = _models(settings, model_dir)
    options = {"since": start, "until": end, "version": version, "by": by, "drift": not no_drift}
    report = _report(settings, url, models, options)
    report["notes"] = notes
    if as_json:
        typer.echo(orjson.dumps(report).decode())
    else:
        for line in summary_lines(report):
            typer.echo(line)
    if fail_on_flag and (report["flags"]["drift"] or report["flags"]["accuracy"]):
        raise typer.Exit(FLAGGED_EXIT)


def _report(settings: Any, url: str | None, models: list[Any], options: dict[str, Any]) -> dict[str, Any]:
    """:func:`~yuyue.serving.monitoring.health_report` on the database at ``url`` (errors end the command)."""
    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.serving import monitoring
    from yuyue.serving.db import SchemaError, make_engine, prepare_schema

    try:
        engine = make_engine(url or settings.resolved_database_url)
    except (ValueError, OSError, SQLAlchemyError) as exc:
        _fail(f"cannot open the database: {exc}")
    try:
        prepare_schema(engine)
        return monitoring.health_report(
            engine,
            settings,
            models,
            offline_lookup=monitoring.registry_offline(settings),
            rescore_budget_s=None,  # a batch command: every ended chat rescored
            **options,
        )
    except SchemaError as exc:
        _fail(str(exc))
    except SQLAlchemyError as exc:
        _fail(f"database error: {str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}")
    finally:
        engine.dispose()


def _models(settings: Any, model_dir: Path | None) -> tuple[list[Any], list[str]]:
    """The champion (from ``model_dir`` or the registry) and the registry's challenger, as far as found."""
    from yuyue.models.bundle import YuyueModel
    from yuyue.serving.monitoring import Served, offline_metrics, registry_offline
    from yuyue.serving.shadow import CHALLENGER

    notes: list[str] = []
    models: list[Any] = []
    try:
        if model_dir is not None:
            model, version = YuyueModel.load(model_dir), f"dir:{model_dir.name}"
        else:
            from yuyue.training import registry

            model, version = registry.load(registry.CHAMPION, settings)
        models.append(Served(version, "champion", model, offline_metrics(model.info.get("metrics"))))
    except Exception as exc:
        notes.append(f"no champion loaded ({exc}): no offline metrics or drift reference for it")
    if model_dir is None:
        try:
            from yuyue.training import registry

            challenger = registry.alias_version(CHALLENGER, settings)
        except Exception:
            challenger = None
        if challenger is not None and challenger not in {m.version for m in models}:
            offline = registry_offline(settings)([challenger]).get(challenger, {})
            models.append(Served(challenger, "challenger", None, offline))
    return models, notes


def _f(x: float | None, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report in a few lines per part."""
    lines = [f"champion {report['champion'] or 'none'}, challenger {report['challenger'] or 'none'}"]
    for s in report["versions"]:
        basis = "the ended chat's score" if s.get("basis") == "closed" else "the last message's score"
        pending = f", {s['rescore_pending']} chats not rescored yet" if s.get("rescore_pending") else ""
        lines.append(
            f"version {s['version']} ({s['role']}): {s['chats']} chats scored last, judged by {basis}{pending}"
        )
        for t in ("booked", "arrived"):
            live, off = s["live"][t], (s["offline"] or {}).get(t) or {}
            lines.append(
                f"  {t}: n {live['n']}, AUC {_f(live['auc'])} (offline {_f(off.get('auc'))}), "
                f"ECE {_f(live['ece'])} (offline {_f(off.get('ece'))}), Brier {_f(live['brier'])}, "
                f"lift@10% {_f(live['lift_at_10pct'], 2)}"
            )
    o = report["outcomes"]
    lines.append(
        f"outcomes: {o['booked_known']}/{o['chats']} chats with a known booking ({_f(o['booked_coverage'])}), "
        f"arrival known for {o['arrived_known']}/{o['bookings']} bookings; booking known after "
        f"{_f(o['booked_delay_hours']['median'], 1)} h (median), {_f(o['booked_delay_hours']['p90'], 1)} h (p90)"
    )
    for c in report["shadow"]:
        b = c["booked"]
        lines.append(
            f"shadow: challenger {c['challenger']} vs champion {c['champion']} on {c['chats']} chats: booked AUC "
            f"{_f(b['challenger']['auc'])} vs {_f(b['champion']['auc'])}, Brier {_f(b['challenger']['brier'])} "
            f"vs {_f(b['champion']['brier'])}"
        )
    d = report["drift"]
    lines.append(f"drift: {d['status']} ({d['detail']})")
    for f in d["features"]:
        if f["level"] != "ok":
            lines.append(f"  {f['feature']}: PSI {f['psi']:.3f} ({f['level']})")
    a = report["suggestions"]["overall"]
    lines.append(
        f"suggestions: {a['shown']} shown, {a['with_feedback']} with feedback, acceptance {_f(a['acceptance_rate'])}"
    )
    flags = report["flags"]
    lines.append(
        "flags: "
        + (", ".join(flags["reasons"]) if flags["reasons"] else "none")
        + ("" if not flags["drift_warn"] else " (drift warning)")
    )
    lines += [f"note: {n}" for n in report.get("notes", [])]
    return lines


def shadow_command(
    version: str = typer.Argument(None, help="the registered version to score in the shadow"),
    off: bool = typer.Option(False, "--off", help="remove the challenger"),
) -> None:
    """Make VERSION the challenger: the server scores every message with it too (stored, never shown)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from yuyue.config import get_settings
    from yuyue.serving.shadow import CHALLENGER
    from yuyue.training import registry

    settings = get_settings()
    if off:
        if version is not None:
            _fail("give either VERSION or --off", 2)
        uri = registry.configure(settings)
        current = registry.alias_version(CHALLENGER, settings)
        if current is None:
            typer.echo("no challenger was set")
            return
        try:
            MlflowClient(uri).delete_registered_model_alias(settings.model_name, CHALLENGER)
        except MlflowException as exc:
            _fail(f"could not remove the challenger: {exc.message}")
        typer.echo(
            f"challenger {current} removed; servers stop scoring with it within {settings.model_poll_seconds:g} s"
        )
        return
    if version is None:
        _fail("give the VERSION to score in the shadow, or --off", 2)
    if version == registry.alias_version(registry.CHAMPION, settings):
        _fail(f"version {version} is the champion: a challenger must be another version")
    try:
        registry.promote(version, settings, alias=CHALLENGER)
    except registry.RegistryError as exc:
        _fail(str(exc))
    typer.echo(
        f"version {version} is the challenger: servers score every message with it too (stored, never shown) "
        f"within {settings.model_poll_seconds:g} s; compare with `yuyue monitor`"
    )
