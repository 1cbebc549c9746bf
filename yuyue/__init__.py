"""Yuyue (预约): scores, stages, entities and reply suggestions for hospital consultation desks.

The repository keeps one top-level folder per job (``data/``, ``features/``, ``models/``,
``training/``, ``serving/``, ``cli/``, ``config/``); ``pyproject.toml`` installs each of them
under this one namespace (``features/`` is ``yuyue.features``), so Yuyue adds a single
top-level name to site-packages and cannot clash with PyPI's ``config``, ``data`` or ``models``.
"""

import os

__version__ = "0.1.0"

# OpenMP threads (scikit-learn's boosting, torch) that wait for work sleep instead of spinning. With
# spinning (the default), a 2-core host that is busy with anything else lost 30x in wall time: a
# HistGradientBoosting fit measured 188 s wall / 38 s CPU vs 6.1 s / 3.1 s passive (load 5-7; 11.5 s
# with one thread). Set here, before any of Yuyue's modules loads an OpenMP runtime; the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
