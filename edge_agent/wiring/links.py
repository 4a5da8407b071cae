"""Wiring of the Wi-Fi devices on the in-store broker (the device relay) and its commands.

Hooks made here: a scan of a handheld bound to a kiosk fills that kiosk's cart (KioskHub.scanned); a scan of one
of [picking] scanners confirms a pick line (Picking.staff_scan). Without them such scans reach the cloud as
scan.device.
"""

from __future__ import annotations

from devices.mqtt.registry import DeviceRegistry
from devices.mqtt_gateway import MqttDeviceGateway
from edge_agent import __version__
from edge_agent.commands.devices import register_device_commands
from edge_agent.wiring.context import WiringContext
from edge_agent.wiring.kiosks import Kiosks
from edge_agent.wiring.picking import Picking


def build_device_gateway(
    ctx: WiringContext, boot: int, kiosks: Kiosks | None, picking: Picking | None
) -> MqttDeviceGateway:
    cfg = ctx.config
    lb = cfg.local_broker
    gateway = MqttDeviceGateway(
        ctx.local_endpoint(f"edge-agent-{cfg.agent.store_id}-devices"),
        ctx.sink,
        topic_prefix=lb.topic_prefix,
        max_message_bytes=lb.max_message_bytes,
        backoff_min=min(0.2, lb.reconnect_max_s),
        backoff_max=lb.reconnect_max_s,
        registry=DeviceRegistry.build(lb.adopt, lb.allowed_devices, lb.device_kiosks, store=ctx.db),
        coalesce_s=lb.state_coalesce_s,
        agent_state={"store_id": cfg.agent.store_id, "version": __version__, "boot": boot},
    )
    register_device_commands(ctx.registry, gateway)
    if kiosks is not None:
        gateway.on_scan = kiosks.hub.scanned  # Hook: handhelds bound to a kiosk fill its cart
    if picking is not None:
        gateway.on_staff_scan = picking.staff_scan  # Hook: [picking] handhelds confirm pick lines
        gateway.staff_scanners = frozenset(cfg.picking.scanners)
    ctx.running.task("device-gateway", gateway.run)
    return gateway
