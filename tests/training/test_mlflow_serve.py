"""The registered MLflow model carries Yuyue's code and exact pins, so it loads and serves without yuyue.

A fresh virtual environment stands in for the one ``mlflow models serve`` would build from the
model's requirements.txt: it has no ``yuyue`` at all, and the heavy pinned dependencies come from
this project's environment through a ``.pth`` line (the trick of tests/test_packaging.py; a plain
path line, so the editable install's own ``.pth`` finder there is not run). The model's ``code/``
must supply every ``yuyue`` module.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sysconfig
import time
import urllib.request
import venv
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from yuyue.models.mlflow_model import lock_file, pinned_requirements
from yuyue.training import registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]
URI = "models:/yuyue@champion"


def _record() -> str:
    return json.dumps(registry._example_record(), ensure_ascii=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory, test_settings, model):
    var = tmp_path_factory.mktemp("mlflow_serve")
    settings = test_settings.model_copy(
        update={"var_dir": var, "mlflow_tracking_uri": f"sqlite:///{var / 'mlflow.db'}"}
    )
    bundle = model.save(var / "bundle")
    _, version = registry.log_and_register(model, Path(bundle), {}, settings=settings)
    registry.promote(version, settings)
    return settings


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory, store) -> tuple[Path, dict[str, str]]:
    env = tmp_path_factory.mktemp("fresh") / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    py = env / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    # what pip would write for uvicorn's console script (`mlflow models serve` runs `uvicorn` from PATH)
    (env / "bin" / "uvicorn").write_text(f"#!{py}\nfrom uvicorn.main import main\nmain()\n", encoding="utf-8")
    (env / "bin" / "uvicorn").chmod(0o755)
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("YUYUE_", "PYTHON", "VIRTUAL_ENV"))},
        "PATH": f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": store.mlflow_tracking_uri,
    }
    probe = subprocess.run(
        [py, "-c", "import yuyue"], capture_output=True, text=True, env=environ, cwd=env.parent
    )
    assert probe.returncode != 0, "the fresh venv must not see an installed yuyue"
    return py, environ


def _expected(store) -> list[dict]:
    mlflow.set_tracking_uri(store.mlflow_tracking_uri)
    out = mlflow.pyfunc.load_model(URI).predict(pd.DataFrame({"conversation": [_record()]}))
    return out.to_dict(orient="records")


def test_logged_requirements_are_the_lock_pins(store):
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=URI, tracking_uri=store.mlflow_tracking_uri)
    )
    logged = [
        ln.strip()
        for ln in (local / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if ln.strip()
    ]
    assert logged == pinned_requirements()
    assert all("==" in ln for ln in logged) and not any(ln.lower().startswith("yuyue") for ln in logged)
    if lock_file() is not None:  # a checkout: the very lines of requirements.lock
        lock = [
            ln for ln in lock_file().read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")
        ]
        assert logged == lock
    assert (local / "code" / "yuyue" / "models" / "bundle.py").is_file()
    assert not any(local.rglob("python_model.pkl")), "the wrapper is logged as code, not pickled"


def test_loads_and_predicts_in_a_fresh_venv_without_yuyue(store, fresh_env):
    py, environ = fresh_env
    script = f"""
import json, mlflow, pandas as pd
m = mlflow.pyfunc.load_model({URI!r})
import yuyue  # only now importable: loading put the model's code/ on sys.path
out = m.predict(pd.DataFrame({{"conversation": [{_record()!r}]}}))
print(json.dumps({{"from": yuyue.__file__, "out": out.to_dict(orient="records")}}))
"""
    res = subprocess.run(
        [py, "-c", script], capture_output=True, text=True, env=environ, cwd=py.parents[2], timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert f"{os.sep}code{os.sep}yuyue{os.sep}" in got["from"]
    assert got["out"] == _expected(store)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_invocations(store, fresh_env, tmp_path):
    py, environ = fresh_env
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            py,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            URI,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=environ,
        cwd=py.parents[2],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (
                "server not up in 180 s:\n" + (tmp_path / "serve.log").read_text()[-3000:]
            )
            time.sleep(1)
        body = json.dumps({"dataframe_split": {"columns": ["conversation"], "data": [[_record()]]}}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            predictions = json.loads(r.read())["predictions"]
        assert predictions == _expected(store)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()
