"""Wiring of orders and kiosks: the order service (always: scan-link pages and devices order too), and the kiosks
of [[kiosks]] with their JSON API and serial scanners.

Hooks made here: a catalog change reaches the kiosks' pages (KioskHub.catalog_changed); a kiosk's serial scanner
fills its cart (KioskHub.scanned); a pickup code typed at a kiosk is checked by the lockers (LockerService.collect),
when the store has them. Handhelds on the in-store broker bound to a kiosk are connected in wiring/links.py.
Tasks: the orders' purge, the kiosk hub, each serial scanner; at stop the hub ends the pages' live streams (or the
web server would wait on them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from devices.labels.registry import TagRegistry
from devices.scanners.serial_scanner import SerialScanner
from edge_agent.services.catalog import ProductCatalog
from edge_agent.services.kiosks import KioskHub, KioskSpec
from edge_agent.services.lockers import LockerService
from edge_agent.services.orders import OrderService
from edge_agent.web.kiosk_api import KioskApi
from edge_agent.wiring.context import WiringContext


@dataclass
class Kiosks:
    hub: KioskHub
    api: KioskApi
    scanners: list[SerialScanner] = field(default_factory=list)


def build_orders(ctx: WiringContext) -> OrderService:
    cfg = ctx.config
    orders = OrderService(
        ctx.db,
        ctx.catalog,
        ctx.sink,
        store_id=cfg.agent.store_id,
        fulfilments=cfg.kiosk.fulfilments,
        checkout_url_template=cfg.kiosk.checkout_url_template,
    )
    ctx.running.task("orders-purge", orders.purge_loop)
    return orders


def connect_kiosk_hub(hub: KioskHub, catalog: ProductCatalog) -> Callable[[], None]:
    """Price and product changes reach the kiosks' open pages; returns the unsubscribe."""
    return catalog.on_change(hub.catalog_changed)


def build_kiosks(ctx: WiringContext, orders: OrderService, lockers: LockerService | None) -> Kiosks | None:
    cfg = ctx.config
    if not cfg.kiosks:
        return None
    tags = TagRegistry(ctx.db)
    hub = KioskHub(
        ctx.catalog,
        tags,
        ctx.sink,
        [KioskSpec(k.id, k.name, k.lang, k.orientation) for k in cfg.kiosks],
        public_base_url=cfg.labels.public_base_url,
        heartbeat_s=cfg.kiosk.heartbeat_s,
    )
    api = KioskApi(
        hub=hub,
        catalog=ctx.catalog,
        orders=orders,
        tags=tags,
        store_id=cfg.agent.store_id,
        currency=cfg.kiosk.currency,
        price_locale=cfg.labels.locale,
        public_base_url=cfg.labels.public_base_url,
        idle_s=cfg.kiosk.idle_s,
        warning_s=cfg.kiosk.warning_s,
        product_url_template=cfg.scan_links.product_url_template,
        checkout_url_template=cfg.kiosk.checkout_url_template,
        orders_per_minute=cfg.kiosk.orders_per_minute,
        on_bad_input=ctx.metrics.bad_input,
        lockers=lockers,  # Hook: a pickup code typed at a kiosk is checked by the lockers
    )
    scanners = [
        SerialScanner(
            k.id,
            k.scanner_url,
            functools.partial(hub.scanned, k.id, source="serial"),  # Hook: the kiosk's scanner fills its cart
            baudrate=k.scanner_baudrate,
            on_bad_input=ctx.metrics.bad_input,
        )
        for k in cfg.kiosks
        if k.scanner_url is not None
    ]
    # Hook: catalog changes reach the kiosks' open pages (unsubscribed when the agent closes).
    ctx.running.on_close(connect_kiosk_hub(hub, ctx.catalog))
    ctx.running.task("kiosks", hub.run)
    ctx.running.on_stop(hub.close)
    for scanner in scanners:
        ctx.running.task(f"scanner-{scanner.name}", scanner.run)
    return Kiosks(hub, api, scanners)
