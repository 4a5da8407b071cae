"""Wiring of the pickup shelves: the lockers' pickups (codes, expiry, events) in slots with labels; no lock board
needed. Without labels the shelves still load and hand over; their labels just show nothing.

Hooks made here (through PickupShelves' constructor for now: issue 15 moves them here): the lockers dispatch a
shelf order's code to the shelves; the labels show the slots' pages. Shelf changes go to the web UI's live stream.
"""

from __future__ import annotations

import functools

from devices.labels.registry import TagRegistry
from devices.labels.updates import LabelService
from edge_agent.services.pickup_shelves import PickupShelves
from edge_agent.wiring.context import WiringContext
from edge_agent.wiring.lockers import Lockers


def build_shelves(ctx: WiringContext, lockers: Lockers, labels: LabelService | None) -> PickupShelves:
    shelves = PickupShelves(
        ctx.db, lockers.service, labels, audit=lockers.audit_sink, events=ctx.sink, locale=ctx.config.labels.locale,
        registry=TagRegistry(ctx.db),
    )
    shelves.add_listener(functools.partial(ctx.live.broadcast, "shelf"))
    return shelves
