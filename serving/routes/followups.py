"""The follow-up queue: leads and bookings worth a call, ranked."""

from typing import Any

from fastapi import APIRouter, Query

from yuyue.serving import schemas
from yuyue.serving.deps import AnyRole, Service, report_filters
from yuyue.serving.edge import RecentFilter
from yuyue.serving.errors import errors
from yuyue.serving.schemas import FILTER

router = APIRouter(tags=["supervisors"])


@router.get(
    "/v1/followups",
    response_model=schemas.FollowupPage,
    responses=errors(401, 403, 422, 429, 503),
)
def followups(
    who: AnyRole,
    service: Service,
    hospital: FILTER = None,
    department: FILTER = None,
    consultant: FILTER = None,
    since: RecentFilter | None = Query(None, description="chats started at or after (with offset)"),
    until: RecentFilter | None = Query(None, description="chats started before (with offset)"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    """Leads that left contact without booking and bookings at risk of not arriving, ranked, with reasons."""
    return service.followups(
        report_filters(who, hospital, department, consultant, since, until), limit, offset
    )
