"""The bundle as an MLflow pyfunc model, and loading it back from the registry."""

from __future__ import annotations

import json
import re
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from yuyue.data.contract import Conversation
from yuyue.models.bundle import YuyueModel
from yuyue.models.legacy import old_module_names


class YuyuePyfunc(PythonModel):
    """pyfunc wrapper: input rows hold contract records (JSON) in ``conversation``; output: closed-chat scores."""

    def load_context(self, context: Any) -> None:
        self.model = YuyueModel.load(context.artifacts["bundle"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        out = []
        for raw in model_input["conversation"]:
            conv = Conversation.model_validate(json.loads(raw) if isinstance(raw, str) else raw)
            session, _ = self.model.open_chat(
                started_at=conv.started_at,
                visit=conv.visit,
                department=conv.department,
                project=conv.project,
                consultant_id=conv.consultant_id,
            )
            for m in conv.messages:
                session.state.update(m.role, m.text, m.at)
            scores = self.model.score(session.state, closed=True, top=0)
            out.append({k: scores[k].probability if k in scores else None for k in ("booked", "arrived")})
        return pd.DataFrame(out, columns=["booked", "arrived"])


SUBPACKAGES = ("cli", "config", "data", "features", "models", "serving", "training")
ENTRY = Path(__file__).with_name("mlflow_entry.py")


def code_tree(dest: Path) -> Path:
    """Copy the running ``yuyue`` package (sources and data files) to ``dest/yuyue`` for ``code_paths``.

    Works for an editable checkout (the folders mapped into the namespace) and for an installed wheel.
    """
    import importlib

    import yuyue

    root = dest / "yuyue"
    root.mkdir(parents=True, exist_ok=True)
    # the package's own modules (__init__.py, compat.py …), then the mapped folders
    for module in Path(yuyue.__file__).parent.glob("*.py"):
        shutil.copy2(module, root / module.name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SUBPACKAGES:
        init = importlib.import_module(f"yuyue.{name}").__file__
        if init is None:  # a namespace package: no folder of its own to copy
            raise RuntimeError(f"yuyue.{name} has no __init__.py: the installed package is incomplete")
        src = Path(init).parent
        shutil.copytree(src, root / name, ignore=skip, dirs_exist_ok=True)
    return root


def lock_file() -> Path | None:
    """``requirements.lock`` of the checkout this package runs from (None for an installed wheel)."""
    import yuyue

    path = Path(yuyue.__file__).resolve().parents[1] / "requirements.lock"
    return path if path.is_file() else None


def pinned_requirements() -> list[str]:
    """Exact pins for the logged model: requirements.lock's lines, else the installed versions of
    ``yuyue``'s dependencies and theirs (same pins the lock would give in this environment)."""
    lock = lock_file()
    if lock is not None:
        lines = (line.split("#", 1)[0].strip() for line in lock.read_text(encoding="utf-8").splitlines())
        return [line for line in lines if line and not line.startswith("-")]
    pins: dict[str, str] = {}
    todo = ["yuyue"]
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            dep = re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0]
            key = dep.lower().replace("_", "-")
            if key not in pins:
                try:
                    pins[key] = f"{dep}=={metadata.version(dep)}"
                except metadata.PackageNotFoundError:
                    continue
                todo.append(dep)
    return sorted(pins.values(), key=str.lower)


def load_from_registry(tracking_uri: str, name: str, ref: str = "champion") -> tuple[YuyueModel, str]:
    """Load ``models:/NAME@ALIAS`` (or a version number) and return the bundle and its version."""
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    if ref.isdigit():
        version = client.get_model_version(name, ref)
        uri = f"models:/{name}/{ref}"
    else:
        version = client.get_model_version_by_alias(name, ref)
        uri = f"models:/{name}@{ref}"
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except (ModuleNotFoundError, AttributeError):  # registered before the yuyue namespace
        with old_module_names():
            pyfunc = mlflow.pyfunc.load_model(uri)
    wrapper = pyfunc.unwrap_python_model()
    return wrapper.model, str(version.version)
