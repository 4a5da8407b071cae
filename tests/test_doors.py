"""Door openings: once per attempt whatever crashes in between, always audited; on GPIO locks (MockFactory)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from devices.lockers.board import UnlockResult
from devices.lockers.gpio import GpioLockBoard, GpioLockPins
from edge_agent.services.doors import Compartment, DoorAlreadyOpenedError, DoorOpener
from edge_agent.storage import Database


class RecordingAudit:
    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []

    async def append(self, kind: str, **fields: Any) -> None:
        self.rows.append((kind, fields))


@pytest.fixture
def board():
    factory = MockFactory()
    b = GpioLockBoard(
        "gpio-0", [GpioLockPins(lock=17, door=27), GpioLockPins(lock=5, door=6)], pulse_s=0.02, confirm_s=0.3,
        pin_factory=factory,
    )
    factory.pin(27).drive_low()
    factory.pin(6).drive_low()
    yield b, factory
    b.close()


async def springs_open(factory: MockFactory, lock_pin: int, door_pin: int) -> None:
    while not factory.pin(lock_pin).state:
        await asyncio.sleep(0.002)
    factory.pin(door_pin).drive_high()


async def test_one_opening_per_attempt_and_every_opening_audited(tmp_path: Path, board) -> None:
    b, factory = board
    db = Database(tmp_path)
    audit = RecordingAudit()
    doors = DoorOpener(db, {"gpio-0": b}, audit)
    comp = Compartment("A-01", "gpio-0", 1)
    spring = asyncio.create_task(springs_open(factory, 17, 27))
    opening = await doors.open(comp, purpose="code", attempt="collect-1", actor="terminal-A", order_id="o-1")
    await spring
    assert opening.outcome.result is UnlockResult.OPENED
    with pytest.raises(DoorAlreadyOpenedError):
        await doors.open(comp, purpose="code", attempt="collect-1", actor="terminal-A", order_id="o-1")
    assert audit.rows[0][0] == "code" and audit.rows[0][1]["compartment"] == "A-01"
    assert len(audit.rows) == 1
    # A jammed door (nobody pushes it open) is recorded as not opened, and not audited as an opening.
    jammed = await doors.open(Compartment("A-02", "gpio-0", 2), purpose="test", attempt="test-1", actor="tech")
    assert jammed.outcome.result is UnlockResult.NOT_OPENED
    assert len(audit.rows) == 1
    assert doors.attempts("A-02") == [("test-1", "test", "not_opened")]
    db.close()


async def test_a_crash_between_intent_and_outcome_never_opens_again(tmp_path: Path, board) -> None:
    b, factory = board
    db = Database(tmp_path)
    # What a crash leaves: the intent committed, no outcome.
    await db.write(
        lambda c: c.execute(
            "INSERT INTO door_ops(op_id, compartment, purpose, attempt, order_id, actor, state, created_ms) "
            "VALUES ('op-x', 'A-01', 'code', 'collect-9', 'o-9', 'terminal-A', 'intent', 1)"
        )
    )
    db.close()
    db = Database(tmp_path)
    doors = DoorOpener(db, {"gpio-0": b}, RecordingAudit())
    assert await doors.recover() == ["op-x"]
    assert doors.attempts("A-01") == [("collect-9", "code", "unknown")]
    pulses_before = factory.pin(17).state
    with pytest.raises(DoorAlreadyOpenedError):
        await doors.open(Compartment("A-01", "gpio-0", 1), purpose="code", attempt="collect-9", actor="terminal-A")
    assert factory.pin(17).state == pulses_before, "the lock was not pulsed"
    db.close()


async def test_audit_verify_from_the_command_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from edge_agent.services.audit import AuditLog

    db = Database(tmp_path)
    log = AuditLog(db)
    await log.append("test", compartment="A-01", actor="tech", order_id=None, detail={"reason": "install"})
    db.close()
    ok = subprocess.run(
        [sys.executable, "-m", "edge_agent", "audit", "verify", "--data-dir", str(tmp_path)], capture_output=True,
        text=True, timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


class HangingBoard:
    """A board whose unlock never returns: the agent dies while the frame is on its way."""

    def __init__(self) -> None:
        self.unlocks = 0

    async def unlock(self, lock: int) -> Any:
        self.unlocks += 1
        await asyncio.Event().wait()


async def test_an_opening_cut_short_by_a_crash_is_audited_at_the_next_start(tmp_path: Path) -> None:
    """Issue 14.4: killed just after the unlock frame, the agent used to leave the opening as door_ops
    `unknown` with no audit row and no audit.door_opened; recovery now audits it with what is known."""
    db = Database(tmp_path)
    hanging = HangingBoard()
    doors = DoorOpener(db, {"b": hanging}, RecordingAudit())  # type: ignore[dict-item]
    opening = asyncio.create_task(doors.open(Compartment("A-07", "b", 7), purpose="code", attempt="collect-7",
                                             actor="terminal-A", order_id="o-7"))
    while hanging.unlocks == 0:
        await asyncio.sleep(0.001)
    opening.cancel()  # the process dies here: the intent is committed, nothing after it
    with pytest.raises(asyncio.CancelledError):
        await opening
    db.close()

    db = Database(tmp_path)
    audit = RecordingAudit()
    doors = DoorOpener(db, {}, audit)
    read: list[str] = []

    async def door(compartment: str) -> str:
        read.append(compartment)
        return "open"

    assert await doors.recover(door) == [db.read(lambda c: c.execute("SELECT op_id FROM door_ops").fetchone()[0])]
    assert read == ["A-07"]
    assert len(audit.rows) == 1
    kind, fields = audit.rows[0]
    assert kind == "code" and fields["compartment"] == "A-07" and fields["actor"] == "terminal-A"
    assert fields["order_id"] == "o-7"
    detail = fields["detail"]
    assert detail["attempt"] == "collect-7" and detail["result"] == "unknown"
    assert detail["interrupted"] is True and detail["recovered"] is True and detail["door_at_restart"] == "open"
    # The audit row and the mark go in one transaction: run the mark as the real audit log would.
    await db.write(fields["also"])
    assert await doors.recover(door) == [] and len(audit.rows) == 1  # audited once, not at every start
    db.close()


async def test_an_opening_recorded_but_not_audited_before_a_crash_is_audited_at_the_next_start(
    tmp_path: Path,
) -> None:
    db = Database(tmp_path)
    await db.write(lambda c: c.execute(
        "INSERT INTO door_ops(op_id, compartment, purpose, attempt, order_id, actor, state, created_ms, finished_ms) "
        "VALUES ('op-o', 'B-02', 'staff', 'load-2', 'o-2', 'staff:17', 'opened', 1, 2)"
    ))
    audit = RecordingAudit()
    await DoorOpener(db, {}, audit).recover()
    assert [(k, f["detail"]["result"], "interrupted" in f["detail"]) for k, f in audit.rows] == [("staff", "opened", False)]
    db.close()


async def test_audit_rows_that_never_reached_the_cloud_are_published_at_the_next_start(tmp_path: Path) -> None:
    from cloud_link.bus import EventBus
    from cloud_link.outbox import Outbox
    from cloud_link.topics import Topics
    from edge_agent.services.audit import AuditLog
    from edge_agent.wiring.lockers import AuditToCloud

    db = Database(tmp_path)
    outbox = Outbox(db, Topics("retail/v1", "s1"), max_bytes=1 << 20)
    await outbox.open()
    log = AuditLog(db)
    # What a crash between the audit row and its event leaves: the row, no event, not marked published.
    await log.append("code", compartment="A-01", actor="terminal-A", order_id="o-1", detail={"op_id": "x"})
    to_cloud = AuditToCloud(log, EventBus(outbox))
    assert await to_cloud.publish_unsent() == 1
    await asyncio.sleep(0.05)  # the mark is written behind
    assert await to_cloud.publish_unsent() == 0
    events = [m for m in outbox.read_events(0, 10) if m.topic.endswith("/audit.door_opened")]
    assert len(events) == 1
    assert log.verify().ok and log.verify().rows == 1
    db.close()
