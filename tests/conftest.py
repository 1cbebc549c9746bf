"""Shared fixtures: a simulated dataset and a model bundle trained on it once per session, and ``pg_url``:
a throwaway PostgreSQL database created for this test session on the local server and dropped afterwards
(session scope; skips when no server answers). The server is ``YUYUE_TEST_PG_URL`` if set, else
``postgresql://postgres@127.0.0.1:5432/test`` then ``postgresql://root@127.0.0.1:5432/test``."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from yuyue.config import Settings

SHARED = Path(__file__).resolve().parents[2] / "shared"
SESSION_TAG = secrets.token_hex(4)  # this test session's PostgreSQL database and Redis key prefix
PG_CANDIDATES = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)


@pytest.fixture(scope="session")
def sim_path(tmp_path_factory) -> Path:
    from yuyue.data.simulator import generate_file

    path = tmp_path_factory.mktemp("sim") / "sim.jsonl"
    generate_file(path, n=3000, seed=101, workers=2)
    return path


@pytest.fixture(scope="session")
def test_settings(tmp_path_factory) -> Settings:
    var = tmp_path_factory.mktemp("var")
    return Settings(var_dir=var, hospital_name="杭州美悦医院", hospital_address="杭州市西湖区文三路100号")


@pytest.fixture(scope="session")
def trained(sim_path, test_settings):
    """A TrainResult from 3,000 simulated chats (scorers, stages, replies, evaluation)."""
    from yuyue.training.train import train

    return train(sim_path, settings=test_settings, workers=2, echo=lambda _: None)


@pytest.fixture(scope="session")
def model(request):
    """The trained bundle; ``YUYUE_TEST_MODEL_DIR`` points at a saved one to skip training (local iteration)."""
    path = os.environ.get("YUYUE_TEST_MODEL_DIR")
    if path:
        from yuyue.models.bundle import YuyueModel

        return YuyueModel.load(path)
    return request.getfixturevalue("trained").model


def _pg_admin() -> tuple[str | None, list[str]]:
    import psycopg

    candidates = [os.environ["YUYUE_TEST_PG_URL"]] if os.environ.get("YUYUE_TEST_PG_URL") else PG_CANDIDATES
    errors = []
    for url in candidates:
        try:
            with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return url, errors
        except psycopg.Error as exc:
            errors.append(f"{url}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")
    return None, errors


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    admin, errors = _pg_admin()
    if admin is None:
        pytest.skip("PostgreSQL not reachable (run scripts/ensure_services.sh): " + "; ".join(errors))
    dbname = f"yuyue_test_{os.getpid()}_{SESSION_TAG}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    url = make_url(admin).set(database=dbname).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
