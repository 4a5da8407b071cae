"""Cloud commands of pick-to-light: `pick.start` and `pick.cancel` (edge_agent.services.picking)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud_link.commands import CommandFailedError, CommandRegistry
from edge_agent.services.catalog import SKU_PATTERN
from edge_agent.services.picking import PickingError, PickingService, PickList

LIST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class PickLinePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = Field(pattern=ORDER_ID_PATTERN, description="The order this line serves.")
    sku: str = Field(pattern=SKU_PATTERN, description="The product to take.")
    quantity: int = Field(ge=1, le=9999, description="How many to take.")


class PickStartPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    list_id: str = Field(pattern=LIST_ID_PATTERN, description="The pick list's id (unique).")
    order_ids: list[str] = Field(
        default_factory=list, max_length=100, description="The orders the list serves (also named by its lines)."
    )
    picker: str = Field(min_length=1, max_length=64, description="Who picks: a staff id, name, or handheld id.")
    colour: Literal["red", "green", "blue", "white"] | None = Field(
        None, description="The picker's LED colour; when absent, the colour fewest active lists use."
    )
    lines: list[PickLinePayload] = Field(min_length=1, max_length=500, description="What to take.")


class PickCancelPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    list_id: str = Field(pattern=LIST_ID_PATTERN)


def _failed(exc: PickingError) -> CommandFailedError:
    # The contract's command errors: a list that does not exist or is over is "refused" like any state conflict.
    code = "invalid_payload" if exc.code in ("invalid_payload", "bad_quantity") else "refused"
    return CommandFailedError(code, f"{exc.code}: {exc.message}")


def list_summary(plist: PickList) -> dict[str, Any]:
    return {
        "list_id": plist.list_id,
        "state": plist.state,
        "colour": plist.colour,
        "lines": len(plist.lines),
        "open_lines": len(plist.open_lines),
        "lit_tags": len({t for line in plist.open_lines for t in line.tags}),
        # Lines whose product no tag shows: staff find those without a light and confirm them on the board.
        "unlit_lines": [line.line_no for line in plist.lines if not line.tags],
    }


def register_picking_commands(registry: CommandRegistry, picking: PickingService) -> None:
    async def start(payload: PickStartPayload) -> dict[str, Any]:
        try:
            plist = await picking.start(
                payload.list_id,
                picker=payload.picker,
                colour=payload.colour,
                order_ids=payload.order_ids,
                lines=[(x.order_id, x.sku, x.quantity) for x in payload.lines],
            )
        except PickingError as exc:
            raise _failed(exc) from None
        return list_summary(plist)

    async def cancel(payload: PickCancelPayload) -> dict[str, Any]:
        try:
            plist = await picking.cancel(payload.list_id, actor="cloud")
        except PickingError as exc:
            raise _failed(exc) from None
        return list_summary(plist)

    registry.register("pick.start", PickStartPayload, start, timeout=30, description="Light a pick list's tags.")
    registry.register("pick.cancel", PickCancelPayload, cancel, timeout=30, description="Cancel a pick list.")
