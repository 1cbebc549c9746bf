"""The consultant console: one static page at ``/`` and its page scripts (not in the OpenAPI document)."""

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response

STATIC = Path(__file__).resolve().parents[1] / "static"
_PAGE_SCRIPT = re.compile(r"page_[a-z]{1,32}")

router = APIRouter()


@router.get("/", include_in_schema=False)
def console() -> Response:
    page = STATIC / "console.html"
    if not page.exists():
        return JSONResponse({"detail": "console page not installed", "docs": "/docs"}, status_code=404)
    return FileResponse(page, media_type="text/html; charset=utf-8")


@router.get("/console/{name}.js", include_in_schema=False)
def console_page_script(name: str) -> Response:
    """One console page's script (``serving/static/page_<id>.js``); any other name is 404."""
    script = STATIC / f"{name}.js"
    if not _PAGE_SCRIPT.fullmatch(name) or not script.is_file():
        return JSONResponse({"detail": f"no console script named {name!r}"}, status_code=404)
    return FileResponse(script, media_type="text/javascript; charset=utf-8")
