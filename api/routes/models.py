"""``/v1/models``: what jobs can ask for."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep, reject_unknown_query, require_api_key
from api.openapi import AUTH, error_responses
from api.schemas import ModelOut, ModelsOut
from core.catalog import offered_models

router = APIRouter(prefix="/v1/models", tags=["models"],
                   dependencies=[Depends(require_api_key), Depends(reject_unknown_query)])


@router.get("", response_model=ModelsOut, responses=error_responses(*AUTH, "model_error"), summary="Offered models")
async def list_models(settings: SettingsDep) -> ModelsOut:
    """Every published version, which one of each model is active, and the default (`srgan models --json`)."""
    models = await run_in_threadpool(offered_models, settings)
    return ModelsOut(models=[ModelOut(**m.to_json()) for m in models])
