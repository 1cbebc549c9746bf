"""Loading artefacts pickled before Yuyue moved under the ``yuyue`` namespace.

Bundles and MLflow pyfuncs saved before the move name their classes ``models.scorer.…``,
``features.state.…`` and so on. :func:`old_module_names` makes those names resolve to
``yuyue.models.scorer`` … while a load runs, even where PyPI's ``models`` or ``config`` is
installed, and puts ``sys.modules`` back as it was afterwards.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

OLD_TOP_LEVEL = ("cli", "config", "data", "features", "models", "training", "serving")


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:  # already executed under its new name
        return None


class _OldNameFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".", 1)[0] not in OLD_TOP_LEVEL:
            return None
        new = "yuyue." + fullname
        if importlib.util.find_spec(new) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


@contextmanager
def old_module_names() -> Iterator[None]:
    """While active, ``import models.scorer`` gives ``yuyue.models.scorer`` (and so on)."""
    saved = {k: v for k, v in sys.modules.items() if k.split(".", 1)[0] in OLD_TOP_LEVEL}
    for k in saved:
        del sys.modules[k]
    finder = _OldNameFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for k in [k for k in sys.modules if k.split(".", 1)[0] in OLD_TOP_LEVEL]:
            del sys.modules[k]
        sys.modules.update(saved)
