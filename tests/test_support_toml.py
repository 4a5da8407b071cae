"""The tests' and benchmarks' config writer (tests/support/agent_process.to_toml) writes what the agent reads:
a configuration dumped, written as TOML and parsed again is the same configuration, arrays of tables nested
in tables (`[[lockers.buses]]`, `[[lockers.compartments]]`) included."""

from __future__ import annotations

import tomllib
from pathlib import Path

from edge_agent.config import parse_config
from tests.support.agent_process import to_toml, write_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "agent.example.toml"


def test_a_config_with_nested_arrays_of_tables_survives_the_round_trip(tmp_path: Path) -> None:
    config = parse_config({
        "agent": {"store_id": "store-0001", "data_dir": str(tmp_path)},
        "kiosks": [{"id": "k1", "name": "Entrance"}, {"id": "k2", "name": "Back"}],
        "lockers": {
            "enabled": True,
            "buses": [{"name": "rs485-1", "url": "/dev/ttyUSB0", "baudrate": 19200}],
            "boards": [{"id": "kerong-0", "bus": "rs485-1", "number": 0, "locks": 16}],
            "gpio_boards": [{"id": "gpio-0", "locks": [{"lock_pin": 17, "door_pin": 27}, {"lock_pin": 23, "door_pin": 24}]}],
            "compartments": [
                {"id": "A-01", "bank": "A", "board": "kerong-0", "lock": 1, "size": "M", "row": 1, "column": 1},
                {"id": "A-02", "bank": "A", "board": "gpio-0", "lock": 2, "size": "S", "row": 1, "column": 2},
            ],
        },
    })
    data = config.model_dump(mode="json", exclude_none=True)
    assert tomllib.loads(to_toml(data)) == data
    written = write_config(config, tmp_path / "agent.toml")
    assert parse_config(tomllib.loads(written.read_text())) == config


def test_the_example_config_survives_the_round_trip() -> None:
    config = parse_config(tomllib.loads(EXAMPLE.read_text()), base_dir=EXAMPLE.parent)
    data = config.model_dump(mode="json", exclude_none=True)
    assert tomllib.loads(to_toml(data)) == data
