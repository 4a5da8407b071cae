"""Device state to the cloud, coalesced: the latest per device, written at most once per window.

Every state change of a device (availability, announce, its own state) replaces what is pending for it.
The first change after a quiet spell is written at once; further changes within `window_s` wait for the
end of the window, and only the latest of each device is written. So a device flapping a hundred times a
second costs one SQLite write (and one cloud message at most) per window, not a hundred.

What is pending lives in memory only: device state is retained on the in-store broker, so after a crash
the agent gets it again when it re-subscribes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

PutState = Callable[[str, dict[str, Any]], Awaitable[Any]]


class StateCoalescer:
    def __init__(self, put_state: PutState, window_s: float = 1.0) -> None:
        self._put_state = put_state
        self.window_s = window_s
        self._pending: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._last_flush = float("-inf")
        self.updates = 0
        self.writes = 0

    def update(self, device_id: str, state: dict[str, Any]) -> None:
        self.updates += 1
        self._pending[device_id] = state
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            wait = self._last_flush + self.window_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_flush = loop.time()
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for device_id, state in pending.items():
            try:
                await self._put_state(device_id, state)
                self.writes += 1
            except Exception as exc:  # disk trouble: keep it (unless superseded) for the next window
                log.error("could not store the state of device %s: %s", device_id, exc)
                self._pending.setdefault(device_id, state)
                self._wake.set()
