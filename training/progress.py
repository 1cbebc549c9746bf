"""Progress bars with an ETA for the long steps of a first start (generation, rows, fitting, e5).

Shown on a terminal only: off when stderr is not a TTY, under pytest, or with ``YUYUE_PROGRESS=0``,
so logs and test output stay quiet. Code below ``training`` takes a plain ``on_progress(n_done)``
callback and never imports this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Advance = Callable[[int], None]


def enabled() -> bool:
    if os.environ.get("YUYUE_PROGRESS", "").lower() in ("0", "false", "no", "off"):
        return False
    if "PYTEST_CURRENT_TEST" in os.environ or "pytest" in sys.modules:
        return False
    return sys.stderr.isatty()


def _no_op(n: int = 1) -> None:
    return None


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Advance]:
    """Yield ``advance(n)``: a rich bar on stderr (count, rate, elapsed, ETA) or a no-op."""
    if not enabled():
        yield _no_op
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance


@contextmanager
def on_log(logger: str, advance: Advance, contains: str) -> Iterator[None]:
    """Advance once per record of ``logger`` whose format contains ``contains`` (steps that only log)."""
    import logging

    class _Step(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if contains in str(record.msg):
                advance(1)

    log = logging.getLogger(logger)
    handler, level = _Step(), log.level
    log.addHandler(handler)
    if not log.isEnabledFor(logging.INFO):
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
