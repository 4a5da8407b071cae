"""Locker test rigs: the [lockers] section for one RS485 bus with one Kerong board, and an emulator on which
nobody touches a door unless the test says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware_bridge.emulators.kerong import LockBoardEmulator, Person


def idle_emulator(boards: int = 1) -> LockBoardEmulator:
    emulator = LockBoardEmulator(boards)
    for c in emulator.compartments.values():
        c.person = Person(open_after_s=None)
    return emulator


def compartment(cid: str, lock: int, *, bank: str = "A", size: str = "M", row: int = 1, column: int = 1) -> dict[str, Any]:
    return {"id": cid, "bank": bank, "board": "kerong-0", "lock": lock, "size": size, "row": row, "column": column}


def one_board(pty: Path, *compartments: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """The [lockers] section: board kerong-0 on bus rs485 at `pty`, with these compartments."""
    return {
        "enabled": True,
        "buses": [{"name": "rs485", "url": str(pty)}],
        "boards": [{"id": "kerong-0", "bus": "rs485", "number": 0}],
        "compartments": list(compartments),
        **settings,
    }
