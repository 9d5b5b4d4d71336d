"""Middleware for the browser-facing edges: host allow-list, CORS, and headers on every answer."""

from __future__ import annotations

import json

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import Settings

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


class ResponseHeaders:
    """``X-Content-Type-Options: nosniff`` on every answer, and the caller's ``RateLimit-*`` headers.

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
                headers["X-Content-Type-Options"] = "nosniff"
                for name, value in (scope.get("state") or {}).get("rate_limit_headers", {}).items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_middleware(app: FastAPI, settings: Settings) -> None:
    """CORS only for listed origins; the host allow-list; headers on every answer (outermost)."""
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=ALLOWED_HEADERS,
                           expose_headers=EXPOSED_HEADERS, max_age=600)
    if settings.allowed_hosts:  # `srgan serve` beyond loopback refuses to start without it (unless --insecure)
        app.add_middleware(HostAllowList, hosts=settings.allowed_hosts)
    app.add_middleware(ResponseHeaders)
