"""A device gateway's sink for tests: records every event it is given and every bad input counted."""

from __future__ import annotations

from typing import Any


class RecordingDeviceSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.bad: list[str] = []

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
        self.events.append((event_type, payload))

    async def publish_from_message(
        self, event_type: str, payload: dict[str, Any], key: str, *, redelivered: bool
    ) -> bool:
        await self.publish_event(event_type, payload)
        return True

    async def put_state(self, device_id: str, state: dict[str, Any]) -> None:
        return None

    def bad_input(self, source: str, reason: str) -> None:
        self.bad.append(reason)
