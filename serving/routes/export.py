"""The export: stored chats as contract JSONL, personal data masked."""

from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime

import orjson
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from yuyue.serving import privacy
from yuyue.serving.audit import AuditAction
from yuyue.serving.deps import Analyst, Service, report_filters
from yuyue.serving.edge import RecentFilter
from yuyue.serving.errors import errors
from yuyue.serving.schemas import FILTER

router = APIRouter(tags=["analysts"])


@router.get(
    "/v1/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "one contract record (conversation.schema.json) per line, personal data masked",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        },
        **errors(401, 403, 422, 429, 503),
    },
)
def export(
    who: Analyst,
    service: Service,
    hospital: FILTER = None,
    department: FILTER = None,
    since: RecentFilter | None = None,
    until: RecentFilter | None = None,
) -> StreamingResponse:
    """Stored chats as contract JSONL with personal data masked: training data for ``yuyue train``."""
    filters = report_filters(who, hospital, department, None, since, until)
    records = service.export(filters)
    # the first batch is read before the answer starts: a failure there is a proper error status,
    # not a 200 whose stream is cut
    first = next(records, None)
    head = [] if first is None else [orjson.dumps(first) + b"\n"]
    scope = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(filters).items() if v}
    privacy.record(service.store, who, AuditAction.EXPORT, scope=orjson.dumps(scope).decode())
    lines = (orjson.dumps(rec) + b"\n" for rec in records)
    return StreamingResponse(_chain(head, lines), media_type="application/x-ndjson")


def _chain(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from rest
