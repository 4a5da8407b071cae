"""Cloud commands for couriers' one-time sign-in codes on the locker screens: `courier.code.create`, `.revoke`.

The code itself is stored on the agent only as an HMAC (edge_agent.services.locker_staff). A code the agent
draws travels back once, in the command's result, to the cloud that asked for it; a code the cloud gives is
never sent back.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud_link.commands import CommandFailedError, CommandRegistry
from edge_agent.services.locker_staff import LockerStaff, StaffError

COURIER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class CourierCodeCreatePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    courier_id: str = Field(pattern=COURIER_ID_PATTERN, description="The courier the code is for.")
    valid_until: int | None = Field(
        None, ge=0, strict=True,  # strict: "1795464000000" (a string) is refused, as the schema does
        description="Unix epoch ms (UTC) until which the code signs in; 12 h from now when absent.",
    )
    code: str | None = Field(
        None, pattern=r"^[0-9]{8,12}$", description="The code when the cloud issues it (8-12 digits)."
    )


class CourierCodeRevokePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    courier_id: str = Field(pattern=COURIER_ID_PATTERN, description="Every live code of this courier dies.")


def register_courier_commands(registry: CommandRegistry, staff: LockerStaff) -> None:
    async def create(payload: CourierCodeCreatePayload) -> dict[str, Any]:
        try:
            issued = await staff.issue_courier_code(payload.courier_id, payload.valid_until, payload.code)
        except StaffError as exc:
            raise CommandFailedError("refused", str(exc)) from None
        result: dict[str, Any] = {"courier_id": payload.courier_id, "valid_until": issued.valid_until_ms}
        if payload.code is None:
            result["code"] = issued.code  # drawn here: the cloud hears it once, here, and passes it to the courier
        return result

    async def revoke(payload: CourierCodeRevokePayload) -> dict[str, Any]:
        revoked = await staff.revoke_courier(payload.courier_id)
        return {"courier_id": payload.courier_id, "revoked": revoked}

    registry.register(
        "courier.code.create", CourierCodeCreatePayload, create, timeout=10,
        description="A one-time sign-in code for a courier at the locker screens.",
        secret_result_keys=("code",),
    )
    registry.register(
        "courier.code.revoke", CourierCodeRevokePayload, revoke, timeout=10,
        description="Kill a courier's unused codes and end its sessions.",
    )
