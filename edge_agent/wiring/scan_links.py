"""Wiring of the scan links of the shelf tags' QR codes (`/s/{code}`): record scan.tag, then redirect to the
product page, or show the local page (with an order form, placed through the order service) when the cloud is
down or the product has no page.

Hooks made here: a pairing change in the catalog empties the scan links' memory of codes (forget_targets).
"""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.services.catalog import ProductCatalog
from edge_agent.services.orders import OrderService
from edge_agent.services.pickup_codes import StoreKeyError
from edge_agent.services.scan_links import ScanLinkService, form_key
from edge_agent.wiring.context import WiringContext


def connect_scan_links(scan_links: ScanLinkService, catalog: ProductCatalog) -> None:
    """A tag re-paired, or its product deleted: the codes remembered may name the wrong product now."""
    catalog.on_pairing_change(scan_links.forget_targets)


def build_scan_links(ctx: WiringContext, orders: OrderService, cloud_up: Callable[[], bool]) -> ScanLinkService:
    try:
        key: bytes | None = ctx.store_key()
    except StoreKeyError:
        key = None  # order-form tokens then use a key drawn at start (a restart expires open forms)
    scan_links = ScanLinkService(
        ctx.db,
        ctx.catalog,
        ctx.bus.publish,
        ctx.config.scan_links,
        store_id=ctx.config.agent.store_id,
        cloud_up=cloud_up,
        form_secret=form_key(key),
        orders=orders,
        clock=ctx.clock.steady_s,
    )
    connect_scan_links(scan_links, ctx.catalog)  # Hook: pairing changes empty the remembered codes
    return scan_links
