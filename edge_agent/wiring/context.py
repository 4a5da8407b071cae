"""What every feature's wiring shares: the configuration, storage, the event bus, metrics, the command registry,
the agent's clock, the secrets, read once, and `Running`, where each feature registers what it runs and how it
stops (as Home Assistant's `entry.async_on_unload`: the runtime knows no feature by name)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
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

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Coroutine[Any, Any, Any]]


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


class Running:
    """What the features built hand the runtime, in the order they registered it.

    - `task(name, run)`: a background task, started once everything is built, cancelled when the agent stops.
    - `serve(name, run)`: a task that ends by itself once its `on_stop` callback asked it to (the web servers:
      cancelling one would cut its connections mid-answer).
    - `on_stop(fn)`: called when the shutdown begins, after the background tasks were cancelled (end live streams,
      ask servers to finish).
    - `on_deadline(fn)`: called when the shutdown deadline has passed and something is still running (force it).
    - `on_close(fn)`: called once every task has ended, in reverse order (release processes and pins).
    Callbacks never raise into the shutdown: a failing one is logged and the next still runs.
    """

    def __init__(self) -> None:
        self.tasks: list[tuple[str, TaskFactory]] = []
        self.servers: list[tuple[str, TaskFactory]] = []
        self._stopping: list[Callable[[], None]] = []
        self._late: list[Callable[[], None]] = []
        self._closing: list[Callable[[], None]] = []

    def task(self, name: str, run: TaskFactory) -> None:
        self.tasks.append((name, run))

    def serve(self, name: str, run: TaskFactory) -> None:
        self.servers.append((name, run))

    def on_stop(self, fn: Callable[[], None]) -> None:
        self._stopping.append(fn)

    def on_deadline(self, fn: Callable[[], None]) -> None:
        self._late.append(fn)

    def on_close(self, fn: Callable[[], None]) -> None:
        self._closing.append(fn)

    def stopping(self) -> None:
        _call_each(self._stopping)

    def deadline_passed(self) -> None:
        _call_each(self._late)

    def closed(self) -> None:
        _call_each(list(reversed(self._closing)))


def _call_each(callbacks: list[Callable[[], None]]) -> None:
    for fn in callbacks:
        try:
            fn()
        except Exception:
            log.exception("stopping: %r failed", fn)


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
    running: Running = field(init=False)

    def __post_init__(self) -> None:
        self.sink = BusSink(self.bus, self.metrics)
        self.live = LiveRelay()
        self.running = Running()

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
