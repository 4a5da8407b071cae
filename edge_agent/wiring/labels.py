"""Wiring of the e-ink labels into the agent: catalog -> label content, the label settings from the configuration, and
the catalog's changes -> re-rendered tags. The label commands are in edge_agent/commands/labels.py."""

from __future__ import annotations

import datetime as dt

from devices.labels.render import LabelContent
from devices.labels.updates import PRIORITY_TECHNICIAN, LabelService, LabelSettings
from edge_agent.config import AgentConfig
from edge_agent.services.catalog import Product, ProductCatalog


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
