"""Wiring of the e-ink labels: the render pool, the label service with its stations (serial base stations, Wi-Fi
labels on the in-store broker), its settings from the configuration, and its commands
(edge_agent/commands/labels.py).

Hooks made here: a product's content comes from the catalog; the catalog's price and pairing changes re-render
exactly the tags that show them (connect_catalog). Tasks: the label service; once stopped, the render pool's
processes are ended."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from devices.labels.render import LabelContent
from devices.labels.render_pool import RenderPool
from devices.labels.updates import PRIORITY_TECHNICIAN, LabelService, LabelSettings
from devices.labels.wifi import add_wifi_labels
from edge_agent.commands.labels import register_label_commands
from edge_agent.config import AgentConfig
from edge_agent.services.catalog import Product, ProductCatalog
from edge_agent.wiring.context import WiringContext


def product_to_content(product: Product, default_locale: str) -> LabelContent:
    return LabelContent(
        sku=product.sku,
        name=product.name,
        price=product.price,
        currency=product.currency,
        unit_price=product.unit_price,
        unit_label=product.unit_label,
        former_price=product.former_price,
        promotion=product.promotion,
        barcode=product.barcode,
        origin=product.origin,
        locale=(product.locale or default_locale).replace("-", "_"),
    )


def parse_quiet_hours(text: str | None) -> tuple[dt.time, dt.time] | None:
    if not text:
        return None
    start, end = text.split("-")
    return dt.time.fromisoformat(start), dt.time.fromisoformat(end)


def label_settings(config: AgentConfig) -> LabelSettings:
    c = config.labels
    return LabelSettings(
        public_base_url=c.public_base_url,
        low_battery_mv=c.low_battery_mv,
        quiet_hours=parse_quiet_hours(c.quiet_hours),
        max_in_flight=c.max_in_flight_per_station,
        max_attempts=c.max_attempts,
        state_interval_s=c.state_interval_s,
        adopt_all=c.adopt == "auto",
        allowed_tags=frozenset(c.allowed_tags),
    )


def connect_catalog(labels: LabelService, catalog: ProductCatalog) -> None:
    """Price and product changes re-render exactly the tags that show them; pairing changes too."""

    async def products_changed(skus: list[str]) -> None:
        await labels.refresh_skus(skus)

    async def pairings_changed(tag_ids: list[str]) -> None:
        await labels.request_update(tag_ids, PRIORITY_TECHNICIAN, "paired with a product")

    catalog.on_change(products_changed)
    catalog.on_pairing_change(pairings_changed)


@dataclass
class Labels:
    """The labels feature, built: the service other features use, and the render pool to close at stop."""

    service: LabelService
    renderer: RenderPool


async def build_labels(ctx: WiringContext) -> Labels:
    cfg = ctx.config
    catalog = ctx.catalog
    renderer = RenderPool(cfg.labels.render_workers or None)
    await renderer.warm_up()

    def content(sku: str) -> LabelContent | None:
        product = catalog.get(sku)
        return None if product is None else product_to_content(product, cfg.labels.locale)

    service = LabelService(ctx.db, content=content, events=ctx.sink, renderer=renderer, settings=label_settings(cfg))
    for station in cfg.base_stations:
        service.add_station(station.name, station.url, baudrate=station.baudrate)
    if cfg.labels.wifi_labels:
        add_wifi_labels(
            service,
            ctx.local_endpoint(f"edge-agent-{cfg.agent.store_id}-labels"),
            topic_prefix=cfg.local_broker.topic_prefix,
            on_bad_input=ctx.metrics.bad_input,
        )
    # Hook: the catalog's price and pairing changes re-render the tags that show them.
    connect_catalog(service, catalog)
    ctx.metrics.watch_labels(service)
    register_label_commands(ctx.registry, service, catalog)
    ctx.running.task("labels", service.run)
    ctx.running.on_close(renderer.close)
    return Labels(service, renderer)
