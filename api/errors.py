"""Every error the API answers is JSON ``{"error": {"code": ..., "message": ...}}`` with a fitting status."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from model.errors import (
    ImageTooLarge,
    InvalidImage,
    InvalidParameter,
    ModelError,
    MultiFrame,
    SRGANError,
    UnsupportedFormat,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered as is: ``raise ApiError(404, "not_found", "no job ...")``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def status_for(exc: SRGANError) -> int:
    """The HTTP status of a typed model error found while checking a request."""
    if isinstance(exc, (UnsupportedFormat, InvalidImage)):
        return 415
    if isinstance(exc, (ImageTooLarge, InvalidParameter, MultiFrame)):
        return 422
    if isinstance(exc, ModelError):
        return 503
    return 400


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "upload_too_large", 415: "unsupported_media_type",
               422: "invalid_parameter", 429: "too_many_requests", 503: "unavailable"}


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app fully matches on the request's path (routers included)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(SRGANError)
    async def _model_error(_: Request, exc: SRGANError) -> JSONResponse:
        return error_response(status_for(exc), exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return error_response(422, "invalid_parameter", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        # Starlette's Allow names the methods of the first route on the path only
        if exc.status_code == 405 and (allowed := allowed_methods(request)):
            return error_response(405, code, f"{request.method} is not allowed here; allowed: {', '.join(allowed)}",
                                  {"Allow": ", ".join(allowed)})
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(redis.RedisError)
    async def _redis(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("Redis error while answering a request: %s", exc)
        # the error's kind only: its text names the internal Redis address
        return error_response(503, "unavailable", f"the job store does not answer ({type(exc).__name__})",
                              {"Retry-After": "5"})

    @app.exception_handler(Exception)  # Starlette re-raises it afterwards, so the server logs the traceback
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # answered by the outermost middleware, outside api.middleware: its header is set here
        return error_response(500, "internal_error", "an unexpected error happened; see the server's log",
                              {"X-Content-Type-Options": "nosniff"})
