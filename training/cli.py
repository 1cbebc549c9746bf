"""``yuyue train``, ``yuyue evaluate`` and ``yuyue models``: thin wrappers over training functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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
    data: Annotated[Path | None, typer.Option("--data", help="JSONL conversations (contract format)")] = None,
    from_store: Annotated[
        bool,
        typer.Option(
            "--from-store", help="train on the event store's chats and outcomes (what GET /v1/export gives)"
        ),
    ] = False,
    since: Annotated[
        str | None, typer.Option(help="with --from-store: chats started on or after this date / ISO time")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="with --from-store: database URL (default: database_url)")
    ] = None,
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
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="read and featurise as Ray tasks (local Ray with --workers CPUs unless --ray-address "
            "or RAY_ADDRESS names a cluster); --data may then be a folder of .jsonl/.jsonl.gz/.parquet shards; "
            "with --from-store, one task per range of start times (about 10,000 chats) reads the store itself",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", metavar="ADDRESS", help="the Ray cluster to use (implies --ray)"),
    ] = None,
    per_hospital: Annotated[
        bool,
        typer.Option(
            "--per-hospital",
            help="also train each hospital with --min-chats labelled chats on its own chats; keep (alias "
            "hospital-<code>) only the ones that beat the global model on their held-out chats",
        ),
    ] = False,
    per_department: Annotated[
        bool,
        typer.Option(
            "--per-department",
            help="also train each department (across hospitals) with --min-chats labelled chats on its own "
            "chats; keep (alias department-<code>) only the ones that beat the global model on their held-out "
            "chats; a hospital's own model comes first when it has one",
        ),
    ] = False,
    min_chats: Annotated[
        int,
        typer.Option(
            "--min-chats", min=1, help="with --per-hospital / --per-department: labelled chats each one needs"
        ),
    ] = 2000,
    cpus_per_task: Annotated[
        int,
        typer.Option(
            "--cpus-per-task",
            min=1,
            help="with --per-hospital/--per-department --ray: CPUs of each fit's task",
        ),
    ] = 1,
) -> None:
    """Train every model the data supports, evaluate on the latest chats, log to MLflow and register."""
    if (data is None) == (not from_store):
        _fail("give either --data FILE or --from-store", 2)
    if since is not None and not from_store:
        _fail("--since goes with --from-store", 2)
    ray = ray or ray_address is not None
    if data is not None and not ray:
        _check_file(data)  # --ray also takes a folder (checked by list_shards)
    _train(
        data,
        since=since,
        url=url,
        ray=ray,
        ray_address=ray_address,
        per_hospital=per_hospital,
        per_department=per_department,
        min_chats=min_chats,
        cpus_per_task=cpus_per_task,
        experiment=experiment,
        tracking_uri=tracking_uri,
        strict=strict,
        register=register,
        promote_if_first=promote_if_first,
        workers=workers,
    )


def _train(
    data: Path | None,
    *,
    since: str | None,
    url: str | None,
    ray: bool,
    ray_address: str | None,
    per_hospital: bool,
    min_chats: int,
    per_department: bool = False,
    cpus_per_task: int,
    workers: int,
    **options: Any,
) -> None:
    """``yuyue train``: the data (``data``, or the store's export), the global model (with reading and
    featurisation as Ray tasks when ``ray``), then with ``per_hospital`` the hospitals' own models and
    with ``per_department`` the departments', all inside one Ray session; ``options``: :func:`training.workflow.train_and_register`'s."""
    from contextlib import nullcontext

    from yuyue.data.io import InvalidRecordError
    from yuyue.training.distributed import RayBackend, ShardError, list_shards, ray_session, store_shards
    from yuyue.training.retrain import export_for_training, parse_since
    from yuyue.training.scorers import UnusableDataError
    from yuyue.training.workflow import train_and_register

    settings = get_settings()
    try:
        when = parse_since(since)
    except ValueError as exc:
        _fail(str(exc), 2)
    try:
        tags = None
        backend = None
        if data is None and ray:  # --from-store --ray: tasks read the store by ranges of start times
            backend = RayBackend(store_shards(url or settings.resolved_database_url, since=when))
            data = Path("event-store")  # a label: the backend reads the store
            tags = {"data.source": "store", "data.since": when.isoformat() if when else "all"}
            where = "the event store's chats" + (f" since {when.isoformat()}" if when else "")
            typer.echo(
                f"{where}: {len(backend.shards)} shards by start time; Ray at {ray_address or 'a local instance'}"
            )
        elif data is None:  # --from-store: one file, read by the default path
            data, tags = export_for_training(settings, since=when, url=url, echo=typer.echo)
        elif ray:
            backend = RayBackend(list_shards(data))
            typer.echo(f"{data}: {len(backend.shards)} shards; Ray at {ray_address or 'a local instance'}")
        with ray_session(ray_address, num_cpus=workers) if ray else nullcontext():
            result, version = train_and_register(
                data, settings, workers=workers, echo=typer.echo, backend=backend, tags=tags, **options
            )
            from yuyue.training.per_hospital import train_per_hospital

            for kind in [
                k for k, wanted in (("hospital", per_hospital), ("department", per_department)) if wanted
            ]:
                train_per_hospital(
                    data,
                    settings,
                    result.bundle_dir,
                    version,
                    min_chats=min_chats,
                    ray=ray,
                    cpus_per_task=cpus_per_task,
                    experiment=options["experiment"],
                    tracking_uri=options["tracking_uri"],
                    register=options["register"],
                    echo=typer.echo,
                    read=None if backend is None else backend.read,
                    kind=kind,
                )
        if backend is not None:
            typer.echo(f"Ray: {len(set(backend.nodes))} node(s) ran {len(backend.nodes)} shard tasks")
    except ConnectionError as exc:
        _fail(f"Ray at {ray_address}: {exc}", 2)
    except ShardError as exc:
        _fail(str(exc), 2)
    except (UnusableDataError, InvalidRecordError) as exc:
        _fail(str(exc))
    except ValueError as exc:  # --cpus-per-task beyond the cluster (training/per_hospital.py)
        _fail(str(exc), 2)


CHAMPION = "champion"


def evaluate_command(
    data: Annotated[Path, typer.Option("--data", help="JSONL conversations to evaluate on")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="'champion' or a version number (default: champion; with --compare, the newest global version)",
        ),
    ] = None,
    compare_with: Annotated[
        str | None,
        typer.Option(
            "--compare",
            help="also evaluate this version ('champion' or a number) and print the deltas with 95 % bootstrap CIs",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    report: Annotated[
        Path | None, typer.Option(help="write an HTML report comparing with the champion")
    ] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", min=0, help="bootstrap draws of chats")] = 300,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
) -> None:
    """Evaluate a registered model on a dataset (metrics absent when the data cannot support them)."""
    from yuyue.training import registry
    from yuyue.training.compare import compare
    from yuyue.training.evaluate import evaluate, public

    _check_file(data)
    settings = get_settings()
    if model is None:
        model = CHAMPION
        if compare_with is not None:
            # the newest global version (a hospital's own model is judged by `train --per-hospital`)
            versions = [
                v
                for v in registry.list_versions(settings, tracking_uri)
                if not v.get("hospital") and not v.get("department")
            ]
            model = versions[0]["version"] if versions else CHAMPION
    try:
        bundle, version = registry.load(model, settings, tracking_uri)
    except registry.RegistryError as exc:
        _fail(f"{exc}. Train one with `yuyue train --data FILE`.")
    other_ref = compare_with
    if other_ref is None and report is not None and model != CHAMPION:
        other_ref = CHAMPION  # the report compares with the champion when there is one
    other = None
    if other_ref is not None:
        try:
            other = registry.load(other_ref, settings, tracking_uri)
        except registry.RegistryError as exc:
            if compare_with is not None:
                _fail(str(exc))
    if other is not None and other[1] == version:
        if compare_with is not None:
            _fail(f"--model and --compare are both version {version}: nothing to compare", 2)
        other = None
    metrics = evaluate(bundle, data)
    result: dict = {"model_version": version, **public(metrics)}
    runs = {f"v{version}": metrics}
    comparison = None
    if other is not None:
        label = f"champion (v{other[1]})" if other_ref == CHAMPION else f"v{other[1]}"
        runs[label] = evaluate(other[0], data)
        comparison = compare(metrics, runs[label], n_boot=n_boot, seed=seed, labels=(f"v{version}", label))
        if compare_with is not None:
            result["compare"] = {
                "candidate": version,
                "champion": other[1],
                **{k: v for k, v in comparison.items() if k != "labels"},
            }
    if report is not None:
        from yuyue.training.report import write_report

        write_report(report, runs, data, comparison)
        typer.echo(f"report written to {report}", err=True)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    cmp = result.pop("compare", None)
    for k, v in result.items():
        typer.echo(f"{k:32} {v}")
    if cmp is not None:
        typer.echo(
            f"\nv{version} − v{cmp['champion']} on the same {cmp['n_chats']} chats (95 % bootstrap CI over chats):"
        )
        for k, v in cmp["metrics"].items():
            ci = "" if v["ci95"] is None else f"  [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]"
            d = "–" if v["delta"] is None else f"{v['delta']:+.4f}"
            typer.echo(f"{k:32} {d}{ci}{'  ' + v['clearly'] if v['clearly'] else ''}")
        typer.echo(cmp["verdict_line"])


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
    width = max(12, *(len(",".join(v["aliases"])) + 2 for v in versions))
    typer.echo(
        f"{'version':>7}  {'aliases':<{width}}{'booked.auc':>11}{'booked.ece':>11}{'arrived.auc':>12}"
        f"{'reply.r10@1':>12}  serves"
    )
    for v in versions:

        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.4f}"

        # a per-hospital version (training/per_hospital.py) serves its hospital while its alias points at it
        serves = (
            "every chat without its own hospital's or department's model"
            if "champion" in v["aliases"]
            else ""
        )
        for kind in ("hospital", "department"):
            if v.get(kind):
                serves = f"{kind} {v[kind]}" if v["aliases"] else f"({kind} {v[kind]}, not serving)"
        typer.echo(
            f"{v['version']:>7}  {','.join(v['aliases']):<{width}}{f(v['booked.auc']):>11}"
            f"{f(v['booked.ece']):>11}{f(v['arrived.auc']):>12}{f(v['reply.r10_at_1']):>12}  {serves}".rstrip()
        )


@models_app.command("promote")
def promote_command(
    version: Annotated[str, typer.Argument(help="version number to make champion")],
    force: Annotated[
        bool, typer.Option("--force", help="promote even when the gate refuses (recorded on the version)")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="why, recorded with a forced promotion")] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="compare on every chat of this file (default: the latest 10 % of the candidate's training data)",
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="write the HTML comparison report here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the decision as one JSON object")] = False,
    auc_tolerance: Annotated[float, typer.Option(min=0, help="booked AUC the candidate may lose")] = 0.01,
    ece_tolerance: Annotated[float, typer.Option(min=0, help="booked ECE the candidate may add")] = 0.02,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
) -> None:
    """Make VERSION champion if it is not worse than the champion on the same held-out chats.

    Refused (exit 3, the champion stays) when its booked AUC is lower by more than --auc-tolerance or its
    booked ECE higher by more than --ece-tolerance; --force promotes anyway and records who, when and why
    as tags of the version. With no champion yet, VERSION is promoted without comparison.
    """
    from yuyue.training import registry
    from yuyue.training.retrain import HeldOutError, promote_gated

    if data is not None:
        _check_file(data)
    if force and not reason:
        reason = "forced from the command line without --reason"
    try:
        out = promote_gated(
            version,
            get_settings(),
            tracking_uri,
            data=data,
            force=force,
            reason=reason,
            auc_tolerance=auc_tolerance,
            ece_tolerance=ece_tolerance,
            report=report,
            echo=(lambda line: typer.echo(line, err=True)) if as_json else typer.echo,
        )
    except (registry.RegistryError, HeldOutError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False, default=str))
    else:
        typer.echo(out["message"])
        if report is not None:
            typer.echo(f"report written to {report}")
        for kind in ("hospital", "department"):  # promotion moves `champion` only: who keeps their own model
            own = registry.segment_versions(kind, get_settings(), tracking_uri)
            if own:
                typer.echo(
                    f"{kind}s served by their own model (unchanged): "
                    + ", ".join(f"{h} (version {v})" for h, v in sorted(own.items()))
                )
    if out["decision"] == "refused":
        raise typer.Exit(3)


def retrain_command(
    since: Annotated[
        str | None,
        typer.Option(help="train on chats started on or after this date / ISO time (default: all)"),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json-out", help="write the JSON verdict here")] = None,
    report: Annotated[Path | None, typer.Option(help="write the HTML comparison report here")] = None,
    url: Annotated[str | None, typer.Option("--url", help="database URL (default: database_url)")] = None,
    holdout_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=3650,
            help="hold out the chats of the export's last N days (default: latest 20 %, 200+)",
        ),
    ] = None,
    auc_tolerance: Annotated[float, typer.Option(min=0, help="booked AUC the candidate may lose")] = 0.01,
    ece_tolerance: Annotated[float, typer.Option(min=0, help="booked ECE the candidate may add")] = 0.02,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name")] = "yuyue",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    workers: Annotated[int, typer.Option(min=1, help="processes for feature extraction")] = 2,
) -> None:
    """Train from the store, compare with the champion on the latest chats, promote only through the gate.

    Exit 0 whether the candidate was promoted or refused (the message and --json-out say which); 1 when
    nothing could be trained (too few chats or outcomes in the store); 4 when the held-out chats were too
    few for the gate to decide (nothing promoted). A running server picks up a new champion by itself.
    """
    from yuyue.training.retrain import UNDECIDED_EXIT, parse_since, retrain
    from yuyue.training.scorers import UnusableDataError

    try:
        when = parse_since(since)
    except ValueError as exc:
        _fail(str(exc), 2)
    try:
        out = retrain(
            get_settings(),
            since=when,
            holdout_days=holdout_days,
            url=url,
            tracking_uri=tracking_uri,
            experiment=experiment,
            json_out=json_out,
            report=report,
            auc_tolerance=auc_tolerance,
            ece_tolerance=ece_tolerance,
            workers=workers,
            echo=typer.echo,
        )
    except UnusableDataError as exc:
        _fail(f"nothing trained: {exc}")
    typer.echo(out["message"])
    for where, what in ((json_out, "verdict"), (report, "report")):
        if where is not None:
            typer.echo(f"{what} written to {where}")
    if out["decision"] == "undecided":
        raise typer.Exit(UNDECIDED_EXIT)
