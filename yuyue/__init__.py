"""Yuyue (预约): scores, stages, entities and reply suggestions for hospital consultation desks.

The repository keeps one top-level folder per job (``data/``, ``features/``, ``models/``,
``training/``, ``serving/``, ``cli/``, ``config/``); ``pyproject.toml`` installs each of them
under this one namespace (``features/`` is ``yuyue.features``), so Yuyue adds a single
top-level name to site-packages and cannot clash with PyPI's ``config``, ``data`` or ``models``.
"""

__version__ = "0.1.0"
