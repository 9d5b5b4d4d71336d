"""The OpenAPI document as users need it: real statuses and error codes per route, headers, the API key
scheme, and ``/docs`` and ``/redoc`` served offline (their assets from the ``fastapi-offline`` package).

Routes declare their errors with :func:`error_responses` by code; each status then documents exactly
the codes that route can answer, as an enum, so a client (or schemathesis) can check them.
"""

from __future__ import annotations

from collections import defaultdict
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

DOCS_ASSETS = "/docs-assets"

ERROR_CODES: dict[str, tuple[int, str]] = {
    "bad_multipart": (400, "the multipart body cannot be parsed, or has no closing boundary"),
    "client_disconnected": (400, "the client went away during the upload"),
    "invalid_host": (400, "the `Host` header is not in `SRGAN_ALLOWED_HOSTS`"),
    "unauthorized": (401, "an API key is required"),
    "forbidden": (403, "the API key is not valid"),
    "link_invalid": (403, "the signed link's id, expiry or signature was changed"),
    "link_expired": (403, "the signed link is past its expiry"),
    "not_found": (404, "unknown, malformed or expired job or batch id, or another API key's"),
    "method_not_allowed": (405, "the path exists, the method does not (see `Allow`)"),
    "upload_timeout": (408, "the upload stalled or was slower than the minimum rate"),
    "not_ready": (409, "the job is queued or running (see `Retry-After`)"),
    "job_failed": (409, "the job failed: it has no result"),
    "job_canceled": (409, "the job was canceled: it has no result"),
    "job_aborted": (409, "the job's deadline passed before it started: it has no result"),
    "job_finished": (409, "the job had already ended"),
    "nothing_ready": (409, "no job of the batch has a result yet (see `Retry-After`)"),
    "idempotency_conflict": (409, "the `Idempotency-Key` was used for another request"),
    "idempotency_in_progress": (409, "the first request with this `Idempotency-Key` is still being handled "
                                "(see `Retry-After`)"),
    "upload_too_large": (413, "the upload is over `max_upload_bytes`"),
    "unsupported_media_type": (415, "the request is not multipart/form-data"),
    "unsupported_format": (415, "not an image in a format we read"),
    "invalid_image": (415, "empty, truncated or damaged image"),
    "invalid_parameter": (422, "a bad or unknown form field or query parameter"),
    "too_many_fields": (422, "more multipart parts than `max_form_fields`"),
    "too_many_files": (422, "more files than `max_batch_files` in a batch"),
    "image_too_large": (422, "too many input or output pixels, or a decompression bomb"),
    "multi_frame": (422, "an animation or a multi-page file"),
    "too_expensive": (422, "the estimated engine time exceeds the time limit"),
    "url_refused": (422, "a `url` input to an address the outbound guard refuses (also after a redirect)"),
    "url_fetch_failed": (422, "a `url` input that could not be fetched (error status, timeout, redirects)"),
    "webhook_refused": (422, "a webhook URL that is not http(s), does not resolve, or is not public"),
    "webhooks_disabled": (422, "the server has no `SRGAN_WEBHOOK_SECRET`"),
    "queue_full": (429, "`max_queued_jobs` are waiting (see `Retry-After`)"),
    "rate_limited": (429, "the API key's request rate limit is used up (see `Retry-After`, `RateLimit-*`)"),
    "quota_exceeded": (429, "the API key's queued-jobs or pixels quota is used up (see `Retry-After`)"),
    "queue_unavailable": (503, "the broker did not take the job"),
    "storage_unavailable": (503, "the object store did not answer; try again"),
    "model_error": (503, "the configured model is missing or cannot be read"),
    "unavailable": (503, "Redis does not answer (see `Retry-After`)"),
    "no_worker": (503, "`srgan serve`'s workers died too often and wait out their restart budget (see "
                  "`Retry-After`)"),
}

AUTH = ("unauthorized", "forbidden")
ALWAYS = ("invalid_parameter", "rate_limited", "unavailable")
"""What every /v1 route can answer: an unknown query parameter, a key over its rate, Redis away."""

_RETRY_AFTER = {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}
_HEADERS_BY_STATUS: dict[int, dict[str, Any]] = {
    409: {"Retry-After": {**_RETRY_AFTER, "description": "with `not_ready`: seconds before asking again"}},
    429: {"Retry-After": _RETRY_AFTER,
          **{f"RateLimit-{name}": {"description": text, "schema": {"type": "integer"}} for name, text in (
              ("Limit", "requests allowed in the window (per-key rate limits)"),
              ("Remaining", "requests left in the window"),
              ("Reset", "seconds until the window resets"))}},
    503: {"Retry-After": _RETRY_AFTER},
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    405: {"Allow": {"description": "every method the path accepts", "schema": {"type": "string"}}},
}


def error_schema(codes: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string", "enum": sorted(codes)}, "message": {"type": "string"}},
        }},
    }


def error_responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route answering these error codes (plus those of :data:`ALWAYS`)."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in dict.fromkeys((*codes, *ALWAYS)):
        by_status[ERROR_CODES[code][0]].append(code)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, listed in sorted(by_status.items()):
        text = "; ".join(f"`{c}`: {ERROR_CODES[c][1]}" for c in listed)
        responses[status] = {"description": text,
                             "content": {"application/json": {"schema": error_schema(listed)}}}
        if status in _HEADERS_BY_STATUS:
            responses[status]["headers"] = _HEADERS_BY_STATUS[status]
    return responses


SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "one of `SRGAN_API_KEYS`, when keys are configured"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "the same key as `Authorization: Bearer KEY`"},
}


def form_fields(*models: type[BaseModel], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON schemas of ``models``' fields as multipart form fields. A form part is text or absent, never
    null: an optional field's ``null`` branch is dropped (leaving the field out gives its default), so the
    document offers nothing the server refuses (a ``null`` would arrive as the text "null")."""
    fields: dict[str, Any] = {}
    for model in models:
        for name, schema in model.model_json_schema()["properties"].items():
            if name in exclude:
                continue
            branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
            if len(branches) == 1:
                schema = {**{k: v for k, v in schema.items() if k not in ("anyOf", "default")}, **branches[0]}
            fields[name] = schema
    return fields


def install_openapi(app: FastAPI, *, keys_required: bool) -> None:
    """Add the API key schemes to the document (required on /v1 when keys are set) and serve the docs offline."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                 description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            requirement: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
            if not keys_required:
                requirement.append({})
            for path, operations in schema.get("paths", {}).items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = requirement
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - docs",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)
