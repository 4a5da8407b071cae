"""One RS485 bus of Kerong lock boards (docs/lock-boards.md section 3): the host side, asyncio.

RS485 is half duplex and the host is the only master: it sends one request, the addressed board answers,
then the line must stay quiet for a short gap before the next request (the board turns its driver
around; default 20 ms). So every request on a bus goes through one asyncio.Lock, whichever board it is
for, and waits out the gap after the previous exchange.

Driver rules:
- every reply is checked: STX, length, ETX and SUM (the decoder), then its ADDR and CMD against the
  request. A reply for another board or another command is counted (`wrong_address`) and ignored: on a
  shared bus it is most likely a late answer to an earlier request.
- reads (0x32) time out after `timeout_s` and are retried up to `read_retries` more times.
- an unlock (0x31, 0x33) is sent exactly once per call, never retried: whether or not it was answered,
  a status read (0x32, with its retries) tells whether the lock released. A caller that gets no status
  (`UnlockReport.status is None`) must read again before doing anything.
- bytes received before a request are stale: they are dropped, and the decoder starts afresh.

Priority: an unlock is somebody standing at the locker, a status read is a poll that can wait. Requests
queue in priority order (unlocks first, then first come first served), so an unlock waits for at most
the one exchange already on the line and its gap, never for a queue of polls. The bus is not held while
the solenoid settles after an unlock: other requests use that time.

`run()` keeps the port open by itself: when it fails (USB adapter unplugged, ser2net gone) it is
re-opened every `reopen_interval_s`; requests made meanwhile time out like unanswered ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from firmware_bridge.base_station.link import LinkClosedError
from firmware_bridge.kerong.frames import Command, FrameDecoder, LockReply, Request, StatusReply
from firmware_bridge.serial_port import SerialOpenError, SerialPort

log = logging.getLogger(__name__)

DEFAULT_BAUDRATE = 19200
DEFAULT_FRAME_GAP_S = 0.02
DEFAULT_TIMEOUT_S = 0.3
DEFAULT_READ_RETRIES = 3
# After an unlock, the time the solenoid needs before the hook switch reads released.
DEFAULT_UNLOCK_SETTLE_S = 0.05


PRIORITY_UNLOCK = 0
PRIORITY_READ = 1


class _PriorityLock:
    """An asyncio lock granted in (priority, arrival) order instead of arrival order alone."""

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def hold(self, priority: int) -> AsyncIterator[None]:
        if self._held or self._waiters:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (priority, next(self._arrivals), waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # granted just as we were cancelled: pass it on
                raise
        self._held = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self._held = False
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                self._held = True  # handed over directly: nobody can slip in between
                waiter.set_result(None)
                return


class KerongBusError(Exception):
    """A request that got no valid answer within its bounded attempts."""

    def __init__(self, url: str, request: Request, reason: str) -> None:
        super().__init__(f"{url}: board {request.board} command 0x{request.command:02x}: {reason}")
        self.url = url
        self.request = request
        self.reason = reason


@dataclass
class BusStats:
    requests: int = 0
    frames: int = 0  # valid replies received (any address)
    timeouts: int = 0
    retries: int = 0
    checksum_errors: int = 0
    bad_frames: int = 0
    garbage_bytes: int = 0
    wrong_address: int = 0  # valid replies whose ADDR or CMD did not match the request
    stale_replies: int = 0  # valid replies that arrived while no request was waiting
    unlocks_sent: int = 0  # unlock commands handed to the port (one per call at most)
    unlocks_unanswered: int = 0
    probes: int = 0  # bus-scan probes (not counted in requests/timeouts: silence is the usual answer)
    probes_answered: int = 0
    reconnects: int = 0
    open_failures: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class UnlockReport:
    """What one unlock call learned. `status` is the board's status read after the unlock, if any."""

    answered: bool  # the board replied to the unlock command itself
    status: StatusReply | None


class KerongBus:
    def __init__(
        self,
        url: str,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        frame_gap_s: float = DEFAULT_FRAME_GAP_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        read_retries: int = DEFAULT_READ_RETRIES,
        unlock_settle_s: float = DEFAULT_UNLOCK_SETTLE_S,
        reopen_interval_s: float = 1.0,
    ) -> None:
        if frame_gap_s < 0 or timeout_s <= 0 or read_retries < 0 or unlock_settle_s < 0:
            raise ValueError("frame gap, settle time and retries must not be negative; the timeout is positive")
        self.url = url
        self.baudrate = baudrate
        self.frame_gap_s = frame_gap_s
        self.timeout_s = timeout_s
        self.read_retries = read_retries
        self.unlock_settle_s = unlock_settle_s
        self.reopen_interval_s = reopen_interval_s
        self.stats = BusStats()
        self._lock = _PriorityLock()
        self._decoder = FrameDecoder(replies=True)
        self._replies: asyncio.Queue[LockReply | StatusReply] = asyncio.Queue(maxsize=16)
        self._port: SerialPort | None = None
        self._connected = asyncio.Event()
        self._last_exchange = 0.0  # monotonic time the line last went quiet

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- connection ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the port open until cancelled."""
        while True:
            try:
                port = await SerialPort.open(self.url, self.baudrate)
            except SerialOpenError as exc:
                self.stats.open_failures += 1
                self.stats.last_error = exc.reason
                if self.stats.open_failures == 1 or self.stats.open_failures % 60 == 0:
                    log.warning("lock bus %s: %s; retrying every %.1f s", self.url, exc.reason, self.reopen_interval_s)
                await asyncio.sleep(self.reopen_interval_s)
                continue
            self.stats.open_failures = 0
            self._port = port
            self._connected.set()
            log.info("lock bus %s open at %d baud", self.url, self.baudrate)
            try:
                await self._read_loop(port)
            except LinkClosedError as exc:
                self.stats.reconnects += 1
                self.stats.last_error = str(exc)
                log.warning("lock bus %s: line lost (%s); re-opening", self.url, exc)
            finally:
                self._connected.clear()
                self._port = None
                port.close()
            await asyncio.sleep(min(self.reopen_interval_s, 0.2))

    @contextlib.asynccontextmanager
    async def running(self, connect_timeout: float = 5.0) -> AsyncIterator[KerongBus]:
        """Run in the background for the block's duration; the port is open when the block starts."""
        task = asyncio.create_task(self.run(), name=f"kerong-bus-{self.url}")
        try:
            await self.wait_connected(connect_timeout)
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def report_line_errors(self, interval_s: float = 60.0) -> None:
        """Log what went wrong on the line in each interval (only when something did), until cancelled: the
        counters are in /metrics too, this puts a noisy cable or a silent board in the journal."""
        names = ("checksum_errors", "bad_frames", "timeouts", "unlocks_unanswered", "wrong_address")
        last = {name: getattr(self.stats, name) for name in names}
        while True:
            await asyncio.sleep(interval_s)
            now = {name: getattr(self.stats, name) for name in names}
            new = {name: now[name] - last[name] for name in names}
            last = now
            if any(new.values()):
                log.warning(
                    "lock bus %s in the last %.0f s: %d checksum errors, %d bad frames, %d timeouts "
                    "(%d unanswered unlocks), %d replies from the wrong board",
                    self.url, interval_s, new["checksum_errors"], new["bad_frames"], new["timeouts"],
                    new["unlocks_unanswered"], new["wrong_address"],
                )

    async def _read_loop(self, port: SerialPort) -> None:
        while True:
            data = await port.read()
            for frame in self._decoder.feed(data):
                if isinstance(frame, LockReply | StatusReply):
                    if self._replies.full():  # nobody is asking: keep the newest
                        self._replies.get_nowait()
                        self.stats.stale_replies += 1
                    self._replies.put_nowait(frame)
            decoded = self._decoder.stats  # one decoder for the bus's lifetime: its counters are ours
            self.stats.frames = decoded.frames
            self.stats.checksum_errors = decoded.checksum_errors
            self.stats.bad_frames = decoded.bad_frames
            self.stats.garbage_bytes = decoded.garbage_bytes

    # -- requests -----------------------------------------------------------------------------

    async def _exchange(self, request: Request, timeout_s: float | None = None) -> LockReply | StatusReply | None:
        """One request, one reply (or None after `timeout_s`). The caller holds the bus lock."""
        probing = timeout_s is not None
        timeout = self.timeout_s if timeout_s is None else timeout_s
        gap = self._last_exchange + self.frame_gap_s - time.monotonic()
        if gap > 0:
            await asyncio.sleep(gap)
        while not self._replies.empty():  # late answers to earlier requests
            self._replies.get_nowait()
            self.stats.stale_replies += 1
        self._decoder.reset()
        if not probing:
            self.stats.requests += 1
        try:
            port = self._port
            if port is None:
                async with asyncio.timeout(timeout):
                    await self._connected.wait()
                port = self._port
            if port is None:
                raise LinkClosedError("not connected")
            async with asyncio.timeout(timeout):
                await port.write(request.to_bytes())
                if request.command in (Command.UNLOCK, Command.UNLOCK_ALL):
                    self.stats.unlocks_sent += 1
                while True:
                    reply = await self._replies.get()
                    if reply.address == request.address and reply.command == request.command:
                        return reply
                    self.stats.wrong_address += 1
                    log.debug("lock bus %s: ignored %s while waiting for %s", self.url, reply, request)
        except (TimeoutError, LinkClosedError):
            if not probing:
                self.stats.timeouts += 1
            return None
        finally:
            self._last_exchange = time.monotonic()

    async def _read(self, request: Request) -> StatusReply:
        for attempt in range(self.read_retries + 1):
            if attempt:
                self.stats.retries += 1
            reply = await self._exchange(request)
            if isinstance(reply, StatusReply):
                return reply
        raise KerongBusError(self.url, request, f"no valid reply after {self.read_retries + 1} attempts")

    async def read_status(self, board: int) -> StatusReply:
        """Every lock's hook and item sensor on one board (0x32), with bounded retries."""
        request = Request(Command.READ_ALL, board)
        async with self._lock.hold(PRIORITY_READ):
            return await self._read(request)

    async def probe(self, board: int, timeout_s: float = 0.1) -> StatusReply | None:
        """Whether a board answers at this number (a bus scan): one status read (0x32), never retried, with a
        short timeout; None when nothing answered. At poll priority, one exchange per call: an unlock waits
        for at most this one exchange, never for a whole scan."""
        request = Request(Command.READ_ALL, board)
        async with self._lock.hold(PRIORITY_READ):
            self.stats.probes += 1
            reply = await self._exchange(request, timeout_s)
        if isinstance(reply, StatusReply):
            self.stats.probes_answered += 1
            return reply
        return None

    async def unlock(self, board: int, lock: int) -> UnlockReport:
        """Release one lock: 0x31 sent exactly once, then a status read (0x32) tells what happened."""
        return await self._unlock(Request(Command.UNLOCK, board, lock))

    async def unlock_all(self, board: int) -> UnlockReport:
        """Release every lock of a board (0x33) once, then read the status."""
        return await self._unlock(Request(Command.UNLOCK_ALL, board))

    async def _unlock(self, request: Request) -> UnlockReport:
        async with self._lock.hold(PRIORITY_UNLOCK):
            reply = await self._exchange(request)  # never repeated, whatever happens
        if reply is None:
            self.stats.unlocks_unanswered += 1
            log.warning("lock bus %s: unlock %s unanswered; reading the status", self.url, request)
        if self.unlock_settle_s:
            await asyncio.sleep(self.unlock_settle_s)
        try:
            # Ahead of the polls too: the caller (a customer) is waiting for this answer.
            async with self._lock.hold(PRIORITY_UNLOCK):
                status = await self._read(Request(Command.READ_ALL, request.board))
        except KerongBusError as exc:
            log.error("lock bus %s: no status after unlock %s: %s", self.url, request, exc.reason)
            status = None
        return UnlockReport(answered=reply is not None, status=status)
