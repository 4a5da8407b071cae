"""Cloud commands of the pickup lockers and pickup shelves: `pickup.create` and `pickup.cancel`."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from cloud_link.commands import CommandFailedError, CommandRegistry
from cloud_link.events import format_ts, now_ms
from edge_agent.services.lockers import LockerError, LockerService
from edge_agent.services.pickup_codes import PickupCodeError
from edge_agent.services.pickup_shelves import mask_customer

ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class PickupCreatePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = Field(pattern=ORDER_ID_PATTERN, description="The order's id.")
    size: Literal["S", "M", "L"] = Field(description="Compartment size the parcel needs.")
    hold_until: dt.datetime | None = Field(
        None, description="UTC time until which the order waits; lockers.hold_days from now when absent."
    )
    code: str | None = Field(
        None, pattern=r"^[0-9]{8,12}$", description="The customer's code when the cloud issues it (8-12 digits)."
    )
    customer_name: str | None = Field(
        None, max_length=100,
        description="The customer's name, for a pickup-shelf label; the agent keeps only its first character.",
    )
    customer_phone: str | None = Field(
        None, max_length=32, pattern=r"^[0-9+()\- ]{0,32}$",
        description="The customer's phone number; the agent keeps only its last 4 digits.",
    )


class PickupCancelPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = Field(pattern=ORDER_ID_PATTERN)


class HoldClock(Protocol):
    """What pickup.create needs of the agent's clock (edge_agent.services.agent_clock.AgentClock)."""

    def estimate_ms(self) -> int: ...
    def is_past(self, ms: int) -> bool: ...


class _WallClock:
    def estimate_ms(self) -> int:
        return now_ms()

    def is_past(self, ms: int) -> bool:
        return ms <= now_ms()


def register_locker_commands(
    registry: CommandRegistry, lockers: LockerService, *, hold_days: int, clock: HoldClock | None = None
) -> None:
    hold_clock = clock or _WallClock()

    async def create(payload: PickupCreatePayload) -> dict[str, Any]:
        # The default hold counts from the best estimate of the time, and "already past" is said only when the
        # wall clock can be trusted (or the cloud's time shows it): a clock set ahead refuses no correct order.
        now = dt.datetime.fromtimestamp(hold_clock.estimate_ms() / 1000, dt.UTC)
        hold_until = payload.hold_until or now + dt.timedelta(days=hold_days)
        if hold_until.tzinfo is None:
            raise CommandFailedError("invalid_payload", "hold_until: give a time zone (UTC, e.g. 2026-11-29T20:00:00Z)")
        if hold_clock.is_past(int(hold_until.timestamp() * 1000)):
            raise CommandFailedError("invalid_payload", "hold_until: already past")
        try:
            code = await lockers.create_pickup(
                payload.order_id, payload.size, int(hold_until.timestamp() * 1000), payload.code,
                # Masked before anything stores it: the full name and phone are never kept nor logged.
                customer=mask_customer(payload.customer_name, payload.customer_phone),
            )
        except (LockerError, PickupCodeError) as exc:
            raise CommandFailedError("refused", str(exc)) from None
        return {
            "order_id": payload.order_id,
            "hold_until": format_ts(int(hold_until.timestamp() * 1000)),  # the contract's UTC millisecond form
            # The agent's code travels with pickup.ready, once the parcel is in its compartment.
            "code_issued_by": "cloud" if payload.code else ("agent" if code else "cloud"),
        }

    async def cancel(payload: PickupCancelPayload) -> dict[str, Any]:
        try:
            pickup = await lockers.cancel_pickup(payload.order_id)
        except LockerError as exc:
            raise CommandFailedError("refused", str(exc)) from None
        return {"order_id": payload.order_id, "state": pickup.state}

    registry.register("pickup.create", PickupCreatePayload, create, timeout=10, description="A new pickup order.")
    registry.register("pickup.cancel", PickupCancelPayload, cancel, timeout=10, description="Cancel a pickup order.")
