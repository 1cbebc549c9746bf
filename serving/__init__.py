"""Serving: answer consoles in real time and keep what they send.

The FastAPI app, per-resource routes, the event store, the state cache, auth and
the console page belong here (the serving issue). It loads models only through
the registry (``models.mlflow_model.load_from_registry``), never training code.
"""
