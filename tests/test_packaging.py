"""The wheel installs one top-level package, ``yuyue``, and works beside PyPI's ``config`` and a ``models``.

A fresh virtual environment gets PyPI's ``config`` (a real, popular package), a top-level ``models``
package, then Yuyue's wheel. Yuyue's dependencies come from the project's own environment through a
``.pth`` line placed after the fresh site-packages, so nothing heavy is installed twice and the fresh
site-packages wins every name clash, as it would for a user.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration  # builds a wheel and installs PyPI's `config`


def _run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert out.returncode == 0, f"{cmd}: rc {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources it builds
    src = tmp_path_factory.mktemp("src") / "yuyue"
    shutil.copytree(
        REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "var", "build", "*.egg-info", "__pycache__")
    )
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, src)
    (path,) = dist.glob("yuyue-*.whl")
    return path


def test_wheel_holds_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"yuyue", next(t for t in top if t.endswith(".dist-info"))}
    tracked = subprocess.run(
        ["git", "ls-files", "cli", "config", "data", "features", "models", "training", "serving"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    missing = [p for p in tracked if p.endswith(".py") and f"yuyue/{p}" not in names]
    assert not missing, (
        f"modules left out of the wheel (add their package to pyproject's packages): {missing}"
    )
    for needed in (
        "yuyue/compat.py",
        "yuyue/features/pii.py",
        "yuyue/features/lexicon/surnames.txt",
        "yuyue/data/schema/conversation.schema.json",
        "yuyue/models/replies/rules/compliance.yaml",
        "yuyue/serving/static/console.html",
    ):
        assert needed in names


def test_installs_beside_pypi_config_and_a_models_package(wheel, model, tmp_path):
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    _run(py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "config==0.5.1")
    (site / "models").mkdir()
    (site / "models" / "__init__.py").write_text("OTHER = 'not yuyue'\n", encoding="utf-8")
    config_init = (site / "config" / "__init__.py").read_text(encoding="utf-8")

    _run(py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", wheel)
    (site / "zz_yuyue_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    assert (site / "config" / "__init__.py").read_text(encoding="utf-8") == config_init

    bundle = model.save(tmp_path / "bundle")
    script = f"""
import json, config, models
from datetime import datetime, timezone
from yuyue.models.bundle import YuyueModel
assert "yuyue" not in config.__file__ and models.OTHER == "not yuyue"
m = YuyueModel.load({str(bundle)!r})
session, _ = m.open_chat(started_at=datetime(2026, 11, 30, 10, tzinfo=timezone.utc))
session.state.update("visitor", "你好，割双眼皮多少钱", datetime(2026, 11, 30, 10, 1, tzinfo=timezone.utc))
scores = m.score(session.state)
print(json.dumps({{k: s.probability for k, s in scores.items()}}))
"""
    out = _run(py, "-c", script, cwd=tmp_path)
    probs = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(probs) >= {"booked"} and all(0.0 <= p <= 1.0 for p in probs.values())
    assert "Usage" in _run(env / "bin" / "yuyue", "--help", cwd=tmp_path).stdout

    _run(py, "-m", "pip", "uninstall", "--yes", "--quiet", "yuyue")
    assert (site / "config" / "__init__.py").read_text(encoding="utf-8") == config_init
    assert (site / "models" / "__init__.py").exists()
