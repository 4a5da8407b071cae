"""What cloud_link needs from the rest of the agent, as small interfaces.

The agent's storage (edge_agent.storage.Database) implements `DurableStore`; cloud_link never imports it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class EventSink(Protocol):
    """Where a feature's events go: the agent's event bus (cloud_link.bus), which has made each event durable in
    the outbox when the call returns. The one interface every producer is given (lockers, kiosks, orders,
    picking, labels, the in-store device relay)."""

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> Any: ...


class StateSink(EventSink, Protocol):
    """An event sink that also keeps each device's latest state (retained at the cloud, one row per device)."""

    async def put_state(self, device_id: str, state: dict[str, Any]) -> Any: ...


class DurableStore(Protocol):
    """A SQLite database with one group-committing writer."""

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in a write transaction; return once it is committed and fsync'd."""
        ...

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a short read on the caller's thread against a consistent snapshot."""
        ...
