"""Administration: switch the model, say which model is in use and who is calling."""

from typing import Any

from fastapi import APIRouter

from yuyue.serving import schemas
from yuyue.serving.auth import require_group
from yuyue.serving.deps import Analyst, State, Who
from yuyue.serving.errors import errors, http_error

router = APIRouter(tags=["admin"])


@router.post(
    "/v1/admin/reload",
    response_model=schemas.Reloaded,
    response_model_exclude_unset=True,  # previous / detail only when they apply
    responses=errors(401, 403, 429, 503),
)
def reload(who: Analyst, state: State) -> dict[str, Any]:
    """Switch to the registry's current champion (requests in flight finish on the old model) and follow
    the hospitals' and departments' own models (the ``hospital-*`` and ``department-*`` aliases: new ones
    loaded, removed ones dropped, so their chats go back to the next model). The answer's ``hospitals``
    maps each hospital served by its own model to that model's version ({} when there is none), and
    ``departments`` each department likewise (a hospital's own model comes first); ``previous`` comes when
    the champion changed, ``detail`` when none is registered. Reloading concerns every hospital, so keys
    scoped to hospitals get 403."""
    require_group(who, "reloading the model")
    try:
        return state.reload()
    except Exception as exc:
        raise http_error(503, f"could not load the champion: {exc}") from None


@router.get("/v1/model", response_model=schemas.ModelInfo, responses=errors(401, 429, 503))
def model_info(who: Who, state: State) -> dict[str, Any]:
    """The model in use (version, what it contains) and who is calling (key name, role, consultant id)."""
    caller = {"name": who.name, "role": who.role, "consultant_id": who.consultant_id}
    if not state.models.ready:
        return {"version": None, "caller": caller}
    model, version = state.models.get()
    return {"version": version, **model.describe(), "caller": caller}
