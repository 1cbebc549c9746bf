"""Operations: liveness, readiness, Prometheus metrics (no API key)."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from yuyue.serving import schemas
from yuyue.serving.deps import State

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=schemas.Health)
async def healthz() -> dict[str, str]:  # on the event loop: no thread, no dependency to wait for
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=schemas.Readiness,
    responses={503: {"model": schemas.Readiness, "description": "not ready: the problems say why"}},
)
def readyz(state: State) -> JSONResponse:
    problems = []
    if not state.models.ready:
        problems.append("no model loaded")
    try:
        with state.engine.connect() as cx:
            cx.exec_driver_sql("SELECT 1")
    except Exception as exc:
        problems.append(f"database: {str(getattr(exc, 'orig', None) or exc).strip()[:200]}")
    if state.settings.redis_url and not state.service.cache.ping():  # bounded: redis_timeout_s, breaker
        problems.append("redis: not answering (sessions and rate limits fall back to this process)")
    status = 200 if not problems else 503
    return JSONResponse(
        {"ready": not problems, "model_version": state.models.version, "problems": problems},
        status_code=status,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(state: State) -> Response:
    body, media_type = state.metrics.exposition()
    return Response(body, media_type=media_type)
