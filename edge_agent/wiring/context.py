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
from edge_agent.secrets import LOCAL_BROKER_PASSWORD, read_secret
from edge_agent.services.agent_clock import AgentClock
from edge_agent.services.catalog import ProductCatalog
from edge_agent.services.pickup_codes import StoreKeyError, store_key
from edge_agent.storage import Database
from mqtt_io.driver import Endpoint


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


class LiveRelay:
    """The web UI's live stream as the features see it: `broadcast(event, data)`. The web UI's wiring attaches its
    hub once the hub exists (it needs the links the features build); before that, and without a web UI,
    broadcasts go nowhere: nobody is watching."""

    def __init__(self) -> None:
        self._hub: Any = None

    def attach(self, hub: Any) -> None:
        self._hub = hub

    def broadcast(self, event: str, data: Any) -> None:
        if self._hub is not None:
            self._hub.broadcast(event, data)


@dataclass
class WiringContext:
    config: AgentConfig
    db: Database
    bus: EventBus
    metrics: AgentMetrics
    registry: CommandRegistry
    clock: AgentClock
    catalog: ProductCatalog
    env: dict[str, str] | None = None
    sink: BusSink = field(init=False)
    live: LiveRelay = field(init=False)

    def __post_init__(self) -> None:
        self.sink = BusSink(self.bus, self.metrics)
        self.live = LiveRelay()

    @functools.cached_property
    def _store_key(self) -> bytes | StoreKeyError:
        try:
            return store_key(self.env)
        except StoreKeyError as exc:
            return exc

    def local_endpoint(self, client_id: str) -> Endpoint:
        """A connection to the in-store broker (the device relay and the Wi-Fi labels each have one)."""
        lb = self.config.local_broker
        return Endpoint(
            host=lb.host,
            port=lb.port,
            client_id=client_id,
            keepalive=30,
            # Persistent: what devices publish while the agent restarts waits at the broker.
            session_expiry=86400,
            username=lb.username,
            password=read_secret(LOCAL_BROKER_PASSWORD, self.env) if lb.username else None,
        )

    def store_key(self) -> bytes:
        """The store's HMAC key (pickup codes, courier codes, form tokens), read once; StoreKeyError when it is
        missing or too short (secrets.missing_secrets has already refused to start a configuration needing it)."""
        key = self._store_key
        if isinstance(key, StoreKeyError):
            raise key
        return key
