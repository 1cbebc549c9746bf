"""Turning one export row into one contract record, by the rules of a mapping."""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from yuyue.data.contract import Conversation
from yuyue.data.importers.errors import ImportError_, RowProblem
from yuyue.data.importers.mapping import REQUIRED_COLUMNS, Columns, ImportMapping, Outcomes
from yuyue.data.importers.transcript import TranscriptParser
from yuyue.data.io import problems_from_validation_error

_SPACES = " \t\r\n\u3000\ufeff"
_URL = re.compile(r"^(https?://|www\.)", re.IGNORECASE)

# Contract field -> mapping column key, to name the column when a record fails validation.
_FIELD_COLUMN = {
    "conversation_id": "conversation_id",
    "department": "department",
    "project": "project",
    "consultant_id": "consultant_id",
    "started_at": "started_at",
    "grade": "grade",
    "messages": "transcript",
    "visit.visitor_id": "visitor_id",
    "visit.keyword": "keyword",
    "visit.landing_url": "landing_url",
    "visit.referrer": "referrer",
    "visit.region": "region",
}


def cell_text(value: Any) -> str:
    """A cell as text: blank for empty, integers without ``.0``, times as ``YYYY-MM-DD HH:MM:SS``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip(_SPACES)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip(_SPACES)


def header_key(value: Any) -> str:
    return re.sub(r"[\s\u3000\ufeff]+", "", cell_text(value))


def find_columns(header: list[Any], columns: Columns) -> tuple[dict[str, int], dict[str, str], list[str]]:
    """Indexes of the mapped columns in a header row: ``(index by key, column name by key, keys missing)``."""
    positions: dict[str, int] = {}
    for i, cell in enumerate(header):
        positions.setdefault(header_key(cell), i)
    index: dict[str, int] = {}
    names: dict[str, str] = {}
    missing: list[str] = []
    for key in Columns.model_fields:
        candidates = getattr(columns, key)
        if candidates is None:
            continue
        found = next((name for name in candidates if header_key(name) in positions), None)
        if found is None:
            missing.append(key)
            continue
        index[key] = positions[header_key(found)]
        names[key] = found
    return index, names, missing


class RowConverter:
    """Converts the rows below one header row into conversations."""

    def __init__(self, mapping: ImportMapping, header: list[Any], source: Path, header_row: int):
        self.mapping = mapping
        self.index, self.names, self.missing = find_columns(header, mapping.columns)
        for key in REQUIRED_COLUMNS:
            if key not in self.index:
                wanted = " or ".join(repr(n) for n in getattr(mapping.columns, key))
                present = ", ".join(repr(c) for c in (cell_text(h) for h in header) if c) or "none"
                raise ImportError_(
                    f"{source}: required column {wanted} (mapping key 'columns.{key}') not found "
                    f"in header row {header_row}; columns are: {present}"
                )
        self.tz: tzinfo = mapping.time.tz
        self.transcript = TranscriptParser(mapping.transcript, column=self.names["transcript"])

    def column(self, key: str) -> str:
        return self.names.get(key) or key

    def _get(self, cells: list[Any], key: str) -> Any:
        i = self.index.get(key)
        if i is None or i >= len(cells):
            return None
        return cells[i]

    def _text(self, cells: list[Any], key: str) -> str:
        return cell_text(self._get(cells, key))

    def started_at(self, value: Any) -> datetime:
        col = self.column("started_at")
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=self.tz)
        if isinstance(value, date):
            return datetime.combine(value, datetime.min.time(), tzinfo=self.tz)
        if isinstance(value, int | float) and not isinstance(value, bool):
            from openpyxl.utils.datetime import from_excel

            try:
                stamp = from_excel(value)
            except (ValueError, OverflowError, TypeError):
                stamp = None
            if isinstance(stamp, datetime):
                return stamp.replace(tzinfo=self.tz)
        text = cell_text(value)
        if not text:
            raise RowProblem(f"{col}: empty")
        for fmt in self.mapping.time.formats:
            try:
                return datetime.strptime(text, fmt).replace(tzinfo=self.tz)
            except ValueError:
                continue
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            shown = text if len(text) <= 40 else text[:40] + "…"
            example = datetime(2025, 3, 5, 14, 2, 11).strftime(self.mapping.time.formats[0])
            raise RowProblem(
                f"{col}: cannot read {shown!r} as a date and time (expected e.g. {example}; "
                "mapping key time.formats)"
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=self.tz)

    def engine(self, source: str, referrer: str) -> str | None:
        text = f"{source} {referrer}".strip()
        if not text:
            return self.mapping.engines.blank
        for rule in self.mapping.engines.rules:
            if rule.pattern.search(text):
                return rule.engine
        return self.mapping.engines.default

    def device(self, value: str) -> str | None:
        devices = self.mapping.devices
        if not value or devices is None:
            return None
        for rule in devices.rules:
            if rule.pattern.search(value):
                return rule.device
        return devices.default

    def keyword_from(self, referrer: str) -> str:
        if not referrer or not self.mapping.keyword_from_referrer:
            return ""
        try:
            query = parse_qs(urlsplit(referrer if "://" in referrer else "http://" + referrer).query)
        except ValueError:
            return ""
        for name in self.mapping.keyword_from_referrer:
            for value in query.get(name, []):
                if value.strip():
                    return value.strip()
        return ""

    def conversation_id(
        self, cells: list[Any], started: datetime, visitor: str, consultant: str, transcript: str
    ) -> str:
        given = self._text(cells, "conversation_id")
        if given:
            return given
        rule = self.mapping.conversation_id
        parts = {
            "visitor": visitor,
            "started_at": started.isoformat(),
            "consultant": consultant,
            "transcript": transcript,
        }
        key = "\x1f".join(parts[name] for name in rule.hash_of)
        return rule.prefix + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]

    def convert(self, row_number: int, cells: list[Any]) -> Conversation:
        """The conversation of one row; raises RowProblem naming the column when it cannot be made."""
        started = self.started_at(self._get(cells, "started_at"))
        transcript = self._text(cells, "transcript")
        if not transcript:
            raise RowProblem(f"{self.column('transcript')}: empty transcript")
        visitor_name = self._text(cells, "visitor_name")
        visitor_id = self._text(cells, "visitor_id")
        visitor_names = {n for n in (visitor_name, visitor_id) if n}
        messages = self.transcript.parse(transcript, started, visitor_names)

        consultant = self._text(cells, "consultant_id")
        if not consultant and self.mapping.transcript.consultant_from_speaker:
            consultant = next((m.speaker for m in messages if m.role == "consultant"), "")

        source = self._text(cells, "source")
        referrer = self._text(cells, "referrer") or (source if _URL.match(source) else "")
        keyword = self._text(cells, "keyword") or self.keyword_from(referrer)
        visit = {
            "visitor_id": visitor_id,
            "engine": self.engine(source, referrer),
            "keyword": keyword,
            "landing_url": self._text(cells, "landing_url"),
            "referrer": referrer,
            "region": self._text(cells, "region"),
            "device": self.device(self._text(cells, "device")),
        }
        visit = {k: v for k, v in visit.items() if v}
        record: dict[str, Any] = {
            "conversation_id": self.conversation_id(
                cells, started, visitor_id or visitor_name, consultant, transcript
            ),
            "hospital": self.mapping.hospital,
            "department": self._text(cells, "department"),
            "project": self._text(cells, "project"),
            "consultant_id": consultant,
            "started_at": started,
            "visit": visit or None,
            "messages": [{"at": m.at, "role": m.role, "text": m.text} for m in messages],
            "grade": self._text(cells, "grade"),
        }
        if self.mapping.outcome is not None and "remark" in self.index:
            record["outcome"] = outcome_from_remark(self._text(cells, "remark"), self.mapping.outcome)
        record = {k: v for k, v in record.items() if v not in (None, "")}
        try:
            return Conversation.model_validate(record)
        except ValidationError as exc:
            raise RowProblem(
                "; ".join(
                    self._describe(p.field, p.problem)
                    for p in problems_from_validation_error(row_number, exc)
                )
            ) from None

    def _describe(self, field: str, problem: str) -> str:
        for prefix, key in _FIELD_COLUMN.items():
            if field == prefix or field.startswith(prefix + "."):
                if key in self.names:
                    return f"{self.names[key]}: {problem} ({field})"
                if key == "referrer" and "source" in self.names:
                    return f"{self.names['source']}: {problem} ({field})"
        return f"{field}: {problem}"


def outcome_from_remark(remark: str, rules: Outcomes) -> dict[str, bool] | None:
    """Outcome labels from the desk's 备注: every matching rule adds its mark.

    ``booked``/``arrived``/``contact`` set their flag; ``none`` (无效, 未约) says not booked
    unless a booking mark also matched. ``arrived`` implies ``booked`` (unless turned off).
    A blank remark, or one no booking rule matches, means not booked when the mapping says
    so; otherwise nothing is known and no outcome (or only ``contact``) is written.
    """
    if not remark:
        return {"booked": False} if rules.blank_remark_means_no_booking else None
    marks = {rule.mark for rule in rules.rules if rule.pattern.search(remark)}
    outcome: dict[str, bool] = {}
    if "contact" in marks:
        outcome["contact"] = True
    if "booked" in marks or ("arrived" in marks and rules.arrived_implies_booked):
        outcome["booked"] = True
    if "arrived" in marks:
        outcome["arrived"] = True
    if (
        "booked" not in outcome
        and "arrived" not in marks
        and ("none" in marks or rules.unmatched_remark_means_no_booking)
    ):
        outcome["booked"] = False
    return outcome or None
