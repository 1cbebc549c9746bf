"""Several server processes: the app factory each worker of ``yuyue serve --workers N`` calls."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fastapi import FastAPI

from yuyue.config import Settings, get_settings
from yuyue.serving.metrics import MULTIPROC_ENV

MODEL_DIR_ENV = "YUYUE_SERVE_MODEL_DIR"  # set by `yuyue serve --model-dir` for its workers


def workers_problem(settings: Settings, workers: int) -> str | None:
    """Why ``workers`` processes cannot share this set-up, or None when they can."""
    if workers <= 1:
        return None
    missing = []
    if not settings.resolved_database_url.startswith("postgresql"):
        missing.append("YUYUE_DATABASE_URL=postgresql+psycopg://…")
    if not settings.redis_url:
        missing.append("YUYUE_REDIS_URL=redis://…")
    if not missing:
        return None
    return (
        f"--workers {workers} needs the chats' sessions and rate limits shared between processes: "
        f"set {' and '.join(missing)} (or run one worker)"
    )


def prepare_multiprocess(settings: Settings, model_dir: Path | None) -> None:
    """Environment the workers inherit: an empty Prometheus folder, the bundle to serve."""
    folder = Path(settings.var_dir) / "prometheus"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(folder.resolve())
    if model_dir is not None:
        os.environ[MODEL_DIR_ENV] = str(Path(model_dir).resolve())


def app_from_env() -> FastAPI:
    """Build one worker's app from the settings and the environment ``prepare_multiprocess`` left."""
    from threadpoolctl import threadpool_limits

    from yuyue.config.logs import configure_logging
    from yuyue.serving.app import create_app

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    threadpool_limits(limits=1)
    model, version = None, None
    if model_dir := os.environ.get(MODEL_DIR_ENV):
        from yuyue.models.bundle import YuyueModel

        model, version = YuyueModel.load(model_dir), f"dir:{Path(model_dir).name}"
        settings = settings.model_copy(update={"model_poll_seconds": 0})
    return create_app(settings, model, version)
