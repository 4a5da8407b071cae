"""A serial barcode scanner's emulator: `edge-agent simulate serial-scanner` on a pty (or TCP).

It does what a scanner in serial mode does: sends each code as ASCII followed by a suffix (CR by default,
like most scanners' factory setting; LF or CR LF on request). Codes come from `--codes` in turn every
`--interval` seconds, or, with `--stdin`, one per line typed (a technician's hand scanner, without one).
`--noise` sends a line of garbage every N codes (a fault knob: the agent must drop it and carry on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Sequence

from firmware_bridge.base_station.link import LinkClosedError
from firmware_bridge.emulators.pty_line import LinePort
from firmware_bridge.emulators.support import host_port, open_port, positive, run_emulator

log = logging.getLogger(__name__)

SUFFIXES = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}
SAMPLE_CODES = ("6901234567892", "036000291452", "4006381333931")
# 9600 baud, 8N1: what serial scanners ship with.
DEFAULT_LINE_RATE = 960.0
NOISE = b"\x00\xff\x13garbage\xfe"


def frame(code: str, suffix: bytes) -> bytes:
    return code.encode("ascii") + suffix


class ScannerEmulator:
    def __init__(self, codes: Sequence[str], *, interval: float, suffix: bytes, count: int = 0,
                 noise_every: int = 0, stdin: bool = False) -> None:
        for code in codes:
            if not code.isascii() or not code.isprintable():
                raise ValueError(f"a scanner sends printable ASCII, not {code!r}")
        self.codes = list(codes) or list(SAMPLE_CODES)
        self.interval = interval
        self.suffix = suffix
        self.count = count
        self.noise_every = noise_every
        self.stdin = stdin
        self.sent = 0

    async def _lines(self) -> AsyncIterator[str]:
        if self.stdin:
            loop = asyncio.get_running_loop()
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                if line.strip():
                    yield line.strip()
            return
        i = 0
        while self.count == 0 or i < self.count:
            await asyncio.sleep(self.interval)
            yield self.codes[i % len(self.codes)]
            i += 1

    async def serve(self, port: LinePort) -> None:
        async for code in self._lines():
            transport = await port.connection()
            try:
                if self.noise_every and (self.sent + 1) % self.noise_every == 0:
                    await transport.write(NOISE + self.suffix)
                await transport.write(frame(code, self.suffix))
            except LinkClosedError:
                log.info("scanner emulator: nobody reading %s; %s not sent", port.describe(), code)
                continue
            self.sent += 1
            log.info("scanned %s", code)

    @contextlib.asynccontextmanager
    async def running(self, port: LinePort) -> AsyncIterator[ScannerEmulator]:
        await port.start()
        task = asyncio.create_task(self.serve(port), name="scanner-emulator")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await port.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `edge-agent simulate serial-scanner`."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--pty", metavar="PATH", help="symlink to the emulator's pty (default /tmp/scanner0)")
    where.add_argument("--tcp", metavar="HOST:PORT", type=host_port, help="listen on TCP (agent: socket://HOST:PORT)")
    parser.add_argument("--codes", default="", help="comma-separated codes sent in turn (default: sample EAN-13s)")
    parser.add_argument("--interval", type=positive, default=3.0, help="seconds between codes (default 3)")
    parser.add_argument("--count", type=int, default=0, help="stop sending after this many (0: never)")
    parser.add_argument("--suffix", choices=sorted(SUFFIXES), default="cr", help="line ending (default cr)")
    parser.add_argument("--noise", type=int, default=0, help="also send a garbage line every N codes (fault knob)")
    parser.add_argument("--stdin", action="store_true", help="send each line typed on stdin instead of --codes")
    parser.add_argument("--line-rate", type=positive, default=DEFAULT_LINE_RATE, help="bytes/s (default 960)")


def run_scanner(args: argparse.Namespace) -> int:
    try:
        emulator = ScannerEmulator(
            [c.strip() for c in args.codes.split(",") if c.strip()],
            interval=args.interval, suffix=SUFFIXES[args.suffix], count=args.count, noise_every=args.noise,
            stdin=args.stdin,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    port = open_port(args, "/tmp/scanner0")  # noqa: S108 - a well-known demo path
    return run_emulator(emulator.running, port, lambda: [f"codes {' '.join(emulator.codes)}"], None)
