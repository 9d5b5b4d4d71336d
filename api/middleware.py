"""Middleware for the browser-facing edges: host allow-list, CORS, headers on every answer, and the exposure
guard of an app not started by ``srgan serve``."""

from __future__ import annotations

import ipaddress
import json

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import Settings, exposure_gaps

EXPOSED_HEADERS = ["Location", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset",
                   "RateLimit-Policy", "Content-Disposition", "Preference-Applied", "Idempotent-Replayed"]
"""Headers a cross-origin page may read (CORS), when ``cors_origins`` allows one."""

ALLOWED_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key", "Prefer", "Cancel-After",
                   "Last-Event-ID"]
"""Request headers a cross-origin page may send (CORS): the key, and those of ``POST /v1/jobs`` and SSE."""


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""Always answered: a local health check uses them, and a rebinding page cannot send them as its Host."""


def _host_allowed(host: str, patterns: list[str]) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    for pattern in [*patterns, *LOOPBACK_NAMES]:
        pattern = pattern.strip("[]").lower()
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


class HostAllowList:
    """Answer ``400 invalid_host`` to a request whose ``Host`` is not listed (DNS rebinding) nor a loopback name."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "")
        if _host_allowed(host, self.hosts):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": {"code": "invalid_host", "message":
                                     "this host name is not served here (SRGAN_ALLOWED_HOSTS)"}}).encode()
        await send({"type": "http.response.start", "status": 400, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
"""The page (``GET /``) loads its script and style from /static, images from blobs; nothing may frame it."""

DOCS_CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
"""/docs and /redoc start their bundles with an inline script."""

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin"}


def _on_public_address(server: tuple[str, int | None] | None) -> bool:
    """The connection came in on an IP address other than loopback (not a Unix socket, not a test client)."""
    if not server or server[1] is None:
        return False
    try:
        return not ipaddress.ip_address(str(server[0]).strip("[]")).is_loopback
    except ValueError:
        return False


class ExposureGuard:
    """An app not started by ``srgan serve`` (``uvicorn --factory api.main:create_app``) cannot tell where it
    is bound: it refuses (``503 insecure_exposure``) each request that arrives on a non-loopback address while
    API keys or a host allow-list are missing, the check ``srgan serve`` makes before it starts."""

    def __init__(self, app: ASGIApp, missing: list[str]) -> None:
        self.app, self.missing = app, missing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] not in ("http", "websocket") or not _on_public_address(server):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        address = server[0] if server else "?"
        body = json.dumps({"error": {"code": "insecure_exposure", "message": (
            f"this server is reachable beyond loopback ({address}) without {' or '.join(self.missing)}: set "
            "them (docs/service.md, \"Exposing the service\"), bind to 127.0.0.1, or set SRGAN_INSECURE=true")}})
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body.encode()})


class ResponseHeaders:
    """Security headers on every answer (``SECURITY_HEADERS``, a Content-Security-Policy with
    ``frame-ancestors 'none'``), and the caller's ``RateLimit-*`` headers.

    A route's dependencies leave the rate-limit headers in ``request.state.rate_limit_headers``
    (``api.deps.require_api_key``); they are added here so file and error answers carry them too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                docs = scope.get("path") in ("/docs", "/redoc")
                headers["Content-Security-Policy"] = DOCS_CONTENT_SECURITY_POLICY if docs else CONTENT_SECURITY_POLICY
                for name, value in (scope.get("state") or {}).get("rate_limit_headers", {}).items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_middleware(app: FastAPI, settings: Settings, *, exposure_checked: bool) -> None:
    """CORS only for listed origins; the host allow-list; the exposure guard unless ``srgan serve`` checked
    the address it binds (``exposure_checked``); headers on every answer (outermost)."""
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=ALLOWED_HEADERS,
                           expose_headers=EXPOSED_HEADERS, max_age=600)
    if settings.allowed_hosts:  # `srgan serve` beyond loopback refuses to start without it (unless --insecure)
        app.add_middleware(HostAllowList, hosts=settings.allowed_hosts)
    missing = exposure_gaps(settings)
    if not exposure_checked and missing and not settings.insecure:
        app.add_middleware(ExposureGuard, missing=missing)
    app.add_middleware(ResponseHeaders)
