"""The locker service (issue 4 parts 3, 5, 6) against the Kerong emulator over a real pty, with scripted people."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from devices.lockers.kerong import KerongBoard
from devices.lockers.signal import AlarmSignal
from edge_agent.services.doors import DoorOpener
from edge_agent.services.lockers import (
    DAY_MS,
    CollectStatus,
    CompartmentSpec,
    LockerError,
    LockerService,
    LockerTimings,
)
from edge_agent.services.pickup_codes import PickupCodes
from edge_agent.storage import Database
from edge_agent.wiring.lockers import assemble_locker_service
from firmware_bridge.emulators.kerong import DEFAULT_LINE_RATE, Action, LockBoardEmulator, Person
from firmware_bridge.emulators.pty_line import PtyPort
from firmware_bridge.kerong.bus import KerongBus
from firmware_bridge.kerong.frames import Command

KEY = b"k" * 32
T0 = 1_800_000_000_000
FAST = LockerTimings(
    poll_s=0.05, jam_s=0.6, load_timeout_s=5.0, collect_timeout_s=5.0, door_open_alarm_s=0.8
)
SPECS = [
    CompartmentSpec("A-01", "A", "kerong-0", 1, "S", 1, 1),
    CompartmentSpec("A-02", "A", "kerong-0", 2, "S", 1, 2),
    CompartmentSpec("A-03", "A", "kerong-0", 3, "M", 2, 1),
    CompartmentSpec("A-12", "A", "kerong-0", 12, "L", 2, 3),
]
LOCK = {s.id: s.lock for s in SPECS}
PLACE = Person(open_after_s=0.1, hold_s=0.3, action=Action.PLACE)
TAKE = Person(open_after_s=0.1, hold_s=0.3, action=Action.TAKE)
LOOK = Person(open_after_s=0.1, hold_s=0.3, action=Action.NOTHING)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class RecordingAudit:
    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []

    async def append(self, kind: str, **fields: Any) -> None:
        self.rows.append((kind, fields))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.rows]


class RecordingSink:
    """Events as published; for pickup events also the pickup's state in the database at that moment."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.state_at_publish: list[tuple[str, str | None]] = []
        self.service: LockerService | None = None

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
        self.events.append((event_type, payload))
        if self.service is not None and event_type.startswith("pickup."):
            pickup = self.service.pickup(payload["order_id"])
            self.state_at_publish.append((event_type, None if pickup is None else pickup.state))

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [p for t, p in self.events if t == event_type]

    async def wait(self, event_type: str, count: int = 1, timeout: float = 8.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.of(event_type)) < count:
                await asyncio.sleep(0.02)
        return self.of(event_type)


@dataclass
class Rig:
    tmp: Path
    emulator: LockBoardEmulator
    bus: KerongBus
    db: Database
    clock: Clock
    audit: RecordingAudit
    sink: RecordingSink
    svc: LockerService

    def unlocks(self, compartment: str) -> int:
        return self.emulator.unlock_count(0, LOCK[compartment])

    def person(self, compartment: str, person: Person) -> None:
        self.emulator.set_person(0, LOCK[compartment], person)

    def new_service(self) -> LockerService:
        """A new agent process on the same database (the old one is gone)."""
        self.db = Database(self.tmp)
        self.svc = build_service(self.db, self.bus, self.clock, self.audit, self.sink)
        return self.svc


def build_service(
    db: Database, bus: KerongBus, clock: Clock, audit: RecordingAudit, sink: RecordingSink
) -> LockerService:
    boards = {"kerong-0": KerongBoard(bus, 0)}
    codes = PickupCodes(db, KEY, clock=clock)
    svc = assemble_locker_service(
        db, boards, DoorOpener(db, boards, audit), codes, audit=audit, events=sink, timings=FAST, clock=clock
    )
    sink.service = svc
    return svc


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    emulator = LockBoardEmulator(1)
    for c in emulator.compartments.values():
        c.person = Person(open_after_s=None)
    path = tmp_path / "lockers0"
    data = tmp_path / "data"
    data.mkdir()
    async with emulator.running(PtyPort(path, line_rate=DEFAULT_LINE_RATE)):
        bus = KerongBus(str(path), reopen_interval_s=0.1)
        async with bus.running(connect_timeout=5):
            db = Database(data)
            clock, audit, sink = Clock(), RecordingAudit(), RecordingSink()
            svc = build_service(db, bus, clock, audit, sink)
            await svc.add_compartments(SPECS)
            r = Rig(data, emulator, bus, db, clock, audit, sink, svc)
            try:
                yield r
            finally:
                await r.svc.close()
                r.db.close()


@contextlib.asynccontextmanager
async def alarm_loop(svc: LockerService) -> AsyncIterator[None]:
    task = asyncio.create_task(svc.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def load(r: Rig, order_id: str, size: str = "S", hold_ms: int = 7 * DAY_MS) -> tuple[str, str]:
    """Create and load an order (the caller scripted the courier); returns (code, compartment)."""
    code = await r.svc.create_pickup(order_id, size, T0 + hold_ms)
    assert code is not None
    started = await r.svc.start_load(order_id, "staff-1")
    await r.sink.wait("pickup.ready", len(r.sink.of("pickup.ready")) + 1)
    return code, started.compartment


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_load_then_collect(rig: Rig) -> None:
    r = rig
    r.person("A-01", PLACE)
    code = await r.svc.create_pickup("o-1", "S", T0 + 7 * DAY_MS)
    assert code is not None and len(code) == 8
    started = await r.svc.start_load("o-1", "staff-1")
    assert started.compartment == "A-01"
    assert started.message == "Door 1 is open: first row from the top, first from the left"
    (ready,) = await r.sink.wait("pickup.ready")
    assert ready == {"order_id": "o-1", "compartment": "A-01", "hold_until": T0 + 7 * DAY_MS, "code": code}
    assert r.emulator.item(0, 1)
    r.person("A-01", TAKE)
    result = await r.svc.collect("terminal-A", code)
    assert result.status is CollectStatus.OK and result.compartment == "A-01"
    assert result.message == "Door 1 is open: first row from the top, first from the left"
    (collected,) = await r.sink.wait("pickup.collected")
    assert collected == {"order_id": "o-1", "compartment": "A-01"}
    p = r.svc.pickup("o-1")
    assert p is not None and p.state == "collected"
    assert (await r.svc.collect("terminal-A", code)).status is CollectStatus.WRONG  # dead after the collect
    assert r.unlocks("A-01") == 2
    assert r.audit.kinds() == ["staff", "code"]
    # persisted before published
    assert ("pickup.ready", "ready") in r.sink.state_at_publish
    assert ("pickup.collected", "collected") in r.sink.state_at_publish
    # the compartment is free again
    r.person("A-01", PLACE)
    await r.svc.create_pickup("o-2", "S", T0 + DAY_MS * 7)
    assert (await r.svc.start_load("o-2", "staff-1")).compartment == "A-01"
    await r.sink.wait("pickup.ready", 2)


async def test_cloud_issued_code_and_larger_compartment_fallback(rig: Rig) -> None:
    r = rig
    r.person("A-03", PLACE)
    assert await r.svc.create_pickup("o-m", "M", T0 + DAY_MS * 7, code="12345678") is None
    assert (await r.svc.start_load("o-m", "courier-9")).compartment == "A-03"
    (ready,) = await r.sink.wait("pickup.ready")
    assert "code" not in ready
    r.person("A-12", PLACE)
    await r.svc.create_pickup("o-m2", "M", T0 + DAY_MS * 7)
    started = await r.svc.start_load("o-m2", "courier-9")
    assert started.compartment == "A-12"  # no M left: the next larger size
    assert started.message == "Door 12 is open: second row from the top, third from the left"
    await r.sink.wait("pickup.ready", 2)
    await r.svc.create_pickup("o-m3", "L", T0 + DAY_MS * 7)
    with pytest.raises(LockerError):
        await r.svc.start_load("o-m3", "courier-9")
    assert r.svc.pickup("o-m3").state == "created"  # type: ignore[union-attr]


async def test_load_closed_empty_fails_and_frees_the_compartment(rig: Rig) -> None:
    r = rig
    r.person("A-01", LOOK)
    await r.svc.create_pickup("o-e", "S", T0 + DAY_MS * 7)
    await r.svc.start_load("o-e", "staff-1")
    (failed,) = await r.sink.wait("pickup.load_failed")
    assert failed == {"order_id": "o-e", "compartment": "A-01", "reason": "empty"}
    p = r.svc.pickup("o-e")
    assert p is not None and p.state == "created" and p.compartment is None
    r.person("A-01", PLACE)
    assert (await r.svc.start_load("o-e", "staff-1")).compartment == "A-01"
    await r.sink.wait("pickup.ready")


async def test_not_collected_then_collect_again_with_the_same_code(rig: Rig) -> None:
    r = rig
    r.person("A-01", PLACE)
    code, comp = await load(r, "o-n")
    r.person(comp, LOOK)  # opens, looks, closes with the parcel still inside
    assert (await r.svc.collect("terminal-A", code)).status is CollectStatus.OK
    (nc,) = await r.sink.wait("pickup.not_collected")
    assert nc == {"order_id": "o-n", "compartment": comp}
    p = r.svc.pickup("o-n")
    assert p is not None and p.state == "ready"
    await r.svc.wait_idle()
    r.person(comp, TAKE)
    assert (await r.svc.collect("terminal-A", code)).status is CollectStatus.OK
    await r.sink.wait("pickup.collected")
    assert r.unlocks(comp) == 3  # load, first collect, second collect
    assert (await r.svc.collect("terminal-A", code)).status is CollectStatus.WRONG


async def test_wrong_codes_then_lockout_and_messages_reveal_nothing(rig: Rig) -> None:
    r = rig
    r.person("A-01", PLACE)
    code, comp = await load(r, "o-w")
    await r.svc.cancel_pickup("o-w")  # a code that existed and is now dead
    dead = await r.svc.collect("terminal-B", code)
    never = await r.svc.collect("terminal-B", "00000000")
    garbage = await r.svc.collect("terminal-B", "12ab")
    assert dead.status is never.status is garbage.status is CollectStatus.WRONG
    assert dead.message == never.message == garbage.message
    assert dead.compartment is None
    for i in range(7):
        assert (await r.svc.collect("terminal-B", f"{i:08d}9")).status is CollectStatus.WRONG  # 10 failures so far
    locked = await r.svc.collect("terminal-B", "11111111")
    assert locked.status is CollectStatus.LOCKED_OUT and 0 < locked.seconds_left <= 30
    assert str(locked.seconds_left) in locked.message
    assert r.unlocks(comp) == 1  # only the load


async def test_lockout_applies_to_a_right_code_too(rig: Rig) -> None:
    r = rig
    r.person("A-01", PLACE)
    code, comp = await load(r, "o-l")
    for i in range(10):
        assert (await r.svc.collect("terminal-C", f"9{i:07d}")).status is CollectStatus.WRONG
    assert (await r.svc.collect("terminal-C", code)).status is CollectStatus.LOCKED_OUT
    assert r.unlocks(comp) == 1
    r.person(comp, TAKE)
    assert (await r.svc.collect("terminal-D", code)).status is CollectStatus.OK  # another terminal is not locked
    await r.sink.wait("pickup.collected")


async def test_restart_in_the_middle_of_a_collect_does_not_reopen_the_door(rig: Rig) -> None:
    r = rig
    r.person("A-01", PLACE)
    code, comp = await load(r, "o-r")
    r.person(comp, Person(open_after_s=0.1, hold_s=1.6, action=Action.TAKE))
    before = len(r.emulator.unlock_log)
    assert (await r.svc.collect("terminal-A", code)).status is CollectStatus.OK
    await wait_until(lambda: r.emulator.door_open(0, 1))
    # The agent dies with the door open.
    await r.svc.close()
    r.db.close()
    svc = r.new_service()
    mismatches = await svc.recover()
    assert [m["compartment"] for m in mismatches] == [comp]
    assert r.sink.of("alarm.state_mismatch") == mismatches
    # The customer types the code again while the door is still open: no second opening.
    again = await svc.collect("terminal-A", code)
    assert again.status is CollectStatus.OK
    (collected,) = await r.sink.wait("pickup.collected")
    assert collected["order_id"] == "o-r"
    assert len(r.emulator.unlock_log) - before == 1
    assert r.unlocks(comp) == 2  # the load and the one collect
    assert (await svc.collect("terminal-A", code)).status is CollectStatus.WRONG


async def test_restart_between_intent_and_unlock_never_sends_it(rig: Rig) -> None:
    r = rig
    r.person("A-01", PLACE)
    _code, comp = await load(r, "o-i")
    # What a crash right after the durable intent leaves behind.
    await r.db.write(
        lambda c: c.execute(
            "INSERT INTO door_ops(op_id, compartment, purpose, attempt, order_id, actor, state, created_ms) "
            "VALUES ('op-x', ?, 'code', 'collect-o-i-x', 'o-i', 'terminal-A', 'intent', 1)",
            (comp,),
        )
    )
    await r.svc.close()
    r.db.close()
    svc = r.new_service()
    assert await svc.recover() == []  # the door is closed with the parcel inside: as the database says
    assert r.unlocks(comp) == 1
    p = svc.pickup("o-i")
    assert p is not None and p.state == "ready"


async def test_forced_open_and_left_open_alarms(rig: Rig) -> None:
    r = rig
    async with alarm_loop(r.svc):
        r.emulator.force_open(0, 3)
        (forced,) = await r.sink.wait("alarm.door_forced", timeout=2.0)  # within 2 s
        assert forced["compartment"] == "A-03"
        assert r.audit.kinds() == ["uncommanded"]
        (left,) = await r.sink.wait("alarm.door_left_open")
        assert left["compartment"] == "A-03" and left["commanded"] is False
        await asyncio.sleep(0.3)
        assert len(r.sink.of("alarm.door_forced")) == 1 and len(r.sink.of("alarm.door_left_open")) == 1
        r.emulator.close_door(0, 3)
        await asyncio.sleep(0.2)
        r.emulator.force_open(0, 3, close_after_s=0.2)  # a new incident
        await r.sink.wait("alarm.door_forced", 2, timeout=2.0)
        await asyncio.sleep(0.8)
        assert len(r.sink.of("alarm.door_left_open")) == 1  # closed before the limit
        # A commanded opening is not forced; a slow courier still gets the left-open alarm.
        r.person("A-01", Person(open_after_s=0.1, hold_s=1.6, action=Action.PLACE))
        await r.svc.create_pickup("o-f", "S", T0 + DAY_MS * 7)
        await r.svc.start_load("o-f", "staff-1")
        await r.sink.wait("pickup.ready")
        assert len(r.sink.of("alarm.door_forced")) == 2
        left_open = r.sink.of("alarm.door_left_open")
        assert [a["compartment"] for a in left_open] == ["A-03", "A-01"] and left_open[1]["commanded"] is True
        assert r.audit.kinds() == ["uncommanded", "uncommanded", "staff"]


async def test_jammed_lock_goes_out_of_service(rig: Rig) -> None:
    r = rig
    r.emulator.set_jammed(0, 1, True)
    await r.svc.create_pickup("o-j", "S", T0 + DAY_MS * 7)
    async with alarm_loop(r.svc):
        assert (await r.svc.start_load("o-j", "staff-1")).compartment == "A-01"
        (jam,) = await r.sink.wait("alarm.lock_jammed")
        assert jam["compartment"] == "A-01"
        (failed,) = await r.sink.wait("pickup.load_failed")
        assert failed["reason"] == "jammed"
        info = r.svc.compartment("A-01")
        assert not info.enabled and info.oos_reason == "jammed"
        r.person("A-02", PLACE)
        assert (await r.svc.start_load("o-j", "staff-1")).compartment == "A-02"
        await r.sink.wait("pickup.ready")
        assert r.sink.of("alarm.door_forced") == []
    assert r.unlocks("A-01") == 1


async def test_reminder_and_expiry_with_an_injected_clock(rig: Rig) -> None:
    r = rig
    r.person("A-01", PLACE)
    hold = T0 + 7 * DAY_MS
    code, comp = await load(r, "o-x")
    await r.svc.create_pickup("o-never-loaded", "S", hold)
    await r.svc.tick(T0 + 5 * DAY_MS)
    assert r.sink.of("pickup.reminder") == []
    r.clock.now = hold - DAY_MS + 1
    await r.svc.tick()
    assert r.sink.of("pickup.reminder") == [{"order_id": "o-x", "compartment": comp, "hold_until": hold}]
    await r.svc.tick(hold - 1000)
    assert len(r.sink.of("pickup.reminder")) == 1  # once
    r.clock.now = hold
    await r.svc.tick()
    expired = {p["order_id"]: p for p in r.sink.of("pickup.expired")}
    assert expired["o-x"]["retrieval"] is True and expired["o-x"]["compartment"] == comp
    assert expired["o-never-loaded"]["retrieval"] is False
    assert r.svc.pickup("o-x").state == "retrieval"  # type: ignore[union-attr]
    assert r.svc.pickup("o-never-loaded").state == "expired"  # type: ignore[union-attr]
    assert (await r.svc.collect("terminal-A", code)).status is CollectStatus.WRONG
    await r.svc.tick(hold + DAY_MS)
    assert len(r.sink.of("pickup.expired")) == 2
    assert r.unlocks(comp) == 1


async def test_cancel(rig: Rig) -> None:
    r = rig
    code_created = await r.svc.create_pickup("o-c1", "S", T0 + DAY_MS * 7)
    cancelled = await r.svc.cancel_pickup("o-c1")
    assert cancelled.state == "cancelled"
    r.person("A-01", PLACE)
    code_ready, comp = await load(r, "o-c2")
    assert (await r.svc.cancel_pickup("o-c2")).state == "retrieval"
    assert [p["retrieval"] for p in r.sink.of("pickup.cancelled")] == [False, True]
    for code in (code_created, code_ready):
        assert code is not None
        assert (await r.svc.collect("terminal-A", code)).status is CollectStatus.WRONG
    with pytest.raises(LockerError):
        await r.svc.cancel_pickup("o-c2")
    with pytest.raises(LockerError):
        await r.svc.start_load("o-c1", "staff-1")
    assert r.unlocks(comp) == 1


async def test_recover_reports_differences_with_the_database(rig: Rig) -> None:
    r = rig
    r.person("A-01", PLACE)
    await load(r, "o-m")
    r.emulator.set_item(0, 1, False)  # ready, but the parcel is gone
    r.emulator.set_item(0, 2, True)  # free, but something is inside
    r.emulator.force_open(0, 3)  # free, door open
    await r.svc.close()
    r.db.close()
    svc = r.new_service()
    found = {(m["compartment"], m["expected"]) for m in await svc.recover()}
    assert found == {
        ("A-01", "ready, item inside"),
        ("A-02", "free, empty"),
        ("A-03", "free, door closed"),
    }
    assert len(r.sink.of("alarm.state_mismatch")) == 3
    assert svc.compartment("A-02").enabled is False  # not loaded into until staff checked it
    assert len(r.emulator.unlock_log) == 1  # recover opened nothing


async def test_jam_during_a_collect_keeps_the_pickup_and_its_code(rig: Rig) -> None:
    r = rig
    r.person("A-01", PLACE)
    code, comp = await load(r, "o-jc")
    r.emulator.set_jammed(0, 1, True)
    assert (await r.svc.collect("terminal-A", code)).status is CollectStatus.OK
    (jam,) = await r.sink.wait("alarm.lock_jammed")
    assert jam["compartment"] == comp and jam["during"] == "collect"
    await r.svc.wait_idle()
    p = r.svc.pickup("o-jc")
    assert p is not None and p.state == "ready"
    unavailable = await r.svc.collect("terminal-A", code)
    assert unavailable.status is CollectStatus.UNAVAILABLE
    assert r.unlocks(comp) == 2  # the load and the jammed collect: nothing sent while out of service
    assert r.sink.of("pickup.collected") == [] and r.sink.of("pickup.not_collected") == []


async def test_store_wide_guessing_raises_an_alarm(rig: Rig) -> None:
    r = rig
    for terminal in ("t-1", "t-2", "t-3"):
        for i in range(10):
            assert (await r.svc.collect(terminal, f"5{i:07d}")).status is CollectStatus.WRONG
    (alarm,) = r.sink.of("alarm.code_guessing")
    assert alarm["failures"] == 30 and alarm["terminals"] == ["t-1", "t-2", "t-3"]


async def test_restart_after_the_door_closed_but_before_the_collect_was_recorded(rig: Rig) -> None:
    r = rig
    r.person("A-01", PLACE)
    code, comp = await load(r, "o-rc")
    r.person(comp, TAKE)
    assert (await r.svc.collect("terminal-A", code)).status is CollectStatus.OK
    await r.svc.close()  # the agent dies; the customer takes the parcel and closes the door meanwhile
    await wait_until(lambda: r.emulator.latched(0, 1) and not r.emulator.item(0, 1))
    r.db.close()
    svc = r.new_service()
    assert await svc.recover() == []
    assert r.sink.of("pickup.collected") == [{"order_id": "o-rc", "compartment": comp}]
    assert (await svc.collect("terminal-A", code)).status is CollectStatus.WRONG  # dead
    assert r.unlocks(comp) == 2


async def test_restart_during_a_load_finishes_it_with_a_fresh_code(rig: Rig) -> None:
    r = rig
    r.person("A-01", Person(open_after_s=0.1, hold_s=0.6, action=Action.PLACE))
    first = await r.svc.create_pickup("o-rl", "S", T0 + DAY_MS * 7)
    await r.svc.start_load("o-rl", "staff-1")
    await r.svc.close()  # the agent dies with the door about to open
    await wait_until(lambda: r.emulator.latched(0, 1) and r.emulator.item(0, 1))
    r.db.close()
    svc = r.new_service()
    assert await svc.recover() == []
    (ready,) = r.sink.of("pickup.ready")
    assert ready["compartment"] == "A-01" and ready["code"] != first  # the first code was never sent
    assert (await svc.collect("terminal-A", first or "")).status is CollectStatus.WRONG
    r.person("A-01", TAKE)
    assert (await svc.collect("terminal-A", ready["code"])).status is CollectStatus.OK
    await r.sink.wait("pickup.collected")
    assert r.unlocks("A-01") == 2


async def test_staff_retrieve_an_expired_order_and_the_compartment_is_free_again(rig: Rig) -> None:
    r = rig
    r.person("A-01", PLACE)
    hold = T0 + DAY_MS
    await r.svc.create_pickup("o-rt", "S", hold)
    await r.svc.start_load("o-rt", "staff-1")
    await r.sink.wait("pickup.ready")
    r.clock.now = hold
    await r.svc.tick()
    with pytest.raises(LockerError):
        await r.svc.start_retrieval("o-nothing", "staff-1")
    r.person("A-01", LOOK)
    await r.svc.start_retrieval("o-rt", "staff-1")
    (failed,) = await r.sink.wait("pickup.retrieval_failed")
    assert failed["reason"] == "item_inside"
    await r.svc.wait_idle()
    r.person("A-01", TAKE)
    started = await r.svc.start_retrieval("o-rt", "staff-1")
    assert started.compartment == "A-01"
    await r.sink.wait("pickup.retrieved")
    p = r.svc.pickup("o-rt")
    assert p is not None and p.state == "expired"
    r.person("A-01", PLACE)
    await r.svc.create_pickup("o-next", "S", hold + 7 * DAY_MS)
    assert (await r.svc.start_load("o-next", "staff-1")).compartment == "A-01"
    await r.sink.wait("pickup.ready", 2)
    assert r.audit.kinds() == ["staff", "staff", "staff", "staff"]


async def test_banks_keep_to_their_own_compartments(rig: Rig) -> None:
    r = rig
    await r.svc.add_compartments([CompartmentSpec("B-01", "B", "kerong-0", 5, "S", 1, 1)])
    r.emulator.set_person(0, 5, PLACE)
    code = await r.svc.create_pickup("o-b", "S", T0 + 7 * DAY_MS)
    assert code is not None
    started = await r.svc.start_load("o-b", "courier-7", bank="B")
    assert started.compartment == "B-01"  # A-01 is free and sorts first, but the courier stands at bank B
    await r.sink.wait("pickup.ready")
    await r.svc.create_pickup("o-b2", "S", T0 + 7 * DAY_MS)
    with pytest.raises(LockerError, match="in bank B"):
        await r.svc.start_load("o-b2", "courier-7", bank="B")
    # The right code at the wrong bank's screen opens nothing, costs no attempt, and says where to go.
    elsewhere = await r.svc.collect("locker-screen:A", code, bank="A")
    assert elsewhere.status is CollectStatus.ELSEWHERE and "locker B" in elsewhere.message
    assert r.emulator.unlock_count(0, 5) == 1 and r.unlocks("A-01") == 0
    r.emulator.set_person(0, 5, TAKE)
    assert (await r.svc.collect("locker-screen:B", code, bank="B")).status is CollectStatus.OK
    await r.sink.wait("pickup.collected")
    assert r.emulator.unlock_count(0, 5) == 2


async def test_retrieval_tasks_and_open_alarms_per_bank(rig: Rig) -> None:
    r = rig
    await r.svc.add_compartments([CompartmentSpec("B-01", "B", "kerong-0", 5, "S", 1, 1)])
    r.person("A-01", PLACE)
    await load(r, "o-exp", hold_ms=DAY_MS)
    r.clock.now = T0 + DAY_MS
    await r.svc.tick()
    assert [p.order_id for p in r.svc.retrievals("A")] == ["o-exp"]
    assert r.svc.retrievals("B") == [] and [p.order_id for p in r.svc.retrievals()] == ["o-exp"]
    assert r.svc.open_alarms() == []
    await r.svc.set_in_service("A-02", False, "jammed")
    async with alarm_loop(r.svc):
        r.emulator.force_open(0, 5)
        await r.sink.wait("alarm.door_forced", timeout=2.0)
        kinds_a = [(a.kind, a.compartment) for a in r.svc.open_alarms("A")]
        kinds_b = [(a.kind, a.compartment) for a in r.svc.open_alarms("B")]
    assert kinds_a == [("out_of_service", "A-02")]
    assert kinds_b == [("door_forced", "B-01")]
    forced = r.svc.open_alarms("B")[0]
    assert forced.since_ms is not None and abs(forced.since_ms - r.clock.now) < 5000


async def test_the_led_and_buzzer_signal_while_an_alarm_is_open(rig: Rig) -> None:
    r = rig
    signal = AlarmSignal(led_pin=13, buzzer_pin=19, pin_factory=MockFactory())
    boards = {"kerong-0": KerongBoard(r.bus, 0)}
    svc = assemble_locker_service(
        r.db, boards, DoorOpener(r.db, boards, r.audit), PickupCodes(r.db, KEY, clock=r.clock),
        audit=r.audit, events=r.sink, timings=FAST, clock=r.clock, alarm_signal=signal.set,
    )
    try:
        assert signal.led is not None and signal.buzzer is not None
        led_pin = signal.led.pin
        async with alarm_loop(svc):
            await asyncio.sleep(0.2)
            assert not signal.on  # every door closed: quiet
            r.emulator.force_open(0, 3)
            await r.sink.wait("alarm.door_forced", timeout=2.0)
            await wait_until(lambda: signal.on, timeout=1.0)
            await asyncio.sleep(0.6)  # blinking: the LED pin went high and low again
            assert {s.state for s in led_pin.states} >= {True, False}
            r.emulator.close_door(0, 3)
            await wait_until(lambda: not signal.on, timeout=1.0)
            assert not signal.led.is_lit and not signal.buzzer.is_active
            # A jam keeps it on until staff put the compartment back in service.
            await svc.set_in_service("A-02", False, "jammed")
            await wait_until(lambda: signal.on, timeout=1.0)
            await svc.set_in_service("A-02", True)
            await wait_until(lambda: not signal.on, timeout=1.0)
    finally:
        signal.close()


async def test_a_door_opened_and_shut_while_the_status_reads_were_lost_still_counts(rig: Rig) -> None:
    """The unlock is answered, its status reads are lost while a quick customer opens, takes and shuts:
    the first reading after shows the lock latched; the item sensor tells the parcel is gone."""
    r = rig
    r.person("A-01", PLACE)
    code, comp = await load(r, "o-quick")
    r.person(comp, Person(open_after_s=0.05, hold_s=0.2, action=Action.TAKE))
    r.emulator.set_reply_loss(1.0, frozenset({Command.READ_ALL}))

    async def line_back() -> None:
        await asyncio.sleep(0.5)  # the door is shut again by now
        r.emulator.set_reply_loss(0.0)

    restore = asyncio.create_task(line_back())
    result = await r.svc.collect("terminal-A", code)
    await restore
    assert result.status is CollectStatus.OK
    (collected,) = await r.sink.wait("pickup.collected")
    assert collected["order_id"] == "o-quick"
    assert r.sink.of("alarm.lock_jammed") == [] and r.svc.compartment(comp).enabled
    assert r.unlocks(comp) == 2
