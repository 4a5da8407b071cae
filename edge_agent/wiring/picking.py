"""Wiring of pick-to-light: the picking service on the labels, its commands, and what confirms a line.

Hooks made here: the labels show the pick lines' pages (LabelService.add_page_source); a tag's button confirms its
line (LabelService.button_handlers); the serial staff scanners of [picking] confirm lines; list changes go to the
web UI's live stream. The in-store broker's staff handhelds are
connected in wiring/links.py (`staff_scan`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from devices.labels.updates import LabelService
from devices.scanners.serial_scanner import SerialScanner
from edge_agent.commands.picking import register_picking_commands
from edge_agent.services.picking import PickingService, PickingSettings
from edge_agent.wiring.context import WiringContext

log = logging.getLogger(__name__)


@dataclass
class Picking:
    service: PickingService
    scanners: list[SerialScanner] = field(default_factory=list)

    async def staff_scan(self, device_id: str, code: str) -> bool:
        """An MQTT staff scanner's scan: a pick line's product confirms it; anything else is relayed as before."""
        return await self.service.scanned(f"device:{device_id}", code) is not None

    async def serial_staff_scan(self, name: str, code: str) -> None:
        if await self.service.scanned(f"serial:{name}", code) is None:
            log.info("staff scanner %s: %r confirms no open pick line", name, code[:64])


def build_picking(ctx: WiringContext, labels: LabelService) -> Picking:
    c = ctx.config.picking
    service = PickingService(
        ctx.db,
        labels,
        ctx.catalog,
        ctx.sink,
        settings=PickingSettings(led_renew_s=c.led_renew_s, fast_s=c.fast_s, zone_linger_s=c.zone_linger_s),
        locale=ctx.config.labels.locale,
    )
    picking = Picking(service)

    async def button(tag_id: str, _button: int) -> bool:
        return await service.button(tag_id) is not None

    # Hook: a tag with an open pick line shows the line's page; its button confirms the line.
    labels.add_page_source(service.page_for)
    labels.button_handlers.append(button)
    # Hook: pick list changes go to the web UI's live stream.
    service.add_listener(functools.partial(ctx.live.broadcast, "picking"))
    for n, url in enumerate(c.serial_scanners, 1):
        name = f"picking-{n}"
        picking.scanners.append(
            # Hook: a serial staff scanner's scan confirms a pick line.
            SerialScanner(name, url, functools.partial(picking.serial_staff_scan, name),
                          on_bad_input=ctx.metrics.bad_input)
        )
    register_picking_commands(ctx.registry, service)
    ctx.running.task("picking", service.run)
    for scanner in picking.scanners:
        ctx.running.task(f"scanner-{scanner.name}", scanner.run)
    return picking
