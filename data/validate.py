"""File-level validation: every record against the contract, plus duplicate ids."""

from __future__ import annotations

from pathlib import Path

from yuyue.data.io import SkipReport, read_conversations


def validate_file(path: str | Path, keep: int = 50) -> SkipReport:
    """Check every record of a JSONL file; the report holds the problems found (the first ``keep``)."""
    report = SkipReport(keep=keep)
    for _ in read_conversations(path, report=report):
        pass
    return report
