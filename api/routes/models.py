"""``/v1/models``: what jobs can ask for."""

from __future__ import annotations

import logging

import redis
from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from api.deps import ServicesDep, reject_unknown_query, require_api_key
from api.openapi import AUTH, error_responses
from api.schemas import ModelOut, ModelsOut
from core.catalog.announce import loaded_engines

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/models", tags=["models"],
                   dependencies=[Depends(require_api_key), Depends(reject_unknown_query)])


@router.get("", response_model=ModelsOut, responses=error_responses(*AUTH, "model_error"), summary="Offered models")
async def list_models(services: ServicesDep) -> ModelsOut:
    """Every published version, which one of each model is active, the default, and the precision workers
    loaded each in (`srgan models --json`)."""
    try:
        engines = await run_in_threadpool(loaded_engines, services.store.redis)
    except redis.RedisError as exc:  # the listing itself comes from the registry: still answer
        log.warning("cannot read the loaded engines from Redis: %s", exc)
        engines = {}
    listing = await run_in_threadpool(services.catalog.listing, engines)
    return ModelsOut(models=[ModelOut(**m) for m in listing["models"]], precision=listing["precision"])
