"""Kerong KR-CU16 lock boards' emulator: several boards on one RS485 line (DESIGN.md section 5).

Product code: `edge-agent simulate lock-board` runs it on a pty (or TCP) for the demo, the tests, the
benchmarks and technician training. It answers exactly per docs/lock-boards.md, paced at the line rate
(19200 baud 8N1: 1,920 bytes/s each way). Boards that are not emulated do not answer (nobody drives the
RS485 line).

Each compartment has a lock (hook switch: 1 = latched), a door and an item sensor (IR: 1 = item inside).
These locks latch when the door is pushed shut: the hook reads 1 again once the door closes.

- 0x31 unlock: unless the lock is jammed, the hook releases at once (hook 0) and the compartment's
  simulated person acts: opens the door after `open_after_s`, takes or places the item half-way through
  `hold_s`, closes the door (hook back to 1). A person who never opens leaves the door unlatched and
  closed. Answered with `02 ADDR 31 STATE 03 SUM` (STATE bit 0 hook, bit 1 IR).
- 0x30 read one lock: the same 6-byte answer. 0x32 status: the 9-byte status. 0x33 unlock every lock of
  the board, answered with the 9-byte status (command 0x33) after the hooks released.
- People are scripted per compartment (`set_person`) or drawn at random from a seeded RNG; a lock can be
  jammed (an unlock has no effect); a door can be forced open without any command (`force_open`, or at
  random, `forced_per_hour` on average over the line, pushed shut again after a random hold time).
- Fault knobs: per-byte corrupted / dropped / inserted bytes in both directions (LineFaults), and a rate
  of missing replies (the board acted on the request but its answer never came).

Inspection for tests: `door_open`, `item`, `latched`, `unlock_count`, `unlock_log` (every unlock command
received, with its monotonic time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import logging
import random
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from firmware_bridge.base_station.link import LinkClosedError
from firmware_bridge.emulators.pty_line import (
    FaultyTransport,
    LineFaults,
    LinePort,
    cancel_and_wait,
)
from firmware_bridge.emulators.support import host_port, open_port, positive, rate, run_emulator
from firmware_bridge.kerong.frames import (
    BOARDS,
    LOCKS_PER_BOARD,
    STATE_HOOK,
    STATE_ITEM,
    Command,
    FrameDecoder,
    LockReply,
    Request,
    StatusReply,
    address,
    masks,
)

__all__ = [
    "DEFAULT_LINE_RATE",
    "Action",
    "Compartment",
    "LockBoardEmulator",
    "Person",
    "UnlockRecord",
    "add_arguments",
    "main",
    "run_lock_board",
]

log = logging.getLogger(__name__)

DEFAULT_LINE_RATE = 1920.0  # bytes/s: 19200 baud, 8 data bits, no parity, 1 stop bit
DEFAULT_ANSWER_DELAY_S = 0.002  # the board's firmware takes a moment before it answers
UNLOCK_LOG_MAX = 100_000


class Action(enum.StrEnum):
    TAKE = "take"  # the item leaves (a customer collects)
    PLACE = "place"  # an item goes in (a courier loads)
    TOGGLE = "toggle"  # take if there is one, else place
    NOTHING = "nothing"  # opens and closes, changes nothing


@dataclass(frozen=True)
class Person:
    """What happens after an unlock: open after `open_after_s` (None: never), act, close after `hold_s`."""

    open_after_s: float | None = 1.0
    hold_s: float = 2.0
    action: Action = Action.TOGGLE


@dataclass
class Compartment:
    board: int
    lock: int
    latched: bool = True
    door_open: bool = False
    item: bool = False
    jammed: bool = False
    unlocks: int = 0
    person: Person | None = None  # scripted; None: drawn at random for each unlock
    task: asyncio.Task[None] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class UnlockRecord:
    at: float  # time.monotonic() when the command was decoded
    board: int
    lock: int
    command: Command


@dataclass
class EmulatorCounters:
    requests: int = 0
    replies: int = 0
    replies_dropped: int = 0
    unknown_board: int = 0
    connections: int = 0
    forced_opens: int = 0


class LockBoardEmulator:
    def __init__(
        self,
        boards: int | list[int] = 2,
        *,
        lock_count: int = LOCKS_PER_BOARD,
        seed: int = 1,
        faults: LineFaults | None = None,
        reply_loss: float = 0.0,
        open_after_s: tuple[float, float] = (1.0, 4.0),
        hold_s: tuple[float, float] = (2.0, 6.0),
        never_opens: float = 0.0,
        answer_delay_s: float = DEFAULT_ANSWER_DELAY_S,
        lose_only: frozenset[Command] | None = None,
        forced_per_hour: float = 0.0,
    ) -> None:
        numbers = list(range(boards)) if isinstance(boards, int) else list(boards)
        for number in numbers:
            address(number)  # validates
        if not 1 <= lock_count <= LOCKS_PER_BOARD:
            raise ValueError(f"a board has 1..{LOCKS_PER_BOARD} locks, got {lock_count}")
        if not numbers or len(set(numbers)) != len(numbers) or len(numbers) > BOARDS:
            raise ValueError("board numbers must be distinct, 1 to 16 of them")
        self.set_reply_loss(reply_loss, lose_only)
        if not 0.0 <= never_opens <= 1.0:
            raise ValueError(f"never_opens is a rate within 0..1, got {never_opens}")
        self.lock_count = lock_count
        self.rng = random.Random(seed)
        self.faults = faults or LineFaults(seed=seed)
        self.open_after_s = open_after_s
        self.hold_s = hold_s
        self.never_opens = never_opens
        if forced_per_hour < 0:
            raise ValueError(f"forced_per_hour must not be negative, got {forced_per_hour}")
        self.forced_per_hour = forced_per_hour
        self.answer_delay_s = answer_delay_s
        self.compartments: dict[tuple[int, int], Compartment] = {
            (b, n): Compartment(b, n) for b in numbers for n in range(1, lock_count + 1)
        }
        self.boards = numbers
        self.unlock_log: list[UnlockRecord] = []
        self.counters = EmulatorCounters()
        self.decoder = FrameDecoder(replies=False)
        self.port: LinePort | None = None
        self._started = asyncio.Event()

    # -- inspection and knobs -------------------------------------------------------------------

    def compartment(self, board: int, lock: int) -> Compartment:
        try:
            return self.compartments[board, lock]
        except KeyError:
            raise ValueError(f"no lock {lock} on board {board}") from None

    def door_open(self, board: int, lock: int) -> bool:
        return self.compartment(board, lock).door_open

    def item(self, board: int, lock: int) -> bool:
        return self.compartment(board, lock).item

    def latched(self, board: int, lock: int) -> bool:
        return self.compartment(board, lock).latched

    def unlock_count(self, board: int, lock: int) -> int:
        return self.compartment(board, lock).unlocks

    def set_item(self, board: int, lock: int, present: bool) -> None:
        self.compartment(board, lock).item = present

    def set_jammed(self, board: int, lock: int, jammed: bool) -> None:
        self.compartment(board, lock).jammed = jammed

    def set_person(self, board: int, lock: int, person: Person | None) -> None:
        """Script what happens after each unlock of this compartment (None: random people)."""
        self.compartment(board, lock).person = person

    def set_reply_loss(self, rate: float, only: frozenset[Command] | None = None) -> None:
        """Answers lost at `rate` (the board acted, its answer never came); `only` these commands if given."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"reply loss is a rate within 0..1, got {rate}")
        self.reply_loss = rate
        self.lose_only = only

    def set_line_faults(self, corrupt: float, drop: float, insert: float = 0.0) -> None:
        self.faults.set(corrupt, drop, insert)

    def force_open(self, board: int, lock: int, close_after_s: float | None = None) -> None:
        """Someone forces the door without any command; it is pushed shut after `close_after_s` (None: stays)."""
        c = self.compartment(board, lock)
        self.counters.forced_opens += 1
        self._cancel_person(c)
        c.latched = False
        c.door_open = True
        if close_after_s is not None:
            c.task = asyncio.get_running_loop().create_task(self._close_later(c, close_after_s))

    async def unplug(self, seconds: float) -> None:
        """The line goes away for `seconds` (a pty disappears, a TCP client is dropped), then comes back."""
        if self.port is None:
            raise ValueError("the emulator is not running")
        await self.port.unplug(seconds)

    def close_door(self, board: int, lock: int) -> None:
        """Push the door shut now: the lock latches (unless it jammed open, which we do not model)."""
        c = self.compartment(board, lock)
        self._cancel_person(c)
        c.door_open = False
        c.latched = True

    async def _close_later(self, c: Compartment, seconds: float) -> None:
        await asyncio.sleep(seconds)
        c.door_open = False
        c.latched = True

    @staticmethod
    def _cancel_person(c: Compartment) -> None:
        if c.task is not None and not c.task.done():
            c.task.cancel()
        c.task = None

    # -- running --------------------------------------------------------------------------------

    async def run(self, port: LinePort) -> None:
        """Serve the line through `port` until cancelled; closes the port on the way out."""
        self.port = port
        try:
            await port.start()
            self._started.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._serve_port(port), name="lock-board-serve")
                if self.forced_per_hour:
                    tg.create_task(self._vandals(), name="lock-board-forced-doors")
        finally:
            for c in self.compartments.values():
                self._cancel_person(c)
            await port.close()

    @contextlib.asynccontextmanager
    async def running(self, port: LinePort) -> AsyncIterator[LockBoardEmulator]:
        """Run in the background for the block's duration (the port is open when the block starts)."""
        task = asyncio.create_task(self.run(port), name="lock-board-emulator")
        started = asyncio.create_task(self._started.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if task.done():
            task.result()
        try:
            yield self
        finally:
            await cancel_and_wait(task)

    async def _serve_port(self, port: LinePort) -> None:
        while True:
            transport = FaultyTransport(await port.connection(), self.faults)
            self.counters.connections += 1
            await self._serve(transport)

    async def _vandals(self) -> None:
        """Doors forced open without a command, `forced_per_hour` on average over the whole line."""
        while True:
            await asyncio.sleep(self.rng.expovariate(self.forced_per_hour / 3600.0))
            latched = [c for c in self.compartments.values() if c.latched and not c.door_open]
            if latched:
                c = self.rng.choice(latched)
                log.info("lock-board emulator: door of board %d lock %d forced open", c.board, c.lock)
                self.force_open(c.board, c.lock, close_after_s=self.rng.uniform(*self.hold_s))

    async def _serve(self, transport: FaultyTransport) -> None:
        self.decoder.reset()
        while True:
            try:
                data = await transport.read()
            except LinkClosedError:
                log.info("lock-board emulator: line closed")
                return
            for frame in self.decoder.feed(data):
                assert isinstance(frame, Request)  # a request decoder yields requests only
                reply = self.handle(frame)
                if reply is None:
                    continue
                lossy = self.lose_only is None or frame.command in self.lose_only
                if lossy and self.reply_loss and self.rng.random() < self.reply_loss:
                    self.counters.replies_dropped += 1
                    continue
                if self.answer_delay_s:
                    await asyncio.sleep(self.answer_delay_s)
                try:
                    await transport.write(reply.to_bytes())
                except LinkClosedError:
                    return
                self.counters.replies += 1

    # -- the protocol ---------------------------------------------------------------------------

    def handle(self, request: Request) -> LockReply | StatusReply | None:
        """Act on one request; returns the board's answer (None: no such board, nobody answers)."""
        self.counters.requests += 1
        if request.board not in self.boards:
            self.counters.unknown_board += 1
            return None
        command = request.command
        if command in (Command.READ_LOCK, Command.UNLOCK):
            c = self.compartments.get((request.board, request.lock))
            if command == Command.UNLOCK and c is not None:
                self._unlock(c, command)
            state = 0 if c is None else (STATE_HOOK if c.latched else 0) | (STATE_ITEM if c.item else 0)
            return LockReply(request.address, command, state)
        if command == Command.UNLOCK_ALL:
            for lock in range(1, self.lock_count + 1):
                self._unlock(self.compartments[request.board, lock], command)
        return self.status(request.board, command)

    def status(self, board: int, command: Command = Command.READ_ALL) -> StatusReply:
        states = [(c.latched, c.item) for (b, _), c in sorted(self.compartments.items()) if b == board]
        hooks, items = masks(states)
        return StatusReply(address(board), command, hooks, items)

    def _unlock(self, c: Compartment, command: Command) -> None:
        c.unlocks += 1
        if len(self.unlock_log) < UNLOCK_LOG_MAX:
            self.unlock_log.append(UnlockRecord(time.monotonic(), c.board, c.lock, command))
        log.info("lock-board emulator: unlock board %d lock %d%s", c.board, c.lock, " (jammed)" if c.jammed else "")
        if c.jammed or not c.latched:
            return
        c.latched = False
        person = c.person or self._random_person()
        self._cancel_person(c)
        c.task = asyncio.get_running_loop().create_task(self._act(c, person), name=f"person-{c.board}-{c.lock}")

    def _random_person(self) -> Person:
        if self.rng.random() < self.never_opens:
            return Person(open_after_s=None)
        return Person(
            open_after_s=self.rng.uniform(*self.open_after_s),
            hold_s=self.rng.uniform(*self.hold_s),
            action=Action.TOGGLE,
        )

    async def _act(self, c: Compartment, person: Person) -> None:
        if person.open_after_s is None:
            return  # the door stays closed but unlatched
        await asyncio.sleep(person.open_after_s)
        c.door_open = True
        await asyncio.sleep(person.hold_s / 2)
        if person.action == Action.TAKE or (person.action == Action.TOGGLE and c.item):
            c.item = False
        elif person.action in (Action.PLACE, Action.TOGGLE):
            c.item = True
        await asyncio.sleep(person.hold_s / 2)
        c.door_open = False
        c.latched = True


# -- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `edge-agent simulate lock-board` (and of `python -m firmware_bridge.emulators.kerong`)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--pty", metavar="PATH", help="symlink to the emulator's pty (default /tmp/lockers0)")
    where.add_argument("--tcp", metavar="HOST:PORT", type=host_port, help="listen on TCP (agent: socket://HOST:PORT)")
    parser.add_argument("--boards", type=int, default=2, help="boards 0..N-1 on the line (default 2)")
    parser.add_argument("--locks", type=int, default=LOCKS_PER_BOARD, help="locks per board (default 16)")
    parser.add_argument("--seed", type=int, default=1, help="seed of people, items and faults (default 1)")
    parser.add_argument(
        "--line-rate", type=positive, default=DEFAULT_LINE_RATE, help="line bytes/s each way (default 1920)"
    )
    parser.add_argument("--items", type=rate, default=0.0, help="share of compartments holding an item at start")
    parser.add_argument("--open-after", type=positive, default=4.0, help="people open within this many s (default 4)")
    parser.add_argument("--hold", type=positive, default=6.0, help="and close within this many s later (default 6)")
    parser.add_argument("--never-opens", type=rate, default=0.0, help="share of unlocks nobody opens the door after")
    parser.add_argument(
        "--forced-per-hour", type=float, default=0.0, help="doors forced open without a command, per hour (default 0)"
    )
    parser.add_argument("--jammed", type=rate, default=0.0, help="share of locks jammed at start")
    parser.add_argument("--corrupt", type=rate, default=0.0, help="per-byte rate of flipped bits, both directions")
    parser.add_argument("--drop", type=rate, default=0.0, help="per-byte rate of dropped bytes, both directions")
    parser.add_argument("--insert", type=rate, default=0.0, help="per-byte rate of inserted bytes, both directions")
    parser.add_argument("--reply-loss", type=rate, default=0.0, help="share of requests acted on but not answered")
    parser.add_argument("--control-socket", metavar="PATH", help="unix socket taking test commands (see 'help')")


def build(args: argparse.Namespace) -> LockBoardEmulator:
    """The emulator the options describe (raises ValueError on impossible values)."""
    if not 1 <= args.boards <= BOARDS:
        raise ValueError(f"--boards must be within 1..{BOARDS}, got {args.boards}")
    emulator = LockBoardEmulator(
        args.boards,
        lock_count=args.locks,
        seed=args.seed,
        faults=LineFaults(args.corrupt, args.drop, args.insert, seed=args.seed),
        reply_loss=args.reply_loss,
        open_after_s=(args.open_after / 4, args.open_after),
        hold_s=(args.hold / 4, args.hold),
        never_opens=args.never_opens,
        forced_per_hour=args.forced_per_hour,
    )
    setup = random.Random(args.seed + 1)
    for c in emulator.compartments.values():
        c.item = setup.random() < args.items
        c.jammed = setup.random() < args.jammed
    return emulator


def run_lock_board(args: argparse.Namespace) -> int:
    """Run the emulator until SIGTERM or SIGINT; returns the process exit code."""
    try:
        emulator = build(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The control server imports this module (Person, Action): imported here, not at the top.
    from firmware_bridge.emulators.kerong_control import LockControlServer  # noqa: PLC0415

    port = open_port(args, "/tmp/lockers0")  # noqa: S108 - a well-known demo path
    control = LockControlServer(emulator, args.control_socket) if args.control_socket else None
    code = run_emulator(
        emulator.running,
        port,
        lambda: [f"boards {' '.join(map(str, emulator.boards))} locks {emulator.lock_count}"],
        control,
    )
    log.info("lock-board emulator stopped")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lock-board-emulator", description="Kerong KR-CU16 lock boards' emulator.")
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_lock_board(args)


if __name__ == "__main__":
    sys.exit(main())
