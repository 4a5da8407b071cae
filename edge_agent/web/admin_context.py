"""What the technician web UI's routers reach: the agent's running parts, passed in by the composition root.

Each field is the running service itself (not a copy); None when the store has no such part (no lockers, no
in-store broker). The routers read through the services' own methods and never write their tables directly:
no module of edge_agent/web runs SQL (tests/test_architecture.py keeps it so); a table a page shows has a service
here that reads it (`tag_listing`, `board_finds`, the outbox's and the audit log's own read methods).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_link.bus import EventBus
from cloud_link.events import Event
from devices.labels.registry import TagRegistry
from devices.labels.updates import LabelService
from devices.lockers.board import LockBoard
from devices.lockers.kerong import KerongBus
from devices.mqtt_gateway import MqttDeviceGateway
from edge_agent.config import AgentConfig
from edge_agent.services.audit import AuditLog
from edge_agent.services.board_finds import BoardFinds
from edge_agent.services.catalog import ProductCatalog
from edge_agent.services.kiosks import KioskHub
from edge_agent.services.lockers import LockerService
from edge_agent.services.picking import PickingService
from edge_agent.services.pickup_shelves import PickupShelves
from edge_agent.services.store_health import LiveHub
from edge_agent.services.tag_listing import TagListing
from edge_agent.storage import Database


@dataclass
class AdminServices:
    config: AgentConfig
    # The file the configuration was loaded from; None when the agent was built from an object (tests that
    # do not exercise configuration editing).
    config_path: Path | None
    db: Database
    catalog: ProductCatalog
    tags: TagRegistry
    # publish(event_type, payload): into the outbox (returns once durable), as every producer does.
    publish: Callable[[str, dict[str, Any]], Awaitable[Event]]
    # The devices page's tags with their product and update job (read-only).
    tag_listing: TagListing
    # Lock boards found by bus scans and their adoption (the discovery page).
    board_finds: BoardFinds
    labels: LabelService | None = None
    lockers: LockerService | None = None
    lock_boards: dict[str, LockBoard] = field(default_factory=dict)
    locker_buses: dict[str, KerongBus] = field(default_factory=dict)
    gateway: MqttDeviceGateway | None = None
    kiosk_hub: KioskHub | None = None
    audit: AuditLog | None = None
    # GPIO lock boards and alarm signals (devices.lockers.gpio / signal), for the devices page.
    gpio_devices: list[Any] = field(default_factory=list)
    # The dashboard's snapshot and the live stream's hub (edge_agent.services.store_health); the runtime runs it.
    live: LiveHub | None = None
    picking: PickingService | None = None
    shelves: PickupShelves | None = None  # pickup shelves (needs the lockers' pickups; no boards needed)
    # The event bus, for the events page's recently published events (a bounded subscription, read on request).
    bus: EventBus | None = None
