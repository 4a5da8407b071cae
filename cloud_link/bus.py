"""The in-process event bus: every event is made durable in the outbox first, then fanned out.

Services publish here (never into each other). Local subscribers (the dashboard's live view, a
service that reacts to another's events) get an `Event` only after it is committed, so nothing they
see can be lost afterwards. A subscriber has a bounded queue: one that falls behind loses its oldest
undelivered events (counted in `dropped`), and never slows producers or the cloud link down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from cloud_link.events import Event
from cloud_link.outbox import Outbox

log = logging.getLogger(__name__)


class Subscription:
    def __init__(self, bus: EventBus, prefixes: tuple[str, ...], maxsize: int) -> None:
        self._bus = bus
        self.prefixes = prefixes
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.closed = False

    def matches(self, event_type: str) -> bool:
        return not self.prefixes or event_type.startswith(self.prefixes)

    def offer(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def get_nowait(self) -> Event | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        self.closed = True
        self._bus.unsubscribe(self)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while not self.closed:
            yield await self._queue.get()


class EventBus:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._subscriptions: list[Subscription] = []

    async def publish(self, event_type: str, payload: dict[str, Any]) -> Event:
        """Durable first (raises OutboxFullError or EventError otherwise), then to local subscribers."""
        event = await self.outbox.publish(event_type, payload)
        self._fan_out(event)
        return event

    async def publish_from_message(
        self, event_type: str, payload: dict[str, Any], key: str, *, redelivered: bool
    ) -> Event | None:
        """As `publish`, for an event made from an MQTT message (Outbox.publish_from_message): None when a
        redelivered message was stored before."""
        event = await self.outbox.publish_from_message(event_type, payload, key, redelivered=redelivered)
        if event is not None:
            self._fan_out(event)
        return event

    def _fan_out(self, event: Event) -> None:
        for sub in self._subscriptions:
            if sub.matches(event.type):
                sub.offer(event)

    def subscribe(self, *prefixes: str, maxsize: int = 1000) -> Subscription:
        """Events whose type starts with one of `prefixes` (all events when none are given)."""
        sub = Subscription(self, prefixes, maxsize)
        self._subscriptions.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
