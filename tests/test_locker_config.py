"""The [lockers] section: references between buses, boards (Kerong and GPIO) and compartments, GPIO pins."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.config import ConfigError, parse_config


def lockers(**section: Any) -> dict[str, Any]:
    return {"agent": {"store_id": "store-1"}, "lockers": {"enabled": True, **section}}


def compartment(cid: str, board: str, lock: int) -> dict[str, Any]:
    return {"id": cid, "bank": "A", "board": board, "lock": lock, "size": "M", "row": 1, "column": lock}


GPIO = {"id": "gpio-0", "locks": [{"lock_pin": 17, "door_pin": 27, "item_pin": 22}, {"lock_pin": 23, "door_pin": 24}]}


def test_a_gpio_locker_with_an_alarm_led_and_buzzer() -> None:
    config = parse_config(
        lockers(gpio_boards=[GPIO], alarm_led_pin=13, alarm_buzzer_pin=19,
                compartments=[compartment("A-01", "gpio-0", 1), compartment("A-02", "gpio-0", 2)])
    )
    (board,) = config.lockers.gpio_boards
    assert [lock.item_pin for lock in board.locks] == [22, None] and board.pulse_s == 0.5
    assert config.lockers.alarm_led_pin == 13


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"gpio_boards": [GPIO], "compartments": [compartment("A-03", "gpio-0", 3)]},
         "compartment A-03: board gpio-0 has 2 locks, not 3"),
        ({"gpio_boards": [GPIO], "alarm_buzzer_pin": 27}, "GPIO pins used twice: [27]"),
        ({"gpio_boards": [GPIO, {**GPIO, "locks": [{"lock_pin": 5, "door_pin": 6}]}]}, "board gpio-0: id used twice"),
        ({"buses": [{"name": "rs485", "url": "/dev/ttyUSB0"}],
          "boards": [{"id": "gpio-0", "bus": "rs485", "number": 0}], "gpio_boards": [GPIO]},
         "board gpio-0: id used twice"),
        ({"compartments": [compartment("A-01", "kerong-9", 1)]}, "compartment A-01: no board 'kerong-9'"),
        ({"gpio_boards": [{"id": "gpio-1", "locks": []}]}, "gpio_boards.0.locks: List should have at least 1 item"),
        ({"gpio_boards": [{"id": "gpio-1", "locks": [{"lock_pin": 60, "door_pin": 1}]}]},
         "lock_pin: Input should be less than or equal to 53"),
    ],
)
def test_bad_locker_sections_name_the_problem(section: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(lockers(**section))
    assert any(problem in line for line in caught.value.problems), caught.value.problems
