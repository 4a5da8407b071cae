"""A small locker without a lock board: locks, door and item sensors, LED and buzzer on GPIO, configured in
[lockers] and driven by the running agent (gpiozero's MockFactory plays the pins; a test coroutine plays
the person pushing the door)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from devices.lockers.signal import AlarmSignal
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.subscriber import CloudSubscriber

KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ab" * 32}
LOCK_1, DOOR_1, ITEM_1 = 17, 27, 22
LOCK_2, DOOR_2 = 23, 24


@pytest.fixture
def pins(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockFactory]:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    factory = MockFactory()
    previous, Device.pin_factory = Device.pin_factory, factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = previous


async def test_load_and_alarms_on_a_gpio_locker(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber, pins: MockFactory
) -> None:
    config = agent_config(
        tmp_path / "data",
        cloud_broker,
        lockers={
            "enabled": True,
            "alarm_led_pin": 13,
            "alarm_buzzer_pin": 19,
            "gpio_boards": [
                {"id": "gpio-0", "pulse_s": 0.2, "confirm_s": 2.0,
                 "locks": [{"lock_pin": LOCK_1, "door_pin": DOOR_1, "item_pin": ITEM_1},
                           {"lock_pin": LOCK_2, "door_pin": DOOR_2}]},
            ],
            "compartments": [
                {"id": "G-01", "bank": "G", "board": "gpio-0", "lock": 1, "size": "M", "row": 1, "column": 1},
                {"id": "G-02", "bank": "G", "board": "gpio-0", "lock": 2, "size": "S", "row": 2, "column": 1},
            ],
        },
    )
    async with running_agent(config, env=KEY_ENV) as agent:
        assert agent.lockers is not None
        lockers = agent.lockers
        (signal,) = [d for d in agent._gpio_devices if isinstance(d, AlarmSignal)]
        # The pull-ups read "door open" until the switches are wired: the agent starts by seeing two
        # open doors nobody opened, and says so; then the doors are closed and the alarm stops.
        await asyncio.to_thread(subscriber.wait_events, 2, 20, "alarm.door_forced")
        await wait_until(lambda: signal.on, timeout=5)
        pins.pin(DOOR_1).drive_low()
        pins.pin(DOOR_2).drive_low()
        await wait_until(lambda: not signal.on, timeout=5)

        # A courier loads G-01: the lock is energised, they push the door open, put the parcel in, close it.
        await lockers.create_pickup("order-g1", "M", 4_102_444_800_000, "73920581")
        person_done = asyncio.Event()

        async def courier() -> None:
            await wait_until(lambda: pins.pin(LOCK_1).state, timeout=5)
            pins.pin(DOOR_1).drive_high()
            await asyncio.sleep(0.3)
            pins.pin(ITEM_1).drive_low()
            await asyncio.sleep(0.3)
            pins.pin(DOOR_1).drive_low()
            person_done.set()

        person = asyncio.create_task(courier())
        started = await lockers.start_load("order-g1", actor="staff:1001")
        assert started.compartment == "G-01"
        ready = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.ready")
        assert ready[0]["payload"]["compartment"] == "G-01"
        await person
        assert not pins.pin(LOCK_1).state  # the lock is released again after its pulse
        pulses = [s.state for s in pins.pin(LOCK_1).states]
        assert pulses.count(True) == 1  # energised exactly once
        assert not signal.on  # a commanded opening closed in time is no alarm

        # Somebody forces G-02: alarm.door_forced reaches the cloud and the LED and buzzer go on.
        pins.pin(DOOR_2).drive_high()
        forced = await asyncio.to_thread(subscriber.wait_events, 3, 20, "alarm.door_forced")
        assert forced[-1]["payload"]["compartment"] == "G-02"
        await wait_until(lambda: signal.on, timeout=2)
        assert signal.led is not None and signal.buzzer is not None
        pins.pin(DOOR_2).drive_low()
        await wait_until(lambda: not signal.on, timeout=2)
        assert not signal.led.is_lit and not signal.buzzer.is_active
