"""Kiosks, Wi-Fi (MQTT) devices and GPIO peripherals for the devices page (`/api/devices/...`).

The agent's own kiosk pages are told to reload or show a message through their live stream (KioskHub); MQTT
devices get `reboot`, `reload` and `show_message` on their command topic exactly as the cloud's `device.*`
commands send them (commands/devices.send_device_command): unknown, not adopted and offline devices are
refused without publishing anything.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from cloud_link.commands import CommandFailedError
from devices.lockers.gpio import GpioLockBoard
from devices.lockers.signal import AlarmSignal
from devices.mqtt.registry import DeviceRecord
from edge_agent.commands.devices import DEVICE_ID_PATTERN, MESSAGE_TEXT_PATTERN, send_device_command
from edge_agent.services.kiosks import KioskHub
from edge_agent.services.web_users import Role
from edge_agent.web.admin_context import AdminServices
from edge_agent.web.api_errors import api_error
from edge_agent.web.auth import require

KioskId = Annotated[str, Path(min_length=1, max_length=64)]
DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN)]
FAILURE_STATUS = {"unknown_device": 404, "not_adopted": 409, "device_offline": 409, "broker_unavailable": 503}


class MessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=200, pattern=MESSAGE_TEXT_PATTERN, description="The message.")
    seconds: int = Field(10, ge=1, le=3600, strict=True, description="How long an MQTT device shows it.")


def device_json(record: DeviceRecord) -> dict[str, Any]:
    announce = record.announce
    return {
        "device_id": record.device_id,
        "adopted": record.adopted,
        "online": record.online,
        "since_ms": record.since_ms,
        "first_seen_ms": record.first_seen_ms,
        "last_seen_ms": record.last_seen_ms,
        "kind": None if announce is None else announce.kind,
        "model": None if announce is None else announce.model,
        "fw": None if announce is None else announce.fw,
        "capabilities": [] if announce is None else list(announce.capabilities),
        "kiosk_id": record.kiosk_id,
    }


def gpio_json(admin: AdminServices) -> dict[str, Any]:
    cfg = admin.config.lockers
    pins = {g.id: g for g in cfg.gpio_boards}
    boards: list[dict[str, Any]] = []
    signals: list[dict[str, Any]] = []
    for device in admin.gpio_devices:
        if isinstance(device, GpioLockBoard):
            spec = pins.get(device.board_id)
            states = device.pin_states()
            locks = [
                {**state, "lock_pin": p.lock_pin, "door_pin": p.door_pin, "item_pin": p.item_pin}
                for state, p in zip(states, spec.locks if spec else [], strict=False)
            ]
            boards.append({"board_id": device.board_id, "pulse_s": device.pulse_s, "confirm_s": device.confirm_s,
                           "locks": locks})
        elif isinstance(device, AlarmSignal):
            signals.append(
                {
                    "led_pin": cfg.alarm_led_pin,
                    "buzzer_pin": cfg.alarm_buzzer_pin,
                    "alarm_on": device.on,
                    "led": None if device.led is None else bool(device.led.is_active),
                    "buzzer": None if device.buzzer is None else bool(device.buzzer.is_active),
                }
            )
    return {"boards": boards, "alarm_signals": signals}


def kiosks_router(admin: AdminServices) -> APIRouter:
    router = APIRouter()
    technician = [Depends(require(Role.TECHNICIAN))]

    def bound_devices() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if admin.gateway is not None:
            for record in admin.gateway.registry.all():
                if record.kiosk_id is not None:
                    out.setdefault(record.kiosk_id, []).append(record.device_id)
        return out

    @router.get("/kiosks", dependencies=technician)
    def kiosks() -> dict[str, Any]:
        """The agent's kiosks (online while a page is open or beating) and the devices on the in-store broker."""
        hub = admin.kiosk_hub
        bound = bound_devices()
        kiosk_list = [] if hub is None else [
            {"id": k.id, "name": k.name, "lang": k.lang, "orientation": k.orientation, "online": hub.online(k.id),
             "last_seen_ms": hub.last_seen_ms(k.id), "devices": sorted(bound.get(k.id, []))}
            for k in hub.kiosks()
        ]
        gateway = admin.gateway
        devices = [] if gateway is None else sorted(
            (device_json(r) for r in gateway.registry.all()), key=lambda d: d["device_id"]
        )
        return {
            "kiosks": kiosk_list,
            "broker": None if gateway is None else {"connected": gateway.connected},
            "devices": devices,
        }

    def hub_kiosk(kiosk_id: str) -> KioskHub:
        hub = admin.kiosk_hub
        if hub is None or hub.get(kiosk_id) is None:
            raise api_error(404, "unknown_kiosk", f"no kiosk {kiosk_id}")
        return hub

    @router.post("/kiosks/{kiosk_id}/reload", dependencies=technician, responses={404: {}})
    def kiosk_reload(kiosk_id: KioskId) -> dict[str, Any]:
        """Every open page of the kiosk reloads."""
        hub = hub_kiosk(kiosk_id)
        hub.reload(kiosk_id)
        return {"kiosk_id": kiosk_id, "sent": True, "online": hub.online(kiosk_id)}

    @router.post("/kiosks/{kiosk_id}/message", dependencies=technician, responses={404: {}})
    def kiosk_message(kiosk_id: KioskId, body: MessageBody) -> dict[str, Any]:
        """Show a message on the kiosk's open pages."""
        hub = hub_kiosk(kiosk_id)
        hub.message(body.text, kiosk_id)
        return {"kiosk_id": kiosk_id, "sent": True, "online": hub.online(kiosk_id)}

    async def send(device_id: str, command: dict[str, Any]) -> dict[str, Any]:
        if admin.gateway is None:
            raise api_error(404, "unknown_device", "this store has no in-store broker")
        try:
            return await send_device_command(admin.gateway, device_id, command)
        except CommandFailedError as exc:
            raise api_error(FAILURE_STATUS.get(exc.code, 409), exc.code, exc.message) from None

    @router.post("/mqtt/{device_id}/reboot", dependencies=technician, responses={404: {}, 409: {}, 503: {}})
    async def device_reboot(device_id: DeviceId) -> dict[str, Any]:
        """Restart the device (`device.reboot`)."""
        return await send(device_id, {"command": "reboot"})

    @router.post("/mqtt/{device_id}/reload", dependencies=technician, responses={404: {}, 409: {}, 503: {}})
    async def device_reload(device_id: DeviceId) -> dict[str, Any]:
        """Make the device reload its page or configuration (`device.reload`)."""
        return await send(device_id, {"command": "reload"})

    @router.post("/mqtt/{device_id}/message", dependencies=technician, responses={404: {}, 409: {}, 503: {}})
    async def device_message(device_id: DeviceId, body: MessageBody) -> dict[str, Any]:
        """Show a short message on the device's screen (`device.show_message`)."""
        return await send(device_id, {"command": "show_message", "text": body.text, "seconds": body.seconds})

    @router.get("/gpio", dependencies=technician)
    def gpio() -> dict[str, Any]:
        """GPIO lock boards with their pins and what the pins read now, and the alarm LED and buzzer."""
        return gpio_json(admin)

    return router
