"""The import mapping: how one chat tool's export maps onto the conversation record contract.

A mapping is a YAML file (see ``mappings/shangwutong.yaml`` for the documented
reference). It is validated here with pydantic models that forbid unknown keys,
so a typo names itself instead of being ignored. A mapping may ``extends:``
another one (a path relative to it, or the name of a shipped mapping) and
override only what differs; dictionaries merge key by key, lists are replaced.
"""

from __future__ import annotations

import re
from datetime import timedelta, timezone, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from yuyue.data.contract import Device, Engine
from yuyue.data.importers.errors import ImportError_

MAPPINGS_DIR = Path(__file__).parent / "mappings"


def _compile(value: Any) -> re.Pattern[str]:
    if isinstance(value, re.Pattern):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("expected a regular expression (a non-empty string)")
    try:
        return re.compile(value, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None


Regex = Annotated[re.Pattern[str], PlainValidator(_compile)]


def _column_names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise ValueError("expected a column name or a non-empty list of column names")
    out = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"expected a non-empty column name, got {name!r}")
        out.append(name.strip())
    return tuple(out)


ColumnNames = Annotated[tuple[str, ...], PlainValidator(_column_names)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Columns(_Spec):
    """Which export column feeds which field; each a name or a list of alternative names."""

    started_at: ColumnNames
    transcript: ColumnNames
    conversation_id: ColumnNames | None = None
    visitor_name: ColumnNames | None = None
    visitor_id: ColumnNames | None = None
    source: ColumnNames | None = None
    referrer: ColumnNames | None = None
    keyword: ColumnNames | None = None
    landing_url: ColumnNames | None = None
    region: ColumnNames | None = None
    device: ColumnNames | None = None
    department: ColumnNames | None = None
    project: ColumnNames | None = None
    consultant_id: ColumnNames | None = None
    remark: ColumnNames | None = None
    grade: ColumnNames | None = None


REQUIRED_COLUMNS: tuple[str, ...] = ("started_at", "transcript")


class CsvOptions(_Spec):
    encoding: str = "auto"
    delimiter: str = Field(",", min_length=1, max_length=1)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        if value == "auto":
            return value
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (use auto, utf-8-sig or gb18030)") from None
        return value


class TimeOptions(_Spec):
    formats: list[str] = Field(min_length=1)
    timezone: str = "+08:00"

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        _parse_timezone(value)
        return value

    @property
    def tz(self) -> tzinfo:
        return _parse_timezone(self.timezone)


def _parse_timezone(value: str) -> tzinfo:
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", value.strip())
    if m:
        offset = timedelta(hours=int(m[2]), minutes=int(m[3]))
        if offset >= timedelta(hours=24):
            raise ValueError(f"offset out of range: {value!r}")
        return timezone(-offset if m[1] == "-" else offset)
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"expected an offset like +08:00 or a zone like Asia/Shanghai, got {value!r}"
        ) from None


class EngineRule(_Spec):
    engine: Engine
    pattern: Regex


class Engines(_Spec):
    rules: list[EngineRule]
    default: Engine = "other"
    blank: Engine | None = None


class DeviceRule(_Spec):
    device: Device
    pattern: Regex


class Devices(_Spec):
    rules: list[DeviceRule]
    default: Device = "unknown"


class OutcomeRule(_Spec):
    mark: Literal["booked", "arrived", "contact", "none"]
    pattern: Regex


class Outcomes(_Spec):
    rules: list[OutcomeRule]
    blank_remark_means_no_booking: bool = True
    unmatched_remark_means_no_booking: bool = True
    arrived_implies_booked: bool = True


class Transcript(_Spec):
    time_pattern: Regex
    header_patterns: list[str] = Field(min_length=1)
    visitor_speakers: list[Regex] = []
    system_speakers: list[Regex] = []
    system_lines: list[Regex] = []
    system_messages: Literal["keep", "drop"] = "keep"
    consultant_from_speaker: bool = True
    midnight_wrap_hours: float = Field(12, gt=0, le=24)

    @field_validator("time_pattern")
    @classmethod
    def _time_groups(cls, value: re.Pattern[str]) -> re.Pattern[str]:
        groups = set(value.groupindex)
        if not {"hour", "minute"} <= groups:
            raise ValueError("needs named groups hour and minute (and optionally second, year, month, day)")
        date_groups = groups & {"year", "month", "day"}
        if date_groups and date_groups != {"year", "month", "day"}:
            raise ValueError("the date groups year, month and day go together")
        return value

    @field_validator("header_patterns")
    @classmethod
    def _header_groups(cls, value: list[str]) -> list[str]:
        for i, pattern in enumerate(value):
            if "{time}" not in pattern or "(?P<speaker>" not in pattern:
                raise ValueError(f"item {i}: needs a (?P<speaker>...) group and the {{time}} placeholder")
        return value

    @model_validator(mode="after")
    def _headers_compile(self) -> Transcript:
        for i, pattern in enumerate(self.compiled_headers()):
            if "time" not in pattern.groupindex or "speaker" not in pattern.groupindex:
                raise ValueError(
                    f"header_patterns.{i}: needs a (?P<speaker>...) group and the {{time}} placeholder"
                )
        return self

    def compiled_headers(self) -> list[re.Pattern[str]]:
        time_src = f"(?P<time>{self.time_pattern.pattern})"
        return [_compile(p.replace("{time}", time_src)) for p in self.header_patterns]


class ConversationIds(_Spec):
    prefix: str = ""
    hash_of: list[Literal["visitor", "started_at", "consultant", "transcript"]] = Field(
        ["visitor", "started_at"], min_length=1
    )


class ImportMapping(_Spec):
    """A whole mapping file."""

    tool: str = Field(min_length=1)
    hospital: str | None = None
    header_row: int | None = Field(None, ge=1)
    header_search_rows: int = Field(20, ge=1)
    sheet: str | None = None
    csv: CsvOptions = CsvOptions()
    columns: Columns
    time: TimeOptions
    engines: Engines
    devices: Devices | None = None
    outcome: Outcomes | None = None
    transcript: Transcript
    conversation_id: ConversationIds = ConversationIds()
    keyword_from_referrer: list[str] = ["wd", "word", "q", "query", "keyword"]


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in chain:
        raise ImportError_(f"{path}: mapping extends itself ({' -> '.join(str(p) for p in (*chain, path))})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ImportError_(f"{path}: cannot read mapping: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ImportError_(f"{path}: mapping is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ImportError_(f"{path}: mapping is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ImportError_(f"{path}: mapping must be a YAML mapping of keys, got {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise ImportError_(f"{path}: mapping key 'extends': expected a file name")
    candidates = [path.parent / parent, MAPPINGS_DIR / parent, MAPPINGS_DIR / f"{parent}.yaml"]
    base = next((c for c in candidates if c.is_file()), None)
    if base is None:
        raise ImportError_(
            f"{path}: mapping key 'extends': no mapping {parent!r} next to it or in {MAPPINGS_DIR}"
        )
    return _merge(_read_yaml(base.resolve(), (*chain, path)), data)


def load_mapping(path: str | Path) -> ImportMapping:
    """Read and validate a mapping file; any problem raises ImportError_ naming the key."""
    path = Path(path).resolve()
    data = _read_yaml(path)
    try:
        return ImportMapping.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = "required key is missing"
            elif err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"mapping key '{key}': {msg}")
        raise ImportError_(f"{path}: invalid mapping: " + "; ".join(lines)) from None
