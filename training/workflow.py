"""Train → log → register → (promote) as one function, shared by ``yuyue train`` and ``yuyue start``."""

from __future__ import annotations

import getpass
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from yuyue.config import Settings
from yuyue.training import registry
from yuyue.training.train import TrainResult, summary_lines, train


def train_and_register(
    data: str | Path,
    settings: Settings,
    *,
    experiment: str = "yuyue",
    tracking_uri: str | None = None,
    strict: bool = False,
    register: bool = True,
    promote_if_first: bool = True,
    workers: int = 2,
    echo: Callable[[str], None] = print,
    tags: dict[str, Any] | None = None,
    backend: Any = None,
) -> tuple[TrainResult, str | None]:
    """Train on ``data``, log the run, register a version; make it champion if there is none yet.

    The run and the version are tagged with the data they saw (:func:`data_tags`, then ``tags``)."""
    result = train(data, settings=settings, strict=strict, workers=workers, echo=echo, backend=backend)
    for line in summary_lines(result):
        echo(line)
    params = {
        "data": str(data),
        "workers": workers,
        **{f"kept.{k}": v["kept"] for k, v in result.comparison.items()},
    }
    run_id, version = registry.log_and_register(
        result.model,
        result.bundle_dir,
        result.metrics,
        params=params,
        experiment=experiment,
        settings=settings,
        tracking_uri=tracking_uri,
        register=register,
        tags={
            **data_tags(data, result.model.info, digest=getattr(backend, "reads_files", True)),
            **(tags or {}),
        },
    )
    result.run_id, result.version = run_id, version
    echo(
        f"MLflow run {run_id}" + (f"; registered {settings.model_name} version {version}" if version else "")
    )
    if version and promote_if_first and not has_champion(settings, tracking_uri):
        registry.promote(version, settings, tracking_uri)
        registry.set_version_tags(version, promotion_tags("first"), settings, tracking_uri)
        echo(f"no champion yet: version {version} is now champion")
    return result, version


def data_tags(
    path: str | Path, info: dict[str, Any], source: str = "file", digest: bool = True
) -> dict[str, Any]:
    """What a version saw: source, file, chats, labelled chats, time range, SHA-256 of the file
    (``digest=False``: none, for data read from the store by ranges; ``path`` is then only a label)."""
    sha = hashlib.sha256()
    files = sorted(p for p in Path(path).iterdir() if p.is_file()) if Path(path).is_dir() else [path]
    for file in files if digest else []:
        with open(file, "rb") as f:  # a folder of shards (--ray): its files in name order
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    first, last = info.get("data_range") or (None, None)
    fit = info.get("fit_range") or (None, None)
    tags = {
        "data.source": source,
        "data.path": str(path),
        "data.n_chats": info.get("n_conversations"),
        "data.n_labelled": info.get("n_labelled"),
        "data.first_started_at": first,
        "data.last_started_at": last,
        "data.fit_until": fit[1],
    }
    if digest:
        tags["data.sha256"] = sha.hexdigest()
    return tags


def promotion_tags(how: str, reason: str | None = None) -> dict[str, str]:
    """Who promoted a version, when and how (``first`` / ``gate`` / ``forced``), and why when forced."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    tags = {
        "promotion": how,
        "promoted_by": who,
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if reason:
        tags["promotion_reason"] = reason
    return tags


def has_champion(settings: Settings, tracking_uri: str | None = None) -> bool:
    return registry.alias_version(registry.CHAMPION, settings, tracking_uri) is not None


def ensure_champion(
    settings: Settings, *, n: int = 20000, seed: int = 7, echo: Callable[[str], None] = print
) -> Path:
    """Make sure a champion exists: generate, validate and summarise a dataset, train and promote if needed.

    Returns the dataset path. Raises ``DatasetError`` when the bundled dataset does not validate.
    """
    from yuyue.data.simulator import generate_file
    from yuyue.data.summary import format_summary, summarize
    from yuyue.data.validate import validate_file

    path = settings.data_dir / "synthetic.jsonl"
    if has_champion(settings):
        return path
    if not path.exists():
        from yuyue.training.progress import progress

        echo(f"no dataset at {path}: generating {n} simulated conversations (seed {seed}) ...")
        with progress("simulated chats", n) as advance:
            generate_file(path, n=n, seed=seed, workers=2, on_progress=advance)
    report = validate_file(path)
    echo(f"{path}: {report.read} valid records, {report.skipped} invalid")
    if report.n_problems:
        raise DatasetError("\n".join(p.format(path) for p in report.problems[:10]))
    echo(format_summary(summarize(path)))
    echo("\nno champion model registered: training one on this dataset ...")
    train_and_register(path, settings, echo=echo)
    return path


class DatasetError(Exception):
    """The bundled dataset does not validate (the message lists the first problems)."""
