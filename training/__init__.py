"""The model life cycle on a dataset: build rows, train, evaluate, register, report.

Plain functions (``training.train.train``, ``training.evaluate.evaluate``) that the
``yuyue train`` / ``evaluate`` / ``models`` commands wrap. MLflow tracks every run;
serving loads what the registry's ``champion`` alias points at.
"""
