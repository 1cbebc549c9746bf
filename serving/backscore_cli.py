"""``yuyue score --from-store``: re-score the stored chats the desk still acts on with the current model.

    yuyue score --from-store [--url DATABASE_URL] [--model-version V] [--hospital H] [--since DATE]
                             [--ray] [--ray-address A] [--workers N] [--chunk N] [--dry-run] [--json]

Run it after promoting a new champion (``yuyue models promote``), so the follow-up queue and the desk's
tasks rank open chats, leads and bookings by the new model (``serving/backscore.py`` says which chats,
which score, and how a live message during the run wins). ``--model-version``: a registered version
number or an alias (default: the champion). ``--ray`` runs the chunks as Ray tasks on a local Ray with
``--workers`` CPUs, or on the cluster at ``--ray-address`` (which implies ``--ray``) or ``RAY_ADDRESS``.
``--dry-run`` scores and counts without writing. Without ``--model-version``, the chats of a hospital
served by its own model (a ``hospital-*`` alias, ``yuyue train --per-hospital``) are re-scored by that
model, as the server scores them; one line (or JSON object) per model. Only the models that score are
loaded: ``--hospital H`` of a hospital with its own model loads that model alone (no champion needed).

The database is ``--url``, else ``get_settings().resolved_database_url``; it must hold a Yuyue store at
this version's schema (``yuyue store upgrade``); nothing is created.
"""

from __future__ import annotations

from datetime import datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from yuyue.cli.common import fail, one_line

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from yuyue.config import Settings
    from yuyue.models.bundle import YuyueModel
    from yuyue.serving.backscore import BackscoreResult, Run
    from yuyue.serving.store import Filters

URL_HELP = "database URL (default: the database_url setting, else sqlite:///<var_dir>/yuyue.db)"


def _since(text: str | None) -> datetime | None:
    """A date (the desk's local midnight) or an ISO 8601 time with its offset."""
    from yuyue.serving.monitoring import LOCAL_TZ

    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        fail(
            f"--since: not a date or an ISO 8601 time: {text!r} (e.g. 2025-03-01 or 2025-03-01T08:00:00+08:00)"
        )
    if len(text.strip()) == 10:  # a date: from the desk's midnight
        return datetime.combine(at.date(), time(0), tzinfo=LOCAL_TZ)
    if at.tzinfo is None:
        fail(f"--since must carry a timezone offset, e.g. {text}+08:00 (or give a date)")
    return at


def _open_store(url: str) -> Engine:
    """An engine on an existing Yuyue store at this code's schema; any problem ends the command."""
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.serving.db import SchemaError, current_revision, make_engine, normalize_url, prepare_schema

    try:
        parsed = normalize_url(url)
    except ValueError as exc:
        fail(f"cannot open the database: {exc}")
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path in ("", ":memory:") or "mode=memory" in path:
            fail(f"{shown}: an in-memory database holds no stored chats; give the store's file")
        if not Path(path).is_file():
            fail(f"no database file {path} (--url {shown}): give the server's database")
    try:
        engine = make_engine(parsed, statement_timeout_ms=0)
    except (ValueError, OSError, SQLAlchemyError) as exc:
        fail(f"cannot open the database {shown}: {one_line(exc)}")
    try:
        if current_revision(engine) is None and "conversations" not in sa.inspect(engine).get_table_names():
            fail(f"{shown} holds no Yuyue store (no conversations table)")
        prepare_schema(engine)
    except SchemaError as exc:
        engine.dispose()
        fail(str(exc))
    except SQLAlchemyError as exc:
        engine.dispose()
        fail(f"cannot reach the database {shown}: {one_line(exc)}")
    except BaseException:
        engine.dispose()
        raise
    return engine


def _model(settings: Settings, ref: str | None) -> tuple[YuyueModel, str]:
    """The registered model ``ref`` (a version number or an alias; None: the champion)."""
    from yuyue.training import registry

    if ref is None or not ref.strip().isdigit():
        alias = (ref or registry.CHAMPION).strip()
        version = registry.alias_version(alias, settings)
        if version is None:
            what = (
                "no champion registered"
                if alias == registry.CHAMPION
                else f"no version has the alias {alias!r}"
            )
            fail(
                f"{what} in the registry {settings.resolved_tracking_uri} (model {settings.model_name!r}): "
                "train and promote one (`yuyue train`, `yuyue models promote V`) or give --model-version"
            )
    else:
        version = ref.strip()
        known = [v["version"] for v in registry.list_versions(settings)]
        if version not in known:
            fail(
                f"model {settings.model_name!r} has no version {version!r} "
                f"(registered: {', '.join(known) or 'none'})"
            )
    try:
        return registry.load(version, settings)
    except registry.RegistryError as exc:
        fail(one_line(exc))


def score_command(
    from_store: bool = typer.Option(
        False, "--from-store", help="re-score the stored open chats, leads and chats with open tasks"
    ),
    url: str = typer.Option(None, "--url", help=URL_HELP),
    model_version: str = typer.Option(
        None, "--model-version", metavar="V", help="a registered version number or alias (default: champion)"
    ),
    hospital: str = typer.Option(None, "--hospital", help="only this hospital's chats"),
    since: str = typer.Option(
        None, "--since", metavar="DATE", help="only chats started on or after (a date, or a time with offset)"
    ),
    use_ray: bool = typer.Option(
        False, "--ray", help="score the chunks as Ray tasks (a local Ray by default)"
    ),
    ray_address: str = typer.Option(
        None,
        "--ray-address",
        metavar="A",
        help="the Ray cluster to join (implies --ray; default: RAY_ADDRESS)",
    ),
    workers: int = typer.Option(None, "--workers", min=1, help="the local Ray's CPUs (default: all)"),
    chunk: int = typer.Option(200, "--chunk", min=1, max=10_000, help="chats per chunk (one Ray task each)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="score and count, write nothing"),
    as_json: bool = typer.Option(False, "--json", help="print the counts as one JSON object"),
) -> None:
    """Re-score stored chats with the current champion (after a promotion), so the follow-up queue and the
    desk's tasks rank them by it; a live message during the run wins."""
    import orjson

    from yuyue.config import get_settings
    from yuyue.serving.store import Filters

    if not from_store:
        fail("nothing to score: give --from-store (re-score the stored chats with the current model)", 2)
    filters = Filters(hospital=hospital, since=_since(since))
    settings = get_settings()
    engine = _open_store(url or settings.resolved_database_url)
    results = _run(
        engine,
        settings,
        model_version,
        filters,
        ray=use_ray,
        ray_address=ray_address,
        workers=workers,
        chunk=chunk,
        dry_run=dry_run,
    )
    for result in results:  # one line per model: the champion's, then each hospital's own
        typer.echo(orjson.dumps(result.as_dict()).decode() if as_json else _summary(result))


def _own_models(settings: Settings, kind: str, code: str | None) -> dict[str, tuple[YuyueModel, str]]:
    """The hospitals (``kind="hospital"``) or departments served by their own model (the ``hospital-*`` /
    ``department-*`` aliases): code -> (model, version); with ``code`` (``--hospital``, or the filters'
    department), that one's alone (no other model is loaded)."""
    from yuyue.training import registry

    versions = registry.segment_versions(kind, settings)
    try:
        return {h: registry.load(v, settings) for h, v in versions.items() if code in (None, h)}
    except registry.RegistryError as exc:
        fail(f"a {kind}'s own model: {one_line(exc)}")


def _plan(settings: Settings, model_version: str | None, filters: Filters) -> list[Run]:
    """The runs, loading only the models that score: ``--model-version`` alone when given; else the
    hospitals' own models within ``filters`` and the champion unless only such a hospital's chats are
    selected (``--hospital`` with its own model)."""
    from yuyue.serving.backscore import champion_needed, runs

    if model_version is not None:
        return runs(_model(settings, model_version), {}, filters)
    hospitals = _own_models(settings, "hospital", filters.hospital)
    own_hospital = filters.hospital is not None and filters.hospital in hospitals
    departments = {} if own_hospital else _own_models(settings, "department", filters.department)
    champion = _model(settings, None) if champion_needed(hospitals, filters, departments) else None
    return runs(champion, hospitals, filters, departments)


def _run(
    engine: Engine,
    settings: Settings,
    model_version: str | None,
    filters: Filters,
    ray: bool = False,
    ray_address: str | None = None,
    workers: int | None = None,
    **options: Any,
) -> list[BackscoreResult]:
    """Load the model(s) and back-score (``options``: :func:`serving.backscore.backscore`'s); the engine
    is disposed after. Without ``model_version`` each chat gets the model the server would score it by:
    its hospital's own (a ``hospital-*`` alias), else its department's own (``department-*``), else the
    champion (:func:`serving.backscore.runs`)."""
    from contextlib import nullcontext

    from sqlalchemy.exc import SQLAlchemyError

    from yuyue.serving.backscore import backscore
    from yuyue.training.distributed import ray_session

    ray = ray or ray_address is not None
    try:
        plan = _plan(settings, model_version, filters)
        with ray_session(ray_address, num_cpus=workers) if ray else nullcontext():  # one Ray for every run
            return [
                backscore(
                    engine,
                    run.model,
                    run.version,
                    filters=run.filters,
                    exclude_hospitals=run.exclude_hospitals,
                    exclude_departments=run.exclude_departments,
                    ray=ray,
                    ray_address=ray_address,
                    workers=workers,
                    **options,
                )
                for run in plan
            ]
    except SQLAlchemyError as exc:
        fail(f"database error: {one_line(exc)}")
    except ConnectionError as exc:  # ray.init: no cluster at the address
        fail(f"cannot reach the Ray cluster: {one_line(exc)}")
    finally:
        engine.dispose()


def _summary(result: BackscoreResult) -> str:
    """The run's counts in one line."""
    rate = (
        f", {result.rescored / result.seconds:.0f} chats/s" if result.seconds > 0 and result.rescored else ""
    )
    verb = "would re-score" if result.dry_run else "re-scored"
    return (
        f"version {result.version}: {result.selected} chats selected, {verb} {result.rescored} "
        f"({result.moved} with other scores), {result.skipped} skipped (changed meanwhile), "
        f"{result.current} already scored by it, {result.erased} masked left alone; "
        f"{result.seconds:.1f} s{rate}{' on Ray' if result.ray else ''}"
    )
