"""The benchmark's lock boards: one Kerong emulator per RS485 bus on its own paced pty, in a process of its
own (so its timing does not share the agent's event loop), with random people. Prints `ready`, then a line
`unlock BUS BOARD LOCK MONOTONIC` for every unlock frame it received, the moment it was decoded."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from firmware_bridge.emulators.kerong import DEFAULT_LINE_RATE, Compartment, LockBoardEmulator
from firmware_bridge.emulators.pty_line import PtyPort
from firmware_bridge.kerong.frames import Command


class ReportingEmulator(LockBoardEmulator):
    def __init__(self, bus: str, boards: int, seed: int) -> None:
        # People open within 0.1-0.5 s of the unlock and close 0.4-1.0 s later: quick, but slower than the
        # service's 250 ms polls, as real people are.
        super().__init__(boards, seed=seed, open_after_s=(0.1, 0.5), hold_s=(0.4, 1.0))
        self.bus = bus

    def _unlock(self, c: Compartment, command: Command) -> None:
        super()._unlock(c, command)
        sys.stdout.write(f"unlock {self.bus} {c.board} {c.lock} {self.unlock_log[-1].at:.6f}\n")
        sys.stdout.flush()


async def main(workdir: Path, buses: list[str], boards: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        for n, bus in enumerate(buses):
            emulator = ReportingEmulator(bus, boards, seed=100 + n)
            port = PtyPort(workdir / f"lockers-{bus}", line_rate=DEFAULT_LINE_RATE)
            await stack.enter_async_context(emulator.running(port))
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3])))
