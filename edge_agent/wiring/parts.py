"""The agent's features and web UI as read-only attributes (`agent.lockers`, `agent.users`, ...): how the end-to-end
tests, the benchmarks and `simulate` reach the running parts. Each is None until built, or when its feature is off.
Nothing in the agent itself goes through these: the wiring modules hand each part to what uses it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from devices.labels.render_pool import RenderPool
from devices.labels.updates import LabelService
from devices.lockers.board import LockBoard
from devices.lockers.gpio import GpioLockBoard
from devices.lockers.kerong import KerongBus
from devices.lockers.signal import AlarmSignal
from devices.mqtt_gateway import MqttDeviceGateway
from devices.scanners.serial_scanner import SerialScanner
from edge_agent.services.audit import AuditLog
from edge_agent.services.kiosks import KioskHub
from edge_agent.services.locker_staff import LockerStaff
from edge_agent.services.lockers import LockerService
from edge_agent.services.orders import OrderService
from edge_agent.services.picking import PickingService
from edge_agent.services.pickup_shelves import PickupShelves
from edge_agent.services.scan_links import ScanLinkService
from edge_agent.services.store_health import LiveHub
from edge_agent.services.web_sessions import WebSessions
from edge_agent.services.web_users import WebUsers
from edge_agent.web.kiosk_api import KioskApi
from edge_agent.web.tls import ServerCertificate
from edge_agent.wiring.features import Features
from edge_agent.wiring.web import WebUi

T = TypeVar("T")


class _Feature(Generic[T]):
    def __init__(self, pick: Callable[[Features], T | None]) -> None:
        self._pick = pick

    def __get__(self, parts: AgentParts, owner: type | None = None) -> T | None:
        return None if parts.features is None else self._pick(parts.features)


class _Web(Generic[T]):
    def __init__(self, pick: Callable[[WebUi], T | None]) -> None:
        self._pick = pick

    def __get__(self, parts: AgentParts, owner: type | None = None) -> T | None:
        return None if parts.web is None else self._pick(parts.web)


class AgentParts:
    features: Features | None
    web: WebUi | None

    lockers = _Feature[LockerService](lambda f: f.lockers.service if f.lockers else None)
    locker_staff = _Feature[LockerStaff](lambda f: f.lockers.staff if f.lockers else None)
    audit = _Feature[AuditLog](lambda f: f.lockers.audit if f.lockers else None)
    locker_buses = _Feature[dict[str, KerongBus]](lambda f: f.lockers.buses if f.lockers else None)
    lock_boards = _Feature[dict[str, LockBoard]](lambda f: f.lockers.boards if f.lockers else None)
    _gpio_devices = _Feature[list[GpioLockBoard | AlarmSignal]](lambda f: f.lockers.gpio_devices if f.lockers else None)
    labels = _Feature[LabelService](lambda f: f.labels.service if f.labels else None)
    renderer = _Feature[RenderPool](lambda f: f.labels.renderer if f.labels else None)
    picking = _Feature[PickingService](lambda f: f.picking.service if f.picking else None)
    shelves = _Feature[PickupShelves](lambda f: f.shelves)
    orders = _Feature[OrderService](lambda f: f.orders)
    scan_links = _Feature[ScanLinkService](lambda f: f.scan_links)
    kiosk_hub = _Feature[KioskHub](lambda f: f.kiosks.hub if f.kiosks else None)
    kiosk_api = _Feature[KioskApi](lambda f: f.kiosks.api if f.kiosks else None)
    gateway = _Feature[MqttDeviceGateway](lambda f: f.gateway)
    scanners = _Feature[list[SerialScanner]](lambda f: f.scanners)
    users = _Web[WebUsers](lambda w: w.users)
    web_sessions = _Web[WebSessions](lambda w: w.sessions)
    live_hub = _Web[LiveHub](lambda w: w.live_hub)
    web_app = _Web[Any](lambda w: w.app)  # the FastAPI app (tests and bench.ui walk its routes)
    certificate = _Web[ServerCertificate](lambda w: w.certificate)
