"""The MLflow model as code ("models from code"): MLflow runs this file to build the pyfunc.

Logged with the bundle as an artifact and Yuyue's own package as ``code_paths``, so loading needs
neither pickled Python objects nor an installed ``yuyue`` (see :mod:`yuyue.models.mlflow_model`).
"""

from mlflow.models import set_model

from yuyue.models.mlflow_model import YuyuePyfunc

set_model(YuyuePyfunc())
