"""Streaming JSONL reading and writing of conversation records.

Files are read line by line (optionally gzip-compressed, by the ``.gz`` suffix),
so a pass over a million conversations never holds them all in memory. Every
problem is reported with its line number; nothing is dropped silently.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from pydantic import ValidationError

from yuyue.data.contract import Conversation


@dataclass(frozen=True)
class RecordProblem:
    """One problem with one record: where it is and what is wrong."""

    line: int
    field: str
    problem: str

    def format(self, file: str | Path) -> str:
        return f"{file}:{self.line}: {self.field}: {self.problem}"


class InvalidRecordError(ValueError):
    """Raised in strict mode at the first invalid record."""

    def __init__(self, file: str | Path, problem: RecordProblem):
        self.file = str(file)
        self.problem = problem
        super().__init__(problem.format(file))


@dataclass
class SkipReport:
    """Counts records read and skipped; keeps the first ``keep`` problems."""

    keep: int = 50
    read: int = 0
    skipped: int = 0
    problems: list[RecordProblem] = field(default_factory=list)
    n_problems: int = 0

    def add(self, problem: RecordProblem) -> None:
        self.n_problems += 1
        if len(self.problems) < self.keep:
            self.problems.append(problem)

    def summary(self, file: str | Path) -> str:
        return f"{file}: read {self.read} valid records, skipped {self.skipped} invalid"


def _open_binary(path: Path) -> gzip.GzipFile | BinaryIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


BOM = b"\xef\xbb\xbf"


def parse_json_line(lineno: int, raw: bytes) -> tuple[int, Any, RecordProblem | None] | None:
    """One line of a JSONL file as ``(line_number, object_or_None, problem_or_None)``; None when blank.

    The caller drops a byte-order mark at the start of a file (:data:`BOM`)."""
    if not raw.strip():
        return None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return lineno, None, RecordProblem(lineno, "(line)", f"invalid UTF-8 at byte {exc.start}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return lineno, None, RecordProblem(lineno, "(line)", f"invalid JSON: {exc}")
    if not isinstance(obj, dict):
        return (
            lineno,
            None,
            RecordProblem(lineno, "(line)", f"expected a JSON object, got {type(obj).__name__}"),
        )
    return lineno, obj, None


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any, RecordProblem | None]]:
    """Yield ``(line_number, parsed_object_or_None, problem_or_None)`` for each non-blank line."""
    path = Path(path)
    with _open_binary(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            item = parse_json_line(lineno, raw.removeprefix(BOM) if lineno == 1 else raw)
            if item is not None:
                yield item


def _loc_to_field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) if loc else "(record)"


def problems_from_validation_error(lineno: int, exc: ValidationError) -> list[RecordProblem]:
    """Turn a pydantic error into ``field: problem`` items with dotted field paths."""
    out = []
    for err in exc.errors(include_url=False):
        field_name = _loc_to_field(tuple(err["loc"]))
        msg = str(err["msg"])
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            # model validators name the field themselves as "path: problem"
            head, sep, rest = msg.partition(": ")
            if sep and " " not in head:
                field_name = head if field_name == "(record)" else f"{field_name}.{head}"
                msg = rest
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and err["type"] not in ("string_too_long", "too_long"):
            shown = repr(err["input"])
            msg = f"{msg} (got {shown[:60]})"
        out.append(RecordProblem(lineno, field_name, msg))
    return out


def parse_conversation(lineno: int, obj: dict[str, Any]) -> tuple[Conversation | None, list[RecordProblem]]:
    try:
        return Conversation.model_validate(obj), []
    except ValidationError as exc:
        return None, problems_from_validation_error(lineno, exc)


def read_conversations(
    path: str | Path,
    *,
    strict: bool = False,
    report: SkipReport | None = None,
    check_duplicates: bool = True,
) -> Iterator[Conversation]:
    """Stream valid conversations from a JSONL file.

    Invalid records are skipped and counted in ``report`` (never silently);
    with ``strict=True`` the first invalid record raises :class:`InvalidRecordError`.
    """
    report = report if report is not None else SkipReport()
    seen: set[str] = set()
    for lineno, obj, problem in iter_json_lines(path):
        problems = [problem] if problem else []
        conv = None
        if obj is not None:
            conv, problems = parse_conversation(lineno, obj)
        if conv is not None and check_duplicates:
            if conv.conversation_id in seen:
                problems = [
                    RecordProblem(
                        lineno, "conversation_id", f"duplicate conversation id {conv.conversation_id!r}"
                    )
                ]
                conv = None
            else:
                seen.add(conv.conversation_id)
        if conv is None:
            if strict:
                raise InvalidRecordError(path, problems[0])
            report.skipped += 1
            for p in problems:
                report.add(p)
            continue
        report.read += 1
        yield conv


def dumps_record(record: Conversation | dict[str, Any] | orjson.Fragment) -> bytes:
    if isinstance(record, Conversation):
        record = record.to_record()
    return orjson.dumps(record)


def write_jsonl(path: str | Path, records: Iterable[Conversation | dict[str, Any] | orjson.Fragment]) -> int:
    """Write records as JSONL (gzip when the name ends in ``.gz``); returns the count written.

    Writes to a temporary file first and renames it, so a failure never leaves half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    n = 0
    out: gzip.GzipFile | BinaryIO = (
        gzip.open(tmp, "wb") if path.suffix == ".gz" else open(tmp, "wb", buffering=1 << 20)
    )
    try:
        with out as fh:
            for rec in records:
                fh.write(dumps_record(rec))
                fh.write(b"\n")
                n += 1
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n
