"""Shared fixtures: a simulated dataset and a model bundle trained on it once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from yuyue.config import Settings

SHARED = Path(__file__).resolve().parents[2] / "shared"


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
