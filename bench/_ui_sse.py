"""bench.ui's live-stream clients: each its own HTTP connection to /api/live, parsing server-sent events and
noting when each `device` event arrived (time.monotonic)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx


class SseClient:
    def __init__(self, base_url: str, cookies: httpx.Cookies) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, cookies=cookies, timeout=httpx.Timeout(30, read=60))
        self.opened = asyncio.Event()  # the first event (the snapshot) arrived
        self.status: int | None = None
        self.device_events: list[tuple[float, dict[str, Any]]] = []
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async with self.http.stream("GET", "/api/live") as response:
                self.status = response.status_code
                event = "message"
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        if event == "device":
                            self.device_events.append((time.monotonic(), json.loads(line[6:])))
                        self.opened.set()
                        event = "message"
        except (httpx.HTTPError, OSError) as exc:
            self.error = repr(exc)
        finally:
            self.opened.set()

    def first(self, device_id: str, key: str, value: object, after: float) -> float | None:
        """Arrival time of the first `device` event, after `after`, whose state says `key` is `value`."""
        for at, data in self.device_events:
            state = data.get("state") or {}
            if at >= after and data.get("id") == device_id and state.get(key) is value:
                return at
        return None

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.http.aclose()
