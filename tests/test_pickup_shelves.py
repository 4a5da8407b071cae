"""PickupShelves on a real SQLite file with the real LockerService (no lock board: a store with shelves only),
PickupCodes and hash-chained AuditLog: the shared code check and throttle, refusals, expiry and cancel into
retrieval, the masked customer, and the locker screen's answer for a shelf order."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from devices.labels.pages import SlotPage
from devices.labels.registry import TagRegistry
from edge_agent.services.audit import AuditLog
from edge_agent.services.doors import DoorOpener
from edge_agent.services.lockers import DAY_MS, CollectStatus, CompartmentSpec, LockerService
from edge_agent.services.pickup_codes import PickupCodes, ThrottlePolicy
from edge_agent.services.pickup_shelves import (
    PickupShelves,
    ShelfError,
    format_hold,
    mask_customer,
    tag_code,
)
from edge_agent.storage import Database
from edge_agent.web.locker_api import locker_router
from edge_agent.wiring.lockers import assemble_locker_service
from edge_agent.wiring.shelves import assemble_shelves

KEY = b"s" * 32
T0 = 1_800_000_000_000
TAGS = [f"00124b00000000{n:02x}" for n in range(1, 6)]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@dataclass
class Sink:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
        self.events.append((event_type, payload))

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [p for t, p in self.events if t == event_type]


@dataclass
class Rig:
    db: Database
    clock: Clock
    sink: Sink
    audit: AuditLog
    lockers: LockerService
    shelves: PickupShelves
    changes: list[dict[str, Any]]


@contextlib.asynccontextmanager
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    db = Database(tmp_path)
    try:
        clock, sink = Clock(), Sink()
        audit = AuditLog(db, clock=clock)
        codes = PickupCodes(db, KEY, clock=clock, policy=ThrottlePolicy())
        doors = DoorOpener(db, {}, cast(Any, audit))  # no board: never opens anything here
        lockers = assemble_locker_service(db, {}, doors, codes, audit=audit, events=sink, clock=clock)
        registry = TagRegistry(db)
        for t in TAGS:
            await registry.ensure(t, 2, "bs1")
        shelves = assemble_shelves(db, lockers.pickups, lockers, None, audit=audit, events=sink, clock=clock, registry=registry)
        changes: list[dict[str, Any]] = []
        shelves.add_listener(changes.append)
        yield Rig(db, clock, sink, audit, lockers, shelves, changes)
    finally:
        db.close()


async def _loaded(r: Rig, order_id: str = "order-1", slot: str = "B-2") -> str:
    """A shelf B of 3 slots (once) and `order_id` created and loaded into `slot`; returns its code."""
    if r.shelves.shelf("B") is None:
        await r.shelves.define_shelf("B", "B", TAGS[:3])
    code = await r.lockers.create_pickup(order_id, "M", T0 + 3 * DAY_MS, customer=mask_customer("王小明", "13800131234"))
    assert code is not None
    await r.shelves.load(order_id, slot, actor="staff-1")
    return code


def test_the_customer_is_masked() -> None:
    assert mask_customer("王小明", "138-0013-1234") == "王** 1234"
    assert mask_customer("  Anna Schmidt", "+49 30 1234 5678") == "A** 5678"
    assert mask_customer("王", None) == "王**"  # never tells the name's length
    assert mask_customer(None, "1234") == "** 1234"
    assert mask_customer("", "12") is None  # 2 digits would be most of the number
    assert mask_customer("\u200bZoe", "") == "Z**"  # no invisible characters on a label
    assert mask_customer(None, None) is None


def test_a_scanned_label_is_its_code() -> None:
    assert tag_code(" https://shop.example/store-1/s/AbC123?x=1 ") == "AbC123"
    assert tag_code("00124b0000000001") == "00124b0000000001"


async def test_define_refuses_unknown_reused_and_duplicate_labels(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        view = await r.shelves.define_shelf("B", "B", [TAGS[0].upper(), TAGS[1]])
        assert [(s.slot_id, s.position, s.state) for s in view.slots] == [("B-1", 1, "empty"), ("B-2", 2, "empty")]
        for shelf_id, tags, error in (
            ("C", ["ffffffffffffffff"], "unknown_tag"),
            ("C", [TAGS[1]], "tag_in_use"),
            ("C", [TAGS[2], TAGS[2]], "duplicate_tag"),
            ("B", [TAGS[3]], "duplicate_shelf"),
            ("bad id!", [TAGS[3]], "invalid_shelf"),
        ):
            with pytest.raises(ShelfError) as refused:
                await r.shelves.define_shelf(shelf_id, "C", tags)
            assert refused.value.code == error
        assert [s.shelf_id for s in r.shelves.shelves()] == ["B"]
        assert r.changes == [{"action": "defined", "shelf": "B", "slot": None, "order_id": None}]


async def test_load_in_either_order_and_its_refusals(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await r.shelves.define_shelf("B", "B", TAGS[:3])
        await r.lockers.create_pickup("order-1", "M", T0 + DAY_MS, customer="王** 1234")
        await r.lockers.create_pickup("order-2", "S", T0 + DAY_MS)
        with pytest.raises(ShelfError, match="neither"):
            await r.shelves.load("order-1", "order-2", actor="s")
        view = await r.shelves.load(TAGS[1], "order-1", actor="s")  # the label first
        assert (view.slot_id, view.state, view.order_id, view.customer) == ("B-2", "ready", "order-1", "王** 1234")
        page = r.shelves.slot_page(view)
        assert page == SlotPage("B", "2", "order-1", "王** 1234", format_hold(T0 + DAY_MS), "zh_CN")
        ready = r.sink.of("pickup.ready")
        assert ready == [{"order_id": "order-1", "slot": "B-2", "shelf": "B", "hold_until": T0 + DAY_MS,
                          "code": ready[0]["code"]}]
        for first, second, error in (
            ("order-2", TAGS[1], "slot_taken"),
            ("order-1", TAGS[0], "not_created"),
            ("nope", TAGS[0], "unknown_order"),
        ):
            with pytest.raises(ShelfError) as refused:
                await r.shelves.load(first, second, actor="s")
            assert refused.value.code == error
        # An empty slot's page has no order; nothing but slot labels has a page.
        empty = r.shelves.resolve_slot("B-1")
        assert empty is not None and r.shelves.slot_page(empty) == SlotPage("B", "1", locale="zh_CN")
        with pytest.raises(ShelfError) as busy:
            await r.shelves.remove_shelf("B")
        assert busy.value.code == "shelf_in_use"


async def test_one_code_check_one_throttle_for_lockers_and_shelves(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        code = await _loaded(r)
        terminal = "kiosk:k1"
        for _ in range(9):
            assert (await r.lockers.collect(terminal, "99999999")).status is CollectStatus.WRONG
        # A right code of a shelf order: the same check lets it through (a success resets nothing).
        released = await r.lockers.collect(terminal, code)
        assert released.status is CollectStatus.SHELF and released.slot is not None
        assert released.slot == {"slot_id": "B-2", "shelf": "B", "shelf_name": "B", "position": 2}
        assert released.message.startswith("Shelf B, slot 2 is flashing")
        # The tenth failure on the same terminal starts a lockout, for shelf codes as for locker codes.
        assert (await r.lockers.collect(terminal, "99999998")).status is CollectStatus.WRONG
        assert r.lockers.codes.lockout_seconds_left(terminal) > 0
        locked = await r.lockers.collect(terminal, code)
        assert locked.status is CollectStatus.LOCKED_OUT and locked.seconds_left > 0
        # Another terminal is not locked out.
        assert (await r.lockers.collect("locker-screen:A", code)).status is CollectStatus.SHELF
        records = r.audit.records()
        assert [(a.kind, a.compartment, a.actor, a.order_id) for a in records] == [
            ("shelf_release", "B-2", "kiosk:k1", "order-1"), ("shelf_release", "B-2", "locker-screen:A", "order-1")
        ]
        assert r.audit.verify().ok


async def test_handover_needs_a_release_and_kills_the_code(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        code = await _loaded(r)
        with pytest.raises(ShelfError) as early:
            await r.shelves.handover("order-1", actor="web:anna")
        assert early.value.code == "not_released"
        await r.lockers.collect("kiosk:k1", code)
        slot = r.shelves.resolve_slot(TAGS[1])
        assert slot is not None and slot.state == "released" and slot.released_by == "kiosk:k1"
        # A release long ago (the customer left) no longer lets staff hand over.
        r.clock.now += 31 * 60 * 1000
        with pytest.raises(ShelfError, match="not typed"):
            await r.shelves.handover(TAGS[1], actor="web:anna")
        await r.lockers.collect("kiosk:k1", code)
        done = await r.shelves.handover(TAGS[1], actor="web:anna")  # the slot's label scanned
        assert (done.order_id, done.state, done.slot.state) == ("order-1", "collected", "empty")
        assert r.sink.of("pickup.collected") == [{"order_id": "order-1", "slot": "B-2", "shelf": "B"}]
        assert (await r.lockers.collect("kiosk:k1", code)).status is CollectStatus.WRONG
        with pytest.raises(ShelfError):
            await r.shelves.handover("order-1", actor="web:anna")
        assert [a.kind for a in r.audit.records()] == ["shelf_release", "shelf_release", "shelf_handover"]
        assert r.audit.verify().ok
        # The slot is free for the next order.
        await r.lockers.create_pickup("order-3", "S", T0 + 5 * DAY_MS)
        assert (await r.shelves.load("order-3", "B-2", actor="s")).order_id == "order-3"


async def test_expiry_and_cancel_send_shelf_orders_to_retrieval(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        code = await _loaded(r, "order-1", "B-1")
        await _loaded(r, "order-2", "B-3")
        r.clock.now = T0 + 2 * DAY_MS + 1
        await r.lockers.tick()
        assert r.sink.of("pickup.reminder") == [
            {"order_id": "order-1", "slot": "B-1", "shelf": "B", "hold_until": T0 + 3 * DAY_MS},
            {"order_id": "order-2", "slot": "B-3", "shelf": "B", "hold_until": T0 + 3 * DAY_MS},
        ]
        r.clock.now = T0 + 3 * DAY_MS
        await r.lockers.tick()
        assert r.sink.of("pickup.expired")[0] == {
            "order_id": "order-1", "slot": "B-1", "shelf": "B", "hold_until": T0 + 3 * DAY_MS, "retrieval": True
        }
        view = r.shelves.resolve_slot("B-1")
        assert view is not None and view.state == "retrieval"
        assert r.shelves.slot_page(view).hold_until == "已过期 请取回"  # the label says to take it back
        assert (await r.lockers.collect("kiosk:k1", code)).status is CollectStatus.WRONG
        with pytest.raises(ShelfError) as refused:
            await r.shelves.handover("order-1", actor="s")
        assert refused.value.code == "not_ready"
        done = await r.shelves.retrieve(TAGS[0], actor="web:anna")
        assert (done.order_id, done.state, done.slot.state) == ("order-1", "expired", "empty")
        assert r.sink.of("pickup.retrieved")[0] == {"order_id": "order-1", "slot": "B-1", "shelf": "B"}
        # order-2 expired in the same tick; a newer one is cancelled by the cloud while on its slot.
        await r.shelves.retrieve("order-2", actor="s")
        r.clock.now = T0
        await _loaded(r, "order-4", "B-2")
        cancelled = await r.lockers.cancel_pickup("order-4")
        assert cancelled.state == "retrieval" and cancelled.slot == "B-2"
        assert r.sink.of("pickup.cancelled") == [{"order_id": "order-4", "slot": "B-2", "shelf": "B", "retrieval": True}]
        view = r.shelves.resolve_slot("B-2")
        assert view is not None and r.shelves.slot_page(view).hold_until == "已取消 请取回"
        assert (await r.shelves.retrieve("B-2", actor="s")).state == "cancelled"
        with pytest.raises(ShelfError) as again:
            await r.shelves.retrieve("B-2", actor="s")
        assert again.value.code == "slot_empty"
        assert [a.kind for a in r.audit.records()].count("shelf_retrieval") == 3 and r.audit.verify().ok
        await r.shelves.remove_shelf("B")
        assert r.shelves.shelves() == [] and r.shelves.resolve_slot(TAGS[0]) is None


async def test_the_locker_screen_answers_where_a_shelf_order_is(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        # A bank whose board is not connected: its screen still takes codes.
        await r.lockers.add_compartments([CompartmentSpec("A-01", "A", "b1", 1, "M", 1, 1)])
        code = await _loaded(r)
        app = FastAPI()
        app.include_router(locker_router(r.lockers))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            answer = await client.post("/locker/A/api/collect", json={"code": code})
        assert answer.status_code == 200
        body = answer.json()
        assert body["status"] == "shelf" and body["slot"]["slot_id"] == "B-2" and body["slot"]["position"] == 2
        assert "Shelf B, slot 2" in body["message"]
        assert r.changes[-1] == {"action": "released", "shelf": "B", "slot": "B-2", "order_id": "order-1"}
