"""Every feature the configuration turns on, each built by its wiring module, in an order where each gets what it
uses: a feature is built after those it hooks into, so a hook can only name something that exists (a feature
that is off is None here, and whatever would hook into it is simply not connected).

Order: lockers -> labels -> picking (on the labels) -> pickup shelves (on the lockers, with the labels) -> orders
-> scan links (their order form) -> kiosks (orders, and pickup codes at the lockers) -> the device relay (its
handhelds fill kiosks' carts and confirm pick lines). What each runs is registered in `ctx.running`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from devices.mqtt_gateway import MqttDeviceGateway
from devices.scanners.serial_scanner import SerialScanner
from edge_agent.services.orders import OrderService
from edge_agent.services.pickup_shelves import PickupShelves
from edge_agent.services.scan_links import ScanLinkService
from edge_agent.wiring.context import WiringContext
from edge_agent.wiring.kiosks import Kiosks, build_kiosks, build_orders
from edge_agent.wiring.labels import Labels, build_labels
from edge_agent.wiring.links import build_device_gateway
from edge_agent.wiring.lockers import Lockers, build_lockers
from edge_agent.wiring.picking import Picking, build_picking
from edge_agent.wiring.scan_links import build_scan_links
from edge_agent.wiring.shelves import build_shelves


@dataclass(frozen=True)
class Features:
    """The features built; None where the configuration leaves one off."""

    orders: OrderService
    scan_links: ScanLinkService
    lockers: Lockers | None = None
    labels: Labels | None = None
    picking: Picking | None = None
    shelves: PickupShelves | None = None
    kiosks: Kiosks | None = None
    gateway: MqttDeviceGateway | None = None
    scanners: list[SerialScanner] = field(default_factory=list)  # every serial scanner, kiosks' and staff's


async def build_features(ctx: WiringContext, boot: int, *, cloud_up: Callable[[], bool]) -> Features:
    cfg = ctx.config
    lockers = await build_lockers(ctx) if cfg.lockers.enabled else None
    labels = await build_labels(ctx) if cfg.base_stations or cfg.labels.wifi_labels else None
    picking = build_picking(ctx, labels.service) if cfg.picking.enabled and labels is not None else None
    shelves = build_shelves(ctx, lockers, None if labels is None else labels.service) if lockers is not None else None
    orders = build_orders(ctx)
    scan_links = build_scan_links(ctx, orders, cloud_up)
    kiosks = build_kiosks(ctx, orders, None if lockers is None else lockers.service)
    await orders.recover()  # orders stored but not yet announced when the agent last stopped
    gateway = build_device_gateway(ctx, boot, kiosks, picking) if cfg.local_broker.enabled else None
    return Features(
        orders=orders,
        scan_links=scan_links,
        lockers=lockers,
        labels=labels,
        picking=picking,
        shelves=shelves,
        kiosks=kiosks,
        gateway=gateway,
        scanners=[*(picking.scanners if picking else []), *(kiosks.scanners if kiosks else [])],
    )
