"""Cloud commands of the e-ink labels: `tag.flash`, `tag.refresh` and `tag.pair` (the web UI's "find", "re-send"
and "unpair" run the same functions)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud_link.commands import CommandFailedError, CommandRegistry
from devices.labels.updates import PRIORITY_TECHNICIAN, LabelService
from edge_agent.services.catalog import ProductCatalog

TAG_ID_PATTERN = r"^[0-9a-f]{16}$"


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
