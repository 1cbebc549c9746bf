"""Statistics: the funnel from visits to arrivals."""

from typing import Any, Literal

from fastapi import APIRouter, Query

from yuyue.serving import schemas
from yuyue.serving.deps import AnyRole, Service, report_filters
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
