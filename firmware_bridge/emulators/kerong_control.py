"""The lock-board emulator's control socket: a line protocol on a unix socket for out-of-process tests,
the demo and technician training. One command per line, one answer per line: `ok [...]` or `error <why>`.

    state BOARD LOCK              ok latched=0|1 door=0|1 item=0|1 jammed=0|1 unlocks=N
    force BOARD LOCK [SECONDS]    the door is forced open without a command (pushed shut after SECONDS)
    close BOARD LOCK              the door is pushed shut now (the lock latches)
    item BOARD LOCK on|off        put an item in / take it out (door or not: a technician's hand)
    jam BOARD LOCK on|off         the lock jams (unlocks have no effect) / works again
    person BOARD LOCK OPEN HOLD ACTION|random
                                  script the next people: open after OPEN s (or 'never'), close HOLD s
                                  later, ACTION take|place|toggle|nothing; 'random' for random people
    faults CORRUPT DROP INSERT    per-byte fault rates on the line, both directions
    reply-loss RATE               share of requests acted on but not answered
    unplug SECONDS                the line goes away for SECONDS (answered at once)
    status                        counters as one JSON object
    help
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from firmware_bridge.emulators.kerong import Action, LockBoardEmulator, Person
from firmware_bridge.emulators.support import LineControlServer, on_off, seconds

CONTROL_HELP = (
    "commands: state B L | force B L [SECONDS] | close B L | item B L on|off | jam B L on|off"
    " | person B L OPEN|never HOLD ACTION | person B L random | faults CORRUPT DROP INSERT"
    " | reply-loss RATE | unplug SECONDS | status | help"
)
CONTROL_ARGS: dict[str, tuple[int, int]] = {  # command: (fewest, most) arguments
    "state": (2, 2),
    "force": (2, 3),
    "close": (2, 2),
    "item": (3, 3),
    "jam": (3, 3),
    "person": (3, 5),
    "faults": (3, 3),
    "reply-loss": (1, 1),
    "unplug": (1, 1),
    "status": (0, 0),
    "help": (0, 0),
}


class LockControlServer(LineControlServer):
    def __init__(self, emulator: LockBoardEmulator, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.emulator = emulator

    def _execute(self, command: str, args: list[str]) -> str:
        emu = self.emulator
        bounds = CONTROL_ARGS.get(command)
        if bounds is None:
            return f"error unknown command {command!r}; {CONTROL_HELP}"
        if not bounds[0] <= len(args) <= bounds[1]:
            return f"error {command} takes {bounds[0]}..{bounds[1]} arguments"
        if command == "status":
            return "ok " + json.dumps(asdict(emu.counters), separators=(",", ":"))
        if command == "help":
            return "ok " + CONTROL_HELP
        if command == "faults":
            emu.set_line_faults(float(args[0]), float(args[1]), float(args[2]))
            return "ok"
        if command == "reply-loss":
            emu.set_reply_loss(float(args[0]))
            return "ok"
        if command == "unplug":
            self._spawn(emu.unplug(seconds(args[0])))
            return "ok"
        board, lock = int(args[0]), int(args[1])
        c = emu.compartment(board, lock)
        if command == "state":
            return (
                f"ok latched={int(c.latched)} door={int(c.door_open)} item={int(c.item)}"
                f" jammed={int(c.jammed)} unlocks={c.unlocks}"
            )
        if command == "force":
            emu.force_open(board, lock, seconds(args[2]) if len(args) == 3 else None)
        elif command == "close":
            emu.close_door(board, lock)
        elif command == "item":
            emu.set_item(board, lock, on_off(args[2]))
        elif command == "jam":
            emu.set_jammed(board, lock, on_off(args[2]))
        elif command == "person":
            if args[2] == "random":
                emu.set_person(board, lock, None)
            elif len(args) != 5:
                return "error person B L OPEN|never HOLD ACTION"
            else:
                open_after = None if args[2] == "never" else seconds(args[2])
                emu.set_person(board, lock, Person(open_after, seconds(args[3]), Action(args[4])))
        return "ok"



