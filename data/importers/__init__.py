"""Importing chat-tool exports (商务通, 53KF, 快商通: CSV or .xlsx) as contract JSONL.

``import_export(file, mapping, out)`` streams the export's rows, converts each by the
mapping YAML (``mappings/shangwutong.yaml`` documents every key) and writes the
conversations atomically. Rows that cannot be converted are reported by their
spreadsheet row number and skipped; with ``strict=True`` nothing is written if any is.
Whole-file problems (unreadable file, invalid mapping, required column missing)
raise :class:`ImportError_`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yuyue.data.contract import Conversation
from yuyue.data.importers.errors import ImportError_, RowProblem
from yuyue.data.importers.mapping import MAPPINGS_DIR, ImportMapping, load_mapping
from yuyue.data.importers.records import RowConverter, cell_text, header_key
from yuyue.data.importers.tables import Row, open_rows
from yuyue.data.importers.transcript import ParsedMessage, TranscriptParser
from yuyue.data.io import write_jsonl

__all__ = [
    "MAPPINGS_DIR",
    "ImportError_",
    "ImportMapping",
    "ImportResult",
    "ParsedMessage",
    "RowProblem",
    "TranscriptParser",
    "import_export",
    "iter_conversations",
    "load_mapping",
]


@dataclass
class ImportResult:
    """What an import did: data rows read, records written, and the rows it could not parse."""

    rows: int = 0
    written: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    """Optional mapped columns the export lacks, e.g. ``columns.department (科室)``; their fields are left out."""


class _StrictAbort(Exception):
    """Raised at the end of the record stream so write_jsonl drops its temporary file."""


def _is_blank(cells: list[Any]) -> bool:
    return all(not cell_text(c) for c in cells)


def _find_header(rows: Iterator[Row], mapping: ImportMapping, source: Path) -> tuple[int, list[Any]]:
    if mapping.header_row is not None:
        for row_number, cells in rows:
            if row_number == mapping.header_row:
                return row_number, cells
        raise ImportError_(
            f"{source}: no header row {mapping.header_row} (mapping key 'header_row'): the file is shorter"
        )
    wanted = [mapping.columns.started_at, mapping.columns.transcript]
    first: tuple[int, list[Any]] | None = None
    for row_number, cells in rows:
        if row_number > mapping.header_search_rows:
            break
        if _is_blank(cells):
            continue
        first = first or (row_number, cells)
        names = {header_key(c) for c in cells}
        if all(any(header_key(n) in names for n in alternatives) for alternatives in wanted):
            return row_number, cells
    if first is None:
        raise ImportError_(f"{source}: no header row found: the file is empty")
    # Report against the first non-blank row, which is most likely the header.
    return first


def iter_conversations(
    file: str | Path, mapping: ImportMapping, result: ImportResult, source: Path | None = None
) -> Iterator[Conversation]:
    """Stream the conversations of an export, counting rows and recording problems in ``result``."""
    file = Path(file)
    source = source or file
    with open_rows(file, mapping) as rows:
        header_row, header = _find_header(rows, mapping, source)
        converter = RowConverter(mapping, header, source, header_row)
        result.missing_columns = [
            f"columns.{key} ({' / '.join(getattr(mapping.columns, key))})" for key in converter.missing
        ]
        seen: dict[str, int] = {}
        for row_number, cells in rows:
            if row_number <= header_row or _is_blank(cells):
                continue
            result.rows += 1
            try:
                conversation = converter.convert(row_number, cells)
            except RowProblem as exc:
                result.problems.append((row_number, str(exc)))
                continue
            earlier = seen.get(conversation.conversation_id)
            if earlier is not None:
                result.problems.append(
                    (
                        row_number,
                        f"{converter.column('conversation_id')}: duplicate conversation id "
                        f"{conversation.conversation_id!r} (same as row {earlier})",
                    )
                )
                continue
            seen[conversation.conversation_id] = row_number
            yield conversation


def import_export(file: Path, mapping: Path, out: Path, strict: bool = False) -> ImportResult:
    """Convert a chat-tool export to contract JSONL at ``out``; see the module docstring."""
    file, mapping, out = Path(file), Path(mapping), Path(out)
    spec = load_mapping(mapping)
    result = ImportResult()

    def records() -> Iterator[Conversation]:
        yield from iter_conversations(file, spec, result)
        if strict and result.problems:
            raise _StrictAbort

    try:
        result.written = write_jsonl(out, records())
    except _StrictAbort:
        result.written = 0
    except OSError as exc:  # reading errors are ImportError_ already; this is the output side
        raise ImportError_(f"{out}: cannot write: {exc.strerror or exc}") from None
    return result
