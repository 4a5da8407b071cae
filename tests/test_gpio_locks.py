"""GPIO-wired locks through gpiozero's own MockFactory: the same LockBoard behaviour as RS485 boards."""

from __future__ import annotations

import asyncio

import pytest
from gpiozero.pins.mock import MockFactory

from devices.lockers.board import LockBoardError, UnlockResult
from devices.lockers.gpio import GpioLockBoard, GpioLockPins
from devices.lockers.signal import AlarmSignal


@pytest.fixture
def rig():
    factory = MockFactory()
    board = GpioLockBoard(
        "gpio-0",
        [GpioLockPins(lock=17, door=27, item=22), GpioLockPins(lock=5, door=6)],
        led_pin=13,
        buzzer_pin=19,
        pulse_s=0.05,
        confirm_s=0.5,
        pin_factory=factory,
    )
    # Doors closed (switch pulls low), compartment 1 holds an item.
    factory.pin(27).drive_low()
    factory.pin(6).drive_low()
    factory.pin(22).drive_low()
    yield board, factory
    board.close()


async def test_read_reports_doors_and_items(rig) -> None:
    board, factory = rig
    states = await board.read_all()
    assert [s.locked for s in states] == [True, True]
    assert states[0].item is True and states[1].item is None
    factory.pin(22).drive_high()  # the item was taken
    assert (await board.read(1)).item is False
    factory.pin(6).drive_high()  # door 2 forced open
    assert (await board.read(2)).locked is False


async def test_unlock_pulses_the_lock_and_sees_the_door_open(rig) -> None:
    board, factory = rig
    lock_pin = factory.pin(17)
    seen_high = []

    async def person() -> None:
        # The solenoid is energised, the spring pushes the door open.
        while not lock_pin.state:
            await asyncio.sleep(0.005)
        seen_high.append(True)
        factory.pin(27).drive_high()

    helper = asyncio.create_task(person())
    outcome = await asyncio.wait_for(board.unlock(1), 5)
    await helper
    assert outcome.result is UnlockResult.OPENED
    assert seen_high == [True]
    assert lock_pin.state is False or lock_pin.state == 0, "the solenoid is released after the pulse"
    assert outcome.state is not None and outcome.state.locked is False


async def test_a_jammed_lock_is_reported_not_opened_and_not_retried(rig) -> None:
    board, factory = rig
    pulses = []
    lock_pin = factory.pin(5)

    async def count_pulses() -> None:
        last = False
        while True:
            now = bool(lock_pin.state)
            if now and not last:
                pulses.append(1)
            last = now
            await asyncio.sleep(0.002)

    counter = asyncio.create_task(count_pulses())
    outcome = await asyncio.wait_for(board.unlock(2), 5)
    counter.cancel()
    assert outcome.result is UnlockResult.NOT_OPENED
    assert len(pulses) == 1


async def test_alarm_signals_and_bad_lock_numbers(rig) -> None:
    board, _ = rig
    board.signal_alarm(True)
    await asyncio.sleep(0.05)
    assert board.led is not None and board.buzzer is not None
    board.signal_alarm(False)
    assert not board.led.is_lit
    with pytest.raises(LockBoardError):
        await board.read(3)


def test_pins_used_twice_are_refused() -> None:
    with pytest.raises(ValueError, match="used twice"):
        GpioLockBoard("g", [GpioLockPins(lock=1, door=2), GpioLockPins(lock=2, door=3)], pin_factory=MockFactory())


def test_the_signal_says_off_only_once_its_outputs_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader on another thread (the GPIO page) must never see "off" beside a lit LED or a sounding buzzer,
    nor "on" before the outputs were told: `on` changes after the outputs."""
    signal = AlarmSignal(led_pin=13, buzzer_pin=19, pin_factory=MockFactory())
    try:
        assert signal.led is not None and signal.buzzer is not None
        said: list[tuple[str, bool]] = []
        for device, name, methods in ((signal.led, "led", ("blink", "off")), (signal.buzzer, "buzzer", ("beep", "off"))):
            for method in methods:
                real = getattr(device, method)

                def spy(*args: object, _real: object = real, _what: str = f"{name}.{method}", **kwargs: object) -> None:
                    said.append((_what, signal.on))
                    _real(*args, **kwargs)  # type: ignore[operator]

                monkeypatch.setattr(device, method, spy)
        signal.set(True)
        assert signal.on
        signal.set(False)
        assert said == [("led.blink", False), ("buzzer.beep", False), ("led.off", True), ("buzzer.off", True)]
        assert not signal.on and not signal.led.is_lit and not signal.buzzer.is_active
    finally:
        signal.close()

