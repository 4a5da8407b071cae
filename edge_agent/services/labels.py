"""Wiring of the e-ink labels into the agent: catalog -> label content, commands, quiet hours."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud_link.commands import CommandFailedError, CommandRegistry
from devices.labels.render import LabelContent
from devices.labels.updates import PRIORITY_TECHNICIAN, LabelService, LabelSettings
from edge_agent.config import AgentConfig
from edge_agent.services.catalog import Product, ProductCatalog

TAG_ID_PATTERN = r"^[0-9a-f]{16}$"


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


class TagFlashPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag_id: str = Field(pattern=TAG_ID_PATTERN, description="The tag to find.")
    colour: Literal["red", "green", "blue", "white"] = Field("green", description="LED colour.")
    count: int = Field(5, ge=1, le=60, description="Flashes.")


class TagRefreshPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag_ids: list[str] | None = Field(None, max_length=10000, description="Tags to re-render; all when absent.")


class TagPairing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag_id: str = Field(pattern=TAG_ID_PATTERN)
    sku: str | None = Field(None, description="The product; null unpairs.")


class TagPairPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pairs: list[TagPairing] = Field(min_length=1, max_length=10000)


COLOURS = {"red": 1, "green": 2, "blue": 3, "white": 4}


async def flash_tag(labels: LabelService, payload: TagFlashPayload) -> dict[str, Any]:
    """`tag.flash`, also the web UI's "find this tag": raises CommandFailedError with the contract's codes."""
    try:
        status = await labels.flash(payload.tag_id, colour=COLOURS[payload.colour], count=payload.count)
    except LookupError as exc:
        raise CommandFailedError("unknown_tag", str(exc)) from None
    except TimeoutError:
        raise CommandFailedError("base_station_unreachable", "the base station did not answer") from None
    if status == 1:
        raise CommandFailedError("unknown_tag", f"the base station does not know tag {payload.tag_id}")
    if status != 0:
        raise CommandFailedError("refused", f"the base station refused (status {status})")
    return {"tag_id": payload.tag_id, "flashing": True}


async def refresh_tags(labels: LabelService, payload: TagRefreshPayload) -> dict[str, Any]:
    """`tag.refresh`, also the web UI's "re-send": re-render and queue what differs from what the tag shows."""
    if payload.tag_ids is None:
        tag_ids = [t.tag_id for t in labels.registry.all()]
        unknown: list[str] = []
    else:
        wanted = list(dict.fromkeys(payload.tag_ids))  # each tag once, in the order given
        unknown = [t for t in wanted if labels.registry.get(t) is None]
        tag_ids = [t for t in wanted if t not in set(unknown)]
    queued = await labels.request_update(tag_ids, PRIORITY_TECHNICIAN, "refresh requested")
    return {"queued": queued, "unchanged": len(tag_ids) - queued, "unknown": unknown}


async def pair_tags(catalog: ProductCatalog, payload: TagPairPayload) -> dict[str, Any]:
    """`tag.pair`, also the web UI's "unpair" (sku null)."""
    result = await catalog.pair_tags([(p.tag_id, p.sku) for p in payload.pairs])
    return {
        "changed": result.changed,
        "unchanged": result.unchanged,
        "problems": [{"index": p.index, "field": p.column, "message": p.message} for p in result.problems],
    }


def register_label_commands(registry: CommandRegistry, labels: LabelService, catalog: ProductCatalog) -> None:
    async def flash(payload: TagFlashPayload) -> dict[str, Any]:
        return await flash_tag(labels, payload)

    async def refresh(payload: TagRefreshPayload) -> dict[str, Any]:
        return await refresh_tags(labels, payload)

    async def pair(payload: TagPairPayload) -> dict[str, Any]:
        return await pair_tags(catalog, payload)

    registry.register("tag.flash", TagFlashPayload, flash, timeout=10, description="Flash a tag's LED to find it.")
    registry.register("tag.refresh", TagRefreshPayload, refresh, timeout=120, description="Re-render and re-send.")
    registry.register("tag.pair", TagPairPayload, pair, timeout=60, description="Pair tags with products.")
