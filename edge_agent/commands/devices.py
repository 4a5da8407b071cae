"""Cloud commands for Wi-Fi devices on the in-store broker: `device.reboot`, `device.reload`, `device.show_message`.

Each is published to the device's `{prefix}/devices/{device_id}/cmd` topic (QoS 1, not retained) and answered
once the in-store broker acknowledged it: the device may be slow to act, and reports what it did through its
own availability, state and announce (docs/mqtt-devices.md). Devices the agent never heard of, devices not
adopted and devices whose availability is `offline` are refused without publishing anything: a command
queued for a device that is away would surprise it (a reboot) when it comes back.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from cloud_link.commands import CommandFailedError, CommandRegistry
from devices.mqtt_gateway import DeviceCommandError

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# Shown on a screen: any script, no control characters (no terminal or layout tricks).
MESSAGE_TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class DeviceCommander(Protocol):
    async def send_command(self, device_id: str, command: dict[str, Any], timeout: float = 5.0) -> None: ...


class DeviceTargetPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(pattern=DEVICE_ID_PATTERN, description="The device, as it names itself on the broker.")


class ShowMessagePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(pattern=DEVICE_ID_PATTERN, description="The device, as it names itself on the broker.")
    text: str = Field(min_length=1, max_length=200, pattern=MESSAGE_TEXT_PATTERN, description="The message.")
    seconds: int = Field(10, ge=1, le=3600, strict=True, description="How long the device shows it.")


async def send_device_command(devices: DeviceCommander, device_id: str, command: dict[str, Any]) -> dict[str, Any]:
    """One command to one device (the cloud's `device.*` commands and the web UI's buttons)."""
    try:
        await devices.send_command(device_id, command)
    except DeviceCommandError as exc:
        raise CommandFailedError(exc.code, str(exc)) from None
    return {"device_id": device_id, "sent": True}


def register_device_commands(registry: CommandRegistry, devices: DeviceCommander) -> None:
    async def send(device_id: str, command: dict[str, Any]) -> dict[str, Any]:
        return await send_device_command(devices, device_id, command)

    async def reboot(payload: DeviceTargetPayload) -> dict[str, Any]:
        return await send(payload.device_id, {"command": "reboot"})

    async def reload(payload: DeviceTargetPayload) -> dict[str, Any]:
        return await send(payload.device_id, {"command": "reload"})

    async def show_message(payload: ShowMessagePayload) -> dict[str, Any]:
        return await send(
            payload.device_id, {"command": "show_message", "text": payload.text, "seconds": payload.seconds}
        )

    registry.register("device.reboot", DeviceTargetPayload, reboot, timeout=10,
                      description="Restart a Wi-Fi device on the in-store broker.")
    registry.register("device.reload", DeviceTargetPayload, reload, timeout=10,
                      description="Make a Wi-Fi device reload its page or configuration.")
    registry.register("device.show_message", ShowMessagePayload, show_message, timeout=10,
                      description="Show a short message on a Wi-Fi device's screen.")
