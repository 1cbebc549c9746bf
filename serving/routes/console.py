"""The consultant console: one static page at ``/`` (not in the OpenAPI document)."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
def console() -> Response:
    page = STATIC / "console.html"
    if not page.exists():
        return JSONResponse({"detail": "console page not installed", "docs": "/docs"}, status_code=404)
    return FileResponse(page, media_type="text/html; charset=utf-8")
