"""Statistics: the funnel from visits to arrivals; compliance hits of consultant messages."""

from typing import Any, Literal

from fastapi import APIRouter, Query

from yuyue.serving import schemas
from yuyue.serving.compliance_report import COMPLIANCE_GROUPS, ComplianceReport, compliance_report
from yuyue.serving.deps import AnyRole, Service, Store, report_filters
from yuyue.serving.edge import RecentFilter
from yuyue.serving.errors import errors
from yuyue.serving.schemas import FILTER
from yuyue.serving.store import FUNNEL_GROUPS

router = APIRouter(tags=["supervisors"])


@router.get(
    "/v1/stats/funnel",
    response_model=schemas.Funnel,
    responses=errors(401, 403, 422, 429, 503),
)
def funnel(
    who: AnyRole,
    service: Service,
    group_by: Literal[tuple(FUNNEL_GROUPS)] | None = Query(  # type: ignore[valid-type]
        None, description="one of " + ", ".join(FUNNEL_GROUPS)
    ),
    hospital: FILTER = None,
    department: FILTER = None,
    consultant: FILTER = None,
    since: RecentFilter | None = None,
    until: RecentFilter | None = None,
) -> dict[str, Any]:
    """visits → chats → contact → booked → arrived, overall or grouped; plus suggestion acceptance."""
    return service.funnel(group_by, report_filters(who, hospital, department, consultant, since, until))


@router.get(
    "/v1/stats/compliance",
    response_model=ComplianceReport,
    responses=errors(401, 403, 422, 429, 503),
)
def compliance(
    who: AnyRole,
    store: Store,
    group_by: Literal[COMPLIANCE_GROUPS] | None = Query(  # type: ignore[valid-type]
        None, description="one of " + ", ".join(COMPLIANCE_GROUPS)
    ),
    hospital: FILTER = None,
    department: FILTER = None,
    consultant: FILTER = None,
    since: RecentFilter | None = Query(None, description="messages sent at or after (with a UTC offset)"),
    until: RecentFilter | None = Query(None, description="messages sent before (with a UTC offset)"),
) -> dict[str, Any]:
    """Consultant messages checked by the compliance guard and flagged, by rule category, overall and
    per consultant, category or day, with the latest flagged messages as examples (personal data
    masked). Supervisors, analysts and admins see every consultant; a consultant sees only their own."""
    filters = report_filters(who, hospital, department, consultant, since, until)
    return compliance_report(store, group_by, filters)
