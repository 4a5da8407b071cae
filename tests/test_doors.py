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
