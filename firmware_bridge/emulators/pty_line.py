"""The emulator's end of a serial line: a paced pseudo-terminal, a paced TCP server, and line faults.

A pty (or a TCP socket) has no baud rate: bytes cross as fast as the CPU moves them. A real base station
sits behind a UART, so the emulator reads and writes at most `line_rate` bytes per second (default
11,520 B/s: 115200 baud, 8N1) through a token bucket with 5 ms ticks. What the agent writes faster than
that piles up in the kernel's pty buffer (about 20 KB on Linux) or the socket's, and then the agent's
writes block, as they would on a UART.

Ports hand out transports (`link.Transport`: read/write/out_waiting), one per connection:

- `PtyPort`: `os.openpty()`, the slave in raw mode (no echo, no CR/LF translation), and a symlink (e.g.
  `/tmp/bs0`) to the slave's device name, which the agent opens with pyserial like `/dev/ttyUSB0`. The
  emulator keeps the slave open itself, so the agent may close and re-open it at will. `unplug(s)` closes
  the pty (the agent's next read fails), removes the symlink, waits, and plugs a new pty in.
- `TcpPort`: a TCP server (the agent opens `socket://host:port`), one client at a time.
- `StaticPort`: one transport given in advance (an in-memory line in tests).

`LineFaults` damages bytes at per-byte rates (flipped bit, dropped byte, inserted byte), seeded;
`FaultyTransport` applies it to both directions of any transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from firmware_bridge.base_station.link import LinkClosedError, Transport

log = logging.getLogger(__name__)

DEFAULT_LINE_RATE = 11520.0  # bytes/s: 115200 baud, 8 data bits, no parity, 1 stop bit
TICK_S = 0.005
# Burst allowance: a little above the tick, so that a late timer does not cost line time.
BURST_S = 0.02
READ_SIZE = 4096
READ_QUEUE = 8  # chunks read ahead of the link; beyond that the kernel's buffer holds the backlog


class LineError(Exception):
    """A port that cannot be opened or served (pty allocation, symlink, TCP bind)."""


async def cancel_and_wait(
    task: asyncio.Task[Any], *, owner: object = None, interval: float = 0.05, attempts: int = 100
) -> None:
    """Cancel a task and wait until it has ended.

    Python 3.11's `asyncio.wait_for` loses a cancellation that arrives just as the future it waits on
    completes (CPython gh-86296): `Link._writer` waits on an event with wait_for, so a TaskGroup that
    cancels it may wait for ever, and cancelling the TaskGroup's owner again does not reach the
    children. So while `task` runs on, the tasks whose coroutine is a method of `owner` (a Link's
    reader, writer and timers) are cancelled again.
    """
    task.cancel()
    for _ in range(attempts):
        await asyncio.wait({task}, timeout=interval)
        if task.done():
            break
        if owner is None:
            task.cancel()
            continue
        for child in asyncio.all_tasks():
            frame = getattr(child.get_coro(), "cr_frame", None)
            if frame is not None and frame.f_locals.get("self") is owner:
                child.cancel()
    else:
        log.error("task %s does not end after %d cancellations", task.get_name(), attempts)
        return
    if not task.cancelled():
        task.exception()  # retrieved: the owner is not interested in how it ended


# -- pacing ---------------------------------------------------------------------------------------


class TokenBucket:
    """At most `rate` bytes per second on average, in slices of about one tick. `rate=None`: unpaced."""

    def __init__(self, rate: float | None, *, tick_s: float = TICK_S, burst_s: float = BURST_S) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"line rate must be positive, got {rate}")
        self.rate = rate
        self.tick_s = tick_s
        self.capacity = max(1.0, (rate or 0.0) * burst_s)
        self.quantum = max(1.0, (rate or 0.0) * tick_s)
        self._tokens = self.capacity
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        if self.rate is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, want: int) -> int:
        """Wait for permission to move some bytes; returns how many (1 .. want)."""
        if want <= 0:
            raise ValueError("take() needs a positive count")
        if self.rate is None:
            return want
        while True:
            self._refill()
            target = min(float(want), self.quantum)
            if self._tokens >= target:
                n = min(want, int(self._tokens))
                self._tokens -= n
                return n
            await asyncio.sleep(max(self.tick_s, (target - self._tokens) / self.rate))

    def give_back(self, n: int) -> None:
        """Return tokens taken but not used (fewer bytes were available than allowed)."""
        if self.rate is not None and n > 0:
            self._tokens = min(self.capacity, self._tokens + n)


# -- faults ---------------------------------------------------------------------------------------


@dataclass
class FaultStats:
    corrupted: int = 0
    dropped: int = 0
    inserted: int = 0


class LineFaults:
    """Per-byte fault rates, changeable at any time; a seeded RNG makes a run repeatable."""

    def __init__(self, corrupt: float = 0.0, drop: float = 0.0, insert: float = 0.0, *, seed: int = 0) -> None:
        self.corrupt = self.drop = self.insert = 0.0
        self.set(corrupt, drop, insert)
        self.rng = random.Random(seed)
        self.stats = FaultStats()

    def set(self, corrupt: float, drop: float, insert: float) -> None:
        for name, rate in (("corrupt", corrupt), ("drop", drop), ("insert", insert)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} rate must be within 0..1, got {rate}")
        if corrupt + drop > 1.0:
            raise ValueError("corrupt + drop rates exceed 1")
        self.corrupt, self.drop, self.insert = corrupt, drop, insert

    @property
    def active(self) -> bool:
        return bool(self.corrupt or self.drop or self.insert)

    def apply(self, data: bytes) -> bytes:
        if not self.active:
            return data
        rng = self.rng
        out = bytearray()
        for byte in data:
            r = rng.random()
            if r < self.drop:
                self.stats.dropped += 1
            elif r < self.drop + self.corrupt:
                out.append(byte ^ 1 << rng.randrange(8))
                self.stats.corrupted += 1
            else:
                out.append(byte)
            if self.insert and rng.random() < self.insert:
                out.append(rng.randrange(256))
                self.stats.inserted += 1
        return bytes(out)


class FaultyTransport:
    """Damages what crosses `inner` in both directions (what the emulator receives and what it sends).

    `lost` is set once the line failed (a read or write raised LinkClosedError), so the owner need not
    rely on the link's run ending by itself (see cancel_and_wait).
    """

    def __init__(self, inner: Transport, faults: LineFaults) -> None:
        self.inner = inner
        self.faults = faults
        self.lost = asyncio.Event()

    async def read(self) -> bytes:
        while True:
            try:
                data = await self.inner.read()
            except LinkClosedError:
                self.lost.set()
                raise
            data = self.faults.apply(data)
            if data:
                return data

    async def write(self, data: bytes) -> None:
        damaged = self.faults.apply(data)
        if damaged:
            try:
                await self.inner.write(damaged)
            except LinkClosedError:
                self.lost.set()
                raise

    def out_waiting(self) -> int:
        return self.inner.out_waiting()


# -- paced transports -----------------------------------------------------------------------------


class PacedTransport:
    """Reads ahead at the line rate into a small queue; writes at the line rate. Subclasses move bytes."""

    def __init__(self, name: str, line_rate: float | None) -> None:
        self.name = name
        self._rx = TokenBucket(line_rate)
        self._tx = TokenBucket(line_rate)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(READ_QUEUE)
        self._waiting = 0
        self._closed_reason: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self._loop = asyncio.get_running_loop()
        self._pump = self._loop.create_task(self._read_pump(), name=f"{name}-read")

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    async def _recv(self, n: int) -> bytes:
        """Up to n bytes, waiting for at least one; b"" once the line is gone."""
        raise NotImplementedError

    async def _send(self, data: memoryview) -> int:
        """Write some of data (at least one byte), waiting while the line is full; raises LinkClosedError."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free the underlying line (fds, socket)."""

    async def _read_pump(self) -> None:
        reason = "line closed"
        try:
            while True:
                allowed = await self._rx.take(READ_SIZE)
                data = await self._recv(allowed)
                if not data:
                    break
                self._rx.give_back(allowed - len(data))
                self.bytes_in += len(data)
                await self._queue.put(data)
        except LinkClosedError as exc:
            reason = str(exc)
        self._mark_closed(reason)
        self._release()  # the peer left (TCP) or the pty failed: free it now, not at the next connection
        await self._queue.put(b"")

    def _mark_closed(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
            log.debug("%s: %s", self.name, reason)

    async def read(self) -> bytes:
        data = await self._queue.get()
        if not data:
            self._queue.put_nowait(b"")  # every later read fails too
            raise LinkClosedError(f"{self.name}: {self._closed_reason or 'closed'}")
        return data

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise LinkClosedError(f"{self.name}: {self._closed_reason}")
        view = memoryview(data)
        self._waiting += len(view)
        try:
            while view:
                allowed = await self._tx.take(len(view))
                sent = await self._send(view[:allowed])
                self._tx.give_back(allowed - sent)
                self.bytes_out += sent
                self._waiting -= sent
                view = view[sent:]
        finally:
            self._waiting -= len(view)

    def out_waiting(self) -> int:
        return self._waiting

    def close(self, reason: str = "closed") -> None:
        """Drop the line now: pending and later reads and writes raise LinkClosedError."""
        if self.closed and self._pump.done():
            return
        self._mark_closed(reason)
        self._pump.cancel()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(b"")
        self._release()


class PtyTransport(PacedTransport):
    """The master side of a pty; the emulator holds the slave open too, so the agent may come and go."""

    def __init__(self, master: int, slave: int, line_rate: float | None) -> None:
        self.master = master
        self.slave = slave
        self.device = os.ttyname(slave)
        os.set_blocking(master, False)
        super().__init__(f"pty {self.device}", line_rate)

    async def _wait(self, writable: bool) -> None:
        loop = self._loop
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        fd = self.master
        if writable:
            loop.add_writer(fd, wake)
        else:
            loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            # After close() the fd number may already belong to a new pty: _release() unregistered ours.
            if self.master == fd:
                if writable:
                    loop.remove_writer(fd)
                else:
                    loop.remove_reader(fd)

    async def _recv(self, n: int) -> bytes:
        while True:
            if self.closed:
                return b""
            try:
                return os.read(self.master, n)
            except BlockingIOError:
                await self._wait(writable=False)
            except OSError as exc:  # EIO: no slave open (cannot happen while we hold it) or closed under us
                raise LinkClosedError(f"{self.name}: {exc}") from None

    async def _send(self, data: memoryview) -> int:
        while True:
            if self.closed:
                raise LinkClosedError(f"{self.name}: {self._closed_reason}")
            try:
                return os.write(self.master, data)
            except BlockingIOError:
                await self._wait(writable=True)  # the agent is not reading: its pty buffer is full
            except OSError as exc:
                self._mark_closed(str(exc))
                raise LinkClosedError(f"{self.name}: {exc}") from None

    def _release(self) -> None:
        if self.master >= 0 and not self._loop.is_closed():
            self._loop.remove_reader(self.master)
            self._loop.remove_writer(self.master)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.master = self.slave = -1


class TcpTransport(PacedTransport):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line_rate: float | None) -> None:
        self._reader = reader
        self._writer = writer
        peer = writer.get_extra_info("peername")
        super().__init__(f"tcp client {peer}", line_rate)

    async def _recv(self, n: int) -> bytes:
        try:
            return await self._reader.read(n)
        except OSError as exc:
            raise LinkClosedError(f"{self.name}: {exc}") from None

    async def _send(self, data: memoryview) -> int:
        if self._writer.is_closing():
            raise LinkClosedError(f"{self.name}: connection closed")
        try:
            self._writer.write(bytes(data))
            await self._writer.drain()
        except OSError as exc:
            self._mark_closed(str(exc))
            raise LinkClosedError(f"{self.name}: {exc}") from None
        return len(data)

    def _release(self) -> None:
        self._writer.close()


# -- ports ----------------------------------------------------------------------------------------


class LinePort(Protocol):
    """Where the agent reaches the emulator; hands out one transport per connection."""

    async def start(self) -> None:
        """Open the port (idempotent)."""
        ...

    async def connection(self) -> Transport:
        """The next usable connection (waits while unplugged or while no client is connected)."""
        ...

    async def unplug(self, seconds: float) -> None:
        """Drop the line, stay away for `seconds`, then come back."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...


def replace_symlink(link: Path, target: str) -> None:
    """Point `link` at `target` atomically: a symlink under a temporary name, renamed over the old one."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


class PtyPort:
    def __init__(self, link_path: str | os.PathLike[str], *, line_rate: float | None = DEFAULT_LINE_RATE) -> None:
        self.path = Path(link_path)
        self.line_rate = line_rate
        self.transport: PtyTransport | None = None
        self.replugs = 0
        self._plugged = asyncio.Event()
        self._started = False

    @property
    def device(self) -> str | None:
        """The current slave's device name (e.g. /dev/pts/5), None while unplugged."""
        return self.transport.device if self.transport is not None else None

    def describe(self) -> str:
        return f"pty {self.path} ({self.device or 'unplugged'})"

    async def start(self) -> None:
        if not self._started:
            self._started = True
            self._plug()

    def _plug(self) -> None:
        try:
            master, slave = os.openpty()
        except OSError as exc:
            raise LineError(f"cannot allocate a pty: {exc}") from None
        tty.setraw(slave)  # no echo, no CR/LF translation, no signals: bytes pass as they are
        transport = PtyTransport(master, slave, self.line_rate)
        try:
            replace_symlink(self.path, transport.device)
        except OSError as exc:
            transport.close("symlink failed")
            raise LineError(f"cannot create the symlink {self.path}: {exc}") from None
        self.transport = transport
        self._plugged.set()
        log.info("emulator pty %s -> %s", self.path, transport.device)

    def _remove_symlink(self, device: str) -> None:
        with contextlib.suppress(OSError):
            if os.readlink(self.path) == device:
                self.path.unlink()

    async def connection(self) -> Transport:
        while True:
            await self._plugged.wait()
            transport = self.transport
            if transport is not None and not transport.closed:
                return transport
            # The pty failed by itself (should not happen while we hold the slave): plug a new one.
            self._plugged.clear()
            if transport is not None:
                self._remove_symlink(transport.device)
                transport.close()
            self.transport = None
            await asyncio.sleep(0.1)
            self._plug()

    async def unplug(self, seconds: float) -> None:
        self._plugged.clear()
        transport, self.transport = self.transport, None
        if transport is not None:
            self._remove_symlink(transport.device)
            transport.close("unplugged")
        log.info("base-station emulator: %s unplugged for %.1f s", self.path, seconds)
        await asyncio.sleep(seconds)
        self.replugs += 1
        self._plug()

    async def close(self) -> None:
        self._plugged.clear()
        transport, self.transport = self.transport, None
        if transport is not None:
            self._remove_symlink(transport.device)
            transport.close("emulator stopped")


class TcpPort:
    """A TCP server the agent reaches with pyserial's `socket://host:port`; one client at a time."""

    def __init__(self, host: str, port: int, *, line_rate: float | None = DEFAULT_LINE_RATE) -> None:
        self.host = host
        self.port = port
        self.line_rate = line_rate
        self.transport: TcpTransport | None = None
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._incoming: asyncio.Queue[TcpTransport] = asyncio.Queue()
        self._unplugged = False

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            return self.host, self.port
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    def describe(self) -> str:
        host, port = self.address
        return f"tcp {host}:{port}"

    async def start(self) -> None:
        if self._server is not None:
            return
        try:
            # A small reader limit: the agent's bytes wait in the kernel, not in our memory.
            self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=READ_SIZE)
        except OSError as exc:
            raise LineError(f"cannot listen on {self.host}:{self.port}: {exc}") from None
        log.info("base-station emulator listening on %s", self.describe())

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._unplugged or (self.transport is not None and not self.transport.closed):
            self.refused += 1
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = TcpTransport(reader, writer, self.line_rate)
        self._incoming.put_nowait(self.transport)

    async def connection(self) -> Transport:
        while True:
            transport = await self._incoming.get()
            if not transport.closed:
                return transport

    async def unplug(self, seconds: float) -> None:
        self._unplugged = True
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close("unplugged")
        await asyncio.sleep(seconds)
        self._unplugged = False

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close("emulator stopped")
            self.transport = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)


class StaticPort:
    """One transport given in advance (e.g. an in-memory line); unplug is not supported."""

    def __init__(self, transport: Transport, description: str = "static line") -> None:
        self._transport: Transport | None = transport
        self._description = description

    def describe(self) -> str:
        return self._description

    async def start(self) -> None:
        return None

    async def connection(self) -> Transport:
        transport, self._transport = self._transport, None
        if transport is None:
            await asyncio.Event().wait()  # used up: nothing more will come
            raise AssertionError("unreachable")
        return transport

    async def unplug(self, seconds: float) -> None:
        raise NotImplementedError("a static line cannot be unplugged")

    async def close(self) -> None:
        return None
