"""Parsing the transcript cell of an export into timed, role-tagged messages.

A transcript is a run of messages, each a header line naming the speaker and the
send time followed by its text lines::

    客人 2025-03-05 14:02:11
    你好，隆鼻多少钱
    张医生 14:02:30
    您好，请问怎么称呼？

Header shapes, the time shape, which speakers are the visitor or the system and
which bare lines are system notices all come from the mapping's ``transcript``
section. Times without a date take it from the previous message (the first from
the conversation's start); a time-only clock that jumps back across midnight
rolls on to the next day. Any other step back in time is a problem of the row.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from yuyue.data.importers.errors import RowProblem
from yuyue.data.importers.mapping import Transcript

_SPACES = " \t\u3000\ufeff"


@dataclass(frozen=True)
class ParsedMessage:
    """One message of a transcript, with who sent it as the export names them."""

    at: datetime
    role: str
    speaker: str
    text: str


class TranscriptParser:
    """Turns transcript cells into messages following one mapping's ``transcript`` rules."""

    def __init__(self, rules: Transcript, column: str = "transcript"):
        self.rules = rules
        self.column = column
        self._headers = rules.compiled_headers()
        self._wrap = timedelta(hours=rules.midnight_wrap_hours)

    def role_of(self, speaker: str, visitor_names: Collection[str]) -> str:
        if any(p.search(speaker) for p in self.rules.system_speakers):
            return "system"
        if speaker in visitor_names or any(p.search(speaker) for p in self.rules.visitor_speakers):
            return "visitor"
        return "consultant"

    def _header(self, line: str) -> re.Match[str] | None:
        for pattern in self._headers:
            m = pattern.match(line)
            if m:
                return m
        return None

    def _problem(self, line_no: int, message: str) -> RowProblem:
        return RowProblem(f"{self.column}: line {line_no}: {message}")

    def _time_of(self, m: re.Match[str], line_no: int) -> tuple[date | None, time]:
        groups = m.groupdict()
        try:
            clock = time(int(groups["hour"]), int(groups["minute"]), int(groups.get("second") or 0))
            day = None
            if groups.get("year"):
                day = date(int(groups["year"]), int(groups["month"]), int(groups["day"]))
        except (TypeError, ValueError):
            raise self._problem(line_no, f"not a valid time {m['time']!r}") from None
        return day, clock

    def _place(
        self, day: date | None, clock: time, previous: datetime, first: bool, line_no: int
    ) -> datetime:
        """The full time of a header, checked against the previous message (or the start for the first)."""
        tz = previous.tzinfo
        if day is not None:
            at = datetime.combine(day, clock, tzinfo=tz)
            if not first and at < previous:
                raise self._problem(
                    line_no,
                    f"time {at:%Y-%m-%d %H:%M:%S} is earlier than the message before ({previous:%Y-%m-%d %H:%M:%S})",
                )
            return at
        at = datetime.combine(previous.date(), clock, tzinfo=tz)
        if at < previous:
            if previous - at >= self._wrap:
                at += timedelta(days=1)  # the clock passed midnight
            elif not first:
                raise self._problem(
                    line_no, f"time {clock:%H:%M:%S} is earlier than the message before ({previous:%H:%M:%S})"
                )
        return at

    def parse(
        self, text: str, started_at: datetime, visitor_names: Collection[str] = ()
    ) -> list[ParsedMessage]:
        """The messages of one transcript cell; raises RowProblem naming the line when it cannot."""
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        messages: list[ParsedMessage] = []
        current: tuple[datetime, str, str] | None = None  # at, role, speaker
        body: list[str] = []
        previous = started_at
        seen_header = False

        def flush() -> None:
            if current is None:
                return
            content = "\n".join(body).strip("\n").rstrip()
            body.clear()
            if not content.strip(_SPACES + "\n"):
                return  # an empty message (an image or file the export leaves out)
            at, role, speaker = current
            if role == "system" and self.rules.system_messages == "drop":
                return
            messages.append(ParsedMessage(at=at, role=role, speaker=speaker, text=content))

        for line_no, raw in enumerate(lines, start=1):
            line = raw.strip(_SPACES)
            if line and any(p.search(line) for p in self.rules.system_lines):
                flush()
                current = (previous, "system", "")
                body.append(line)
                flush()
                current = None
                continue
            m = self._header(line) if line else None
            if m is not None:
                flush()
                speaker = m["speaker"].strip(_SPACES)
                day, clock = self._time_of(m, line_no)
                at = self._place(day, clock, previous, first=not seen_header, line_no=line_no)
                previous = at
                seen_header = True
                current = (at, self.role_of(speaker, visitor_names), speaker)
                continue
            if current is None:
                if line:
                    shown = line if len(line) <= 30 else line[:30] + "…"
                    raise self._problem(line_no, f"expected a speaker and time line, got {shown!r}")
                continue
            body.append(raw.rstrip(_SPACES))
        flush()
        if not messages:
            raise RowProblem(f"{self.column}: no messages in the transcript")
        return messages
