"""The emulator's control socket: a line protocol on a unix socket for out-of-process tests and the demo.

One command per line, one answer per line: `ok [...]` or `error <why>`.

    reset                         the base station reboots (new link session, transfers lost)
    unplug SECONDS                the line goes away for SECONDS (answered at once)
    out-of-range TAG on|off       TAG (16 hex digits) stops / starts hearing the radio
    battery TAG MV                set TAG's battery voltage (below 2200 mV it refuses pictures)
    button TAG N                  a shopper presses button N on TAG
    faults CORRUPT DROP INSERT    per-byte fault rates on the line, both directions
    fast TAG|all on|off           tags that listen all the time (no waiting for their check-in)
    checkin SECONDS               the tags' check-in interval
    status                        counters as one JSON object
    help
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import TYPE_CHECKING

from firmware_bridge.emulators.sim_tags import EmulatorError
from firmware_bridge.emulators.support import LineControlServer, on_off, seconds

if TYPE_CHECKING:
    from firmware_bridge.emulators.base_station import BaseStationEmulator

CONTROL_HELP = (
    "commands: reset | unplug SECONDS | out-of-range TAG on|off | battery TAG MV | button TAG N"
    " | faults CORRUPT DROP INSERT | fast TAG|all on|off | checkin SECONDS | status | help"
)


CONTROL_ARGS = {
    "reset": 0,
    "unplug": 1,
    "out-of-range": 2,
    "battery": 2,
    "button": 2,
    "faults": 3,
    "fast": 2,
    "checkin": 1,
    "status": 0,
    "help": 0,
}


class ControlServer(LineControlServer):
    """The base-station emulator's control socket; answers `ok ...` or `error ...`."""

    ANSWERED_ERRORS = (EmulatorError, NotImplementedError)

    def __init__(self, emulator: BaseStationEmulator, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.emulator = emulator

    def _execute(self, command: str, args: list[str]) -> str:
        emu = self.emulator
        nargs = CONTROL_ARGS.get(command)
        if nargs is None:
            return f"error unknown command {command!r}; {CONTROL_HELP}"
        if len(args) != nargs:
            return f"error {command} takes {nargs} argument(s)"
        if command == "reset":
            emu.reset()
        elif command == "unplug":
            self._spawn(emu.unplug(seconds(args[0])))  # answered at once; the line comes back later
        elif command == "out-of-range":
            emu.set_out_of_range(_tag_arg(args[0]), on_off(args[1]))
        elif command == "battery":
            emu.set_battery(_tag_arg(args[0]), int(args[1]))
        elif command == "button":
            if not emu.press_button(_tag_arg(args[0]), int(args[1])):
                return "error tag out of range"
        elif command == "faults":
            emu.set_line_faults(float(args[0]), float(args[1]), float(args[2]))
        elif command == "fast":
            emu.set_fast(None if args[0] == "all" else _tag_arg(args[0]), on_off(args[1]))
        elif command == "checkin":
            emu.set_checkin_interval(seconds(args[0]))
        elif command == "status":
            return "ok " + json.dumps(asdict(emu.counters), separators=(",", ":"))
        elif command == "help":
            return "ok " + CONTROL_HELP
        return "ok"



def _tag_arg(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 8:
        raise ValueError(f"tag id must be 16 hex digits, got {text!r}")
    return raw


