"""What every feature's wiring shares: the configuration, storage, the event bus, metrics, the command registry,
the agent's clock, and the secrets, read once."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from cloud_link.bus import EventBus
from cloud_link.commands import CommandRegistry
from edge_agent.config import AgentConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.services.agent_clock import AgentClock
from edge_agent.services.pickup_codes import StoreKeyError, store_key
from edge_agent.storage import Database


class StartupError(Exception):
    """The agent cannot start as configured; `problems` says why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class BusSink:
    """The event bus as the devices layer and the services see it (cloud_link.ports.StateSink, and the device
    relay's DeviceSink): events, device state, events made from an MQTT message, bad input counted."""

    bus: EventBus
    metrics: AgentMetrics

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
        await self.bus.publish(event_type, payload)

    async def publish_from_message(
        self, event_type: str, payload: dict[str, Any], key: str, *, redelivered: bool
    ) -> bool:
        return await self.bus.publish_from_message(event_type, payload, key, redelivered=redelivered) is not None

    async def put_state(self, device_id: str, state: dict[str, Any]) -> None:
        await self.bus.outbox.put_state(device_id, state)

    def bad_input(self, source: str, reason: str) -> None:
        self.metrics.bad_input(source, reason)


@dataclass
class WiringContext:
    config: AgentConfig
    db: Database
    bus: EventBus
    metrics: AgentMetrics
    registry: CommandRegistry
    clock: AgentClock
    env: dict[str, str] | None = None
    sink: BusSink = field(init=False)

    def __post_init__(self) -> None:
        self.sink = BusSink(self.bus, self.metrics)

    @functools.cached_property
    def _store_key(self) -> bytes | StoreKeyError:
        try:
            return store_key(self.env)
        except StoreKeyError as exc:
            return exc

    def store_key(self) -> bytes:
        """The store's HMAC key (pickup codes, courier codes, form tokens), read once; StoreKeyError when it is
        missing or too short (secrets.missing_secrets has already refused to start a configuration needing it)."""
        key = self._store_key
        if isinstance(key, StoreKeyError):
            raise key
        return key
