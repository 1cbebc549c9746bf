"""Desk reports: per consultant and period, per traffic source; JSON or CSV (``format=csv``).

Supervisors, analysts and admins see every consultant; a consultant sees only their own chats (their
rows in the consultant report, their chats in the source report) and gets 403 asking for another's.
Every number is defined in docs/api.md ("Desk reports") and in :mod:`yuyue.serving.reports`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from yuyue.serving.auth import Caller, Role
from yuyue.serving.deps import AnyRole, Store, caller_hospitals
from yuyue.serving.errors import Forbidden, InvalidInput, errors
from yuyue.serving.reports import (
    DEFAULT_LIMIT,
    MAX_DAYS,
    MAX_LIMIT,
    SOURCE_DIMENSIONS,
    DayRange,
    ReportError,
    consultant_report,
    flat_rows,
    source_report,
)
from yuyue.serving.schemas import FILTER
from yuyue.serving.store import Filters

router = APIRouter(tags=["supervisors"])


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class ConcernStat(_Answer):
    raised: int = Field(description="chats in which the visitor raised it")
    share: float | None = Field(description="its share of all concerns raised")
    answered: int = Field(description="of those, chats where a consultant message answered it afterwards")
    answered_rate: float | None


class ReportNumbers(_Answer):
    visits: int = Field(description="chats opened (a visit with its trace)")
    chats: int = Field(description="opened chats with at least one visitor message")
    chat_rate: float | None = Field(description="chats / visits (有效对话率)")
    first_response_median_s: float | None = Field(
        description="median seconds from the first visitor message to the first consultant message after it"
    )
    first_response_mean_s: float | None
    replies: int = Field(description="consultant messages answering a visitor message")
    response_median_s: float | None = Field(
        description="median seconds a reply took, from the first visitor message it answered"
    )
    duration_median_s: float | None = Field(
        description="median seconds from the chat's start to its last message"
    )
    duration_mean_s: float | None
    duration_5_30_share: float | None = Field(description="share of chats lasting 5 to 30 minutes")
    contact: int
    booked: int
    arrived: int
    contact_rate: float | None = Field(description="of chats")
    booked_rate: float | None = Field(description="of chats (预约率)")
    arrived_rate: float | None = Field(description="of chats")
    arrived_of_booked: float | None = Field(description="arrivals / bookings (到诊率)")
    scored_chats: int = Field(description="chats with an expected score (the base of the adjusted rates)")
    expected_booked: float = Field(
        description="sum of the scored chats' lead booking scores (at open, without the consultant)"
    )
    expected_arrived: float
    booked_rate_adjusted: float | None = Field(description="(bookings − expected bookings) / scored chats")
    arrived_rate_adjusted: float | None = Field(description="(arrivals − expected arrivals) / scored chats")
    concern_chats: int = Field(description="chats whose texts were read for concerns")
    concerns: dict[str, ConcernStat]
    consultant_messages: int
    compliance_flagged: int
    compliance_flagged_rate: float | None
    suggestions_shown: int
    suggestions_with_feedback: int
    suggestions_used: int = Field(description="used as is or edited")
    suggestion_acceptance: float | None = Field(description="used / with feedback")
    graded_chats: int = Field(description="chats with an imported 对话等级 (grade)")
    grades: dict[str, float | None] = Field(
        description="each grade's share of the graded chats (极佳, 较好, 一般)"
    )


class ConsultantRow(ReportNumbers):
    period: str = Field(description="the day, the Monday of the ISO week, or YYYY-MM")
    consultant_id: str | None


class ConsultantReport(_Answer):
    from_: str = Field(alias="from")
    to: str
    period: str
    total: ReportNumbers
    rows: list[ConsultantRow]
    truncated: int = Field(description="groups left out past the limit")


class SourceRow(_Answer):
    period: str | None
    source: str | None = Field(description="the value of the dimension (paid: paid | organic | unknown)")
    visits: int
    chats: int
    chat_rate: float | None = Field(description="chats / visits (有效对话率)")
    contact: int
    booked: int
    arrived: int
    contact_rate: float | None
    booked_rate: float | None = Field(description="bookings / chats (预约率)")
    arrived_rate: float | None
    arrived_of_booked: float | None = Field(description="arrivals / bookings (到诊率)")
    arrived_of_visits: float | None
    scored_chats: int
    expected_booked: float
    expected_arrived: float
    booked_rate_adjusted: float | None
    arrived_rate_adjusted: float | None
    first_response_median_s: float | None
    duration_median_s: float | None


class SourceReport(_Answer):
    from_: str = Field(alias="from")
    to: str
    by: str
    period: str | None
    total: ReportNumbers
    rows: list[SourceRow]
    truncated: int


FORMAT_HELP = "json, or csv for a download"


@dataclass(frozen=True)
class Shared:
    """The parameters both reports take: the range, the chats' filters (scoped to the caller), the
    answer's format and the number of groups."""

    days: DayRange
    filters: Filters
    format: str
    limit: int


def _shared(
    who: AnyRole,
    first: date | None = Query(
        None, alias="from", description="first local day (YYYY-MM-DD); default 29 days before 'to'"
    ),
    last: date | None = Query(
        None,
        alias="to",
        description=f"last local day, included (default today); at most {MAX_DAYS} days in all",
    ),
    hospital: FILTER = None,
    department: FILTER = None,
    consultant: FILTER = None,
    format: Literal["json", "csv"] = Query("json", description=FORMAT_HELP),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=f"groups answered, 1 to {MAX_LIMIT}"),
) -> Shared:
    scope = Filters(hospital, department, _scope(who, consultant), hospitals=caller_hospitals(who, hospital))
    return Shared(_range(first, last), scope, format, limit)


SharedQuery = Annotated[Shared, Depends(_shared)]


def _scope(who: Caller, consultant: str | None) -> str | None:
    """The consultant filter as ``who`` may see it: a consultant only their own (403 for another's)."""
    if who.role != Role.CONSULTANT:
        return consultant
    if consultant is not None and consultant != who.consultant_id:
        raise Forbidden(
            f"a consultant sees only their own reports; {consultant!r} is not {who.consultant_id!r}"
        )
    return who.consultant_id


def _range(first: date | None, last: date | None) -> DayRange:
    try:
        return DayRange.checked(first, last)
    except ReportError as exc:
        raise InvalidInput(str(exc)) from None


def _csv(rows: list[dict[str, Any]], name: str) -> Response:
    flat = list(flat_rows(rows))
    buf = io.StringIO()
    if flat:
        writer = csv.DictWriter(buf, fieldnames=list(flat[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in flat)
    return Response(
        # a BOM so that spreadsheet programs read the UTF-8 (Chinese values) right
        "\ufeff" + buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON, or CSV"}
}


@router.get(
    "/v1/reports/consultants",
    response_model=ConsultantReport,
    response_model_by_alias=True,
    responses={**_CSV, **errors(401, 403, 422, 429, 503)},
)
def consultants(
    q: SharedQuery,
    store: Store,
    period: Literal["day", "week", "month"] = Query(
        "day", description="day, week (ISO, from Monday) or month"
    ),
) -> Any:
    """Per consultant and period: chats, first-response and response times, duration, contact /
    booking / arrival rates and the same adjusted for the leads (actual − the sum of the chats' lead
    scores: each scored at open without the consultant), concerns and how often each was answered,
    compliance warnings, suggestion acceptance, imported 对话等级."""
    try:
        out = consultant_report(store, q.days, period, q.filters, q.limit)
    except ReportError as exc:
        raise InvalidInput(str(exc)) from None
    if q.format == "csv":
        return _csv(out["rows"], f"yuyue-consultants-{period}-{q.days.first}-{q.days.last}")
    return out


@router.get(
    "/v1/reports/sources",
    response_model=SourceReport,
    response_model_by_alias=True,
    responses={**_CSV, **errors(401, 403, 422, 429, 503)},
)
def sources(
    q: SharedQuery,
    store: Store,
    by: Literal[SOURCE_DIMENSIONS] = Query(  # type: ignore[valid-type]
        "engine", description="one of " + ", ".join(SOURCE_DIMENSIONS)
    ),
    period: Literal["day", "week", "month"] | None = Query(
        None, description="split per period (default: none)"
    ),
) -> Any:
    """Per traffic source (engine, keyword category, paid vs organic from the landing URL's click
    parameters, landing page, region): visits → chats → contact → booked → arrived with their rates,
    and the adjusted booking and arrival rates. Click counts (点击, 有效点击) are not known to Yuyue."""
    try:
        out = source_report(store, q.days, by, q.filters, period, q.limit)
    except ReportError as exc:
        raise InvalidInput(str(exc)) from None
    if q.format == "csv":
        return _csv(out["rows"], f"yuyue-sources-{by}-{q.days.first}-{q.days.last}")
    return out
