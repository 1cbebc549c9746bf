"""The bundle as an MLflow pyfunc model, and loading it back from the registry."""

from __future__ import annotations

import json
from typing import Any

import mlflow
import pandas as pd

from yuyue.data.contract import Conversation
from yuyue.models.bundle import YuyueModel
from yuyue.models.legacy import old_module_names


class YuyuePyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: input rows hold contract records (JSON) in ``conversation``; output: closed-chat scores."""

    def load_context(self, context: Any) -> None:
        self.model = YuyueModel.load(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
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
