"""Locks, door sensors, item sensors, a status LED and a buzzer wired straight to GPIO (gpiozero).

For a small locker that needs no lock board. Each compartment has a lock (a solenoid or an electric
strike driven through a relay or MOSFET: energised = released), a door switch (closed door pulls the
input low with the internal pull-up: active = closed) and optionally an item sensor (a reflective or
break-beam sensor: active = something inside). The locks latch by themselves when the door closes,
as lockers' spring latches do, so "locked" is "door closed and the lock not energised".

The same LockBoard interface as the RS485 boards (devices/lockers/board.py), so the locker service
does not care which it drives. On a Raspberry Pi gpiozero uses lgpio; tests use gpiozero's MockFactory.
An unlock energises the lock for `pulse_s` and reports OPENED when the door switch opens within
`confirm_s`, NOT_OPENED otherwise (a jam, or nobody pushing the door: the service decides). It is
never repeated by the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from gpiozero import DigitalInputDevice, OutputDevice

from devices.lockers.board import LockBoardError, LockState, UnlockOutcome, UnlockResult
from devices.lockers.signal import AlarmSignal


@dataclass(frozen=True)
class GpioLockPins:
    lock: int  # output: energised = released
    door: int  # input, pull-up: low (active) = door closed
    item: int | None = None  # input, pull-up: low (active) = item inside


@dataclass
class _Compartment:
    lock: Any
    door: Any
    item: Any | None
    released: bool = False


class GpioLockBoard:
    def __init__(
        self,
        board_id: str,
        pins: list[GpioLockPins],
        *,
        led_pin: int | None = None,
        buzzer_pin: int | None = None,
        pulse_s: float = 0.5,
        confirm_s: float = 2.0,
        pin_factory: Any = None,
    ) -> None:
        if not pins:
            raise ValueError("a GPIO lock board needs at least one lock")
        used = [p for spec in pins for p in (spec.lock, spec.door, spec.item) if p is not None]
        used += [p for p in (led_pin, buzzer_pin) if p is not None]
        if len(used) != len(set(used)):
            raise ValueError(f"GPIO pins used twice: {sorted({p for p in used if used.count(p) > 1})}")
        self.board_id = board_id
        self.lock_count = len(pins)
        self.pulse_s = pulse_s
        self.confirm_s = confirm_s
        self._compartments = [
            _Compartment(
                lock=OutputDevice(spec.lock, active_high=True, initial_value=False, pin_factory=pin_factory),
                door=DigitalInputDevice(spec.door, pull_up=True, pin_factory=pin_factory),
                item=None
                if spec.item is None
                else DigitalInputDevice(spec.item, pull_up=True, pin_factory=pin_factory),
            )
            for spec in pins
        ]
        self.signal = AlarmSignal(led_pin, buzzer_pin, pin_factory=pin_factory)
        self.led, self.buzzer = self.signal.led, self.signal.buzzer
        self._lock = asyncio.Lock()

    def _compartment(self, lock: int) -> _Compartment:
        if not 1 <= lock <= self.lock_count:
            raise LockBoardError(f"{self.board_id}: no lock {lock} (1..{self.lock_count})")
        return self._compartments[lock - 1]

    def _state(self, c: _Compartment) -> LockState:
        door_closed = bool(c.door.is_active)
        return LockState(locked=door_closed and not c.released, item=None if c.item is None else bool(c.item.is_active))

    async def read(self, lock: int) -> LockState:
        return self._state(self._compartment(lock))

    async def read_all(self) -> list[LockState]:
        return [self._state(c) for c in self._compartments]

    async def unlock(self, lock: int) -> UnlockOutcome:
        c = self._compartment(lock)
        async with self._lock:  # one solenoid at a time: they draw a lot of current
            c.released = True
            c.lock.on()
            try:
                await asyncio.sleep(self.pulse_s)
            finally:
                c.lock.off()
                c.released = False
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(0.0, self.confirm_s - self.pulse_s)
            # gpiozero calls back from its own thread; polling the input here is simpler and bounded.
            while c.door.is_active and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        state = self._state(c)
        opened = not c.door.is_active
        return UnlockOutcome(UnlockResult.OPENED if opened else UnlockResult.NOT_OPENED, state)

    def pin_states(self) -> list[dict[str, Any]]:
        """Each lock's relay output and sensor inputs as the pins read now (the technician's devices page)."""
        return [
            {
                "lock": n,
                "released": bool(c.lock.value),
                "door_closed": bool(c.door.is_active),
                "item": None if c.item is None else bool(c.item.is_active),
            }
            for n, c in enumerate(self._compartments, 1)
        ]

    def signal_alarm(self, on: bool) -> None:
        """The status LED blinks and the buzzer beeps while an alarm is open."""
        self.signal.set(on)

    def close(self) -> None:
        for c in self._compartments:
            for device in (c.lock, c.door, c.item):
                if device is not None:
                    with contextlib.suppress(Exception):
                        device.close()
        self.signal.close()
