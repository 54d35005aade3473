"""The shape of the service's own ASGI middlewares: HTTP requests go to `handle`, with their
headers read once; every other scope (lifespan, websockets) passes through untouched."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

Headers = dict[bytes, bytes]
"""A request's headers by lower-case name."""


class HttpMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, dict(scope.get("headers") or []), receive, send)

    async def handle(self, scope: Scope, headers: Headers, receive: Receive, send: Send) -> None:
        """Answer one HTTP request (`headers`: its headers, lower-case names)."""
        raise NotImplementedError
