"""Wiring of the pickup shelves: the lockers' pickups (codes, expiry, events) in slots with labels; no lock board
needed. Without labels the shelves still load and hand over; their labels just show nothing.

Hooks made here (`assemble_shelves`): the lockers dispatch a shelf order's code to the shelves, and tell them when
one expires or is cancelled (`LockerService.attach_shelves`); the labels show the slots' pages
(`LabelService.add_page_source`). Shelf changes go to the web UI's live stream (`build_shelves`). The shelves use
the pickups' store the lockers were built with (`Lockers.pickups`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from cloud_link.events import now_ms
from cloud_link.ports import DurableStore, EventSink
from devices.labels.registry import TagRegistry
from devices.labels.updates import LabelService
from edge_agent.services.audit import AuditSink
from edge_agent.services.lockers import LockerService
from edge_agent.services.pickup_shelves import PickupShelves
from edge_agent.services.pickups import PickupStore
from edge_agent.wiring.context import WiringContext
from edge_agent.wiring.lockers import Lockers


def assemble_shelves(
    db: DurableStore,
    pickups: PickupStore,
    lockers: LockerService,
    labels: LabelService | None,
    *,
    audit: AuditSink,
    events: EventSink,
    locale: str = "zh_CN",
    clock: Callable[[], int] = now_ms,
    registry: TagRegistry | None = None,
) -> PickupShelves:
    """The pickup shelves, loaded and connected to the lockers and the labels (`build_shelves`, and the tests)."""
    shelves = PickupShelves(
        db, pickups, lockers, labels, audit=audit, events=events, locale=locale, clock=clock, registry=registry
    )
    shelves.reload()
    # Hook: a right code for an order in a slot goes to the shelves; its expiry or cancel updates the slot.
    lockers.attach_shelves(shelves)
    if labels is not None:
        # Hook: a slot label shows its slot's page, never a product's price label.
        labels.add_page_source(shelves.page_for)
    return shelves


def build_shelves(ctx: WiringContext, lockers: Lockers, labels: LabelService | None) -> PickupShelves:
    shelves = assemble_shelves(
        ctx.db, lockers.pickups, lockers.service, labels, audit=lockers.audit_sink, events=ctx.sink,
        locale=ctx.config.labels.locale, registry=TagRegistry(ctx.db),
    )
    # Hook: shelf changes go to the web UI's live stream.
    shelves.add_listener(functools.partial(ctx.live.broadcast, "shelf"))
    ctx.running.task("pickup-shelves", shelves.run)
    return shelves
