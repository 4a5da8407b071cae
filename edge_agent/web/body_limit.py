"""Every request body bounded, on every route, before any of it is parsed.

FastAPI reads and parses a JSON body whole before the route (and its sign-in check) runs: a 200 MB body
streamed in chunks to a public route took the agent from 51 MB to 852 MB of memory. This pure ASGI middleware
(not `BaseHTTPMiddleware`: it costs every request, the scan links' hot path included) is the outermost layer:

- a `Content-Length` over the route's limit, or one that is not a number, is answered 413 at once, unread;
- a body without one (chunked) is counted as it streams in; past the limit the app gets a disconnect instead of
  more bytes, and the client a 413 (if the app has not answered yet), and the connection is closed;
- requests without a body (GET, HEAD, ...) pass straight through, untouched.

Limits by path, first match: the CSV imports and the configuration editor get what their files need; public
routes (locker screens, kiosks, scan links, sign-in) a small one; everything else, signed-in JSON, a moderate one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KIB = 1024
# (path prefix, bytes), first match wins.
LIMITS: tuple[tuple[str, int], ...] = (
    # Twice pairing_api.MAX_UPLOAD_BYTES (8 MiB): a file a little too large gets the route's own 413 and message.
    ("/api/catalog/import", 16 * KIB * KIB),
    ("/api/pairing/import", 16 * KIB * KIB),
    ("/api/config", 2 * KIB * KIB),  # a TOML file of up to 256 KiB, JSON-escaped
    ("/s/", 4 * KIB),  # the order form: a token and a quantity
    ("/locker/", 16 * KIB),
    ("/kiosk/", 16 * KIB),  # kiosk_api.MAX_BODY
    ("/api/auth/", 16 * KIB),
)
DEFAULT_LIMIT = 256 * KIB
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


def limit_for(path: str, limits: Sequence[tuple[str, int]] = LIMITS, default: int = DEFAULT_LIMIT) -> int:
    for prefix, limit in limits:
        if path.startswith(prefix):
            return limit
    return default


class BodyTooLargeError(HTTPException):
    """Raised from `receive` once a streamed body passes its limit. An HTTPException, so that the app's own
    handlers answer it as the 413 it is (FastAPI turns any other error while reading a body into a 400)."""

    def __init__(self, limit: int) -> None:
        detail: Any = {"error": "too_large", "message": f"the request body is limited to {limit} bytes"}
        super().__init__(413, detail)  # FastAPI's handler answers a dict detail as JSON


class BodyLimit:
    def __init__(
        self, app: ASGIApp, *, limits: Sequence[tuple[str, int]] = LIMITS, default: int = DEFAULT_LIMIT,
        on_refused: Any = None,
    ) -> None:
        self.app = app
        self.limits = tuple(limits)
        self.default = default
        self.on_refused = on_refused  # on_refused(path): counted as bad input by the caller's metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is None and not chunked and scope["method"] in _BODYLESS:
            await self.app(scope, receive, send)  # the common case: nothing to count
            return
        limit = limit_for(scope["path"], self.limits, self.default)
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, send, limit)
            return
        received = 0
        answered = False
        over = False

        async def counted_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLargeError(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                if over:  # the rest of the body stays unread: this connection cannot carry another request
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLargeError:
            if not answered:
                await self._refuse(scope, send, limit)

    async def _refuse(self, scope: Scope, send: Send, limit: int) -> None:
        if self.on_refused is not None:
            self.on_refused(scope["path"])
        body = json.dumps({"detail": BodyTooLargeError(limit).detail})
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),  # the rest of the body is not read: the connection cannot be reused
            ],
        })
        await send({"type": "http.response.body", "body": body.encode()})
