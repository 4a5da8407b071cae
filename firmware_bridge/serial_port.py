"""A serial port by pyserial URL, bridged to asyncio: `/dev/ttyUSB0`, `/dev/serial/by-id/...`, a pty,
`socket://host:port` (ser2net), `rfc2217://host:port`.

pyserial is blocking, and not every URL type has a file descriptor to hand to the event loop, so each
open port gets one reader thread and one writer thread. Writes return only once pyserial took the
bytes (a UART's or pty's buffer full means the writer waits): the link layer above feels the line's
real back-pressure. The port is opened exclusively (another process holding it is an error, not a
silent fight over bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import serial

from firmware_bridge.base_station.link import LinkClosedError

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.05
WRITE_TIMEOUT_S = 10.0


class SerialOpenError(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot open {url}: {reason}")
        self.url = url
        self.reason = reason


class SerialPort:
    """One opened port. Use `open()`; after a failure make a new one (the owner reconnects)."""

    def __init__(self, url: str, port: Any, *, line_rate: float | None = None) -> None:
        self.url = url
        self._port = port
        # Bytes per second the line carries (8N1: baud / 10). Used to estimate what is still queued
        # where the OS cannot tell (a pty answers TIOCOUTQ with 0; so does a socket:// URL).
        self.line_rate = line_rate
        self._queued = 0.0
        self._queued_at = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._incoming: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self._closed = threading.Event()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"serial-write-{url}")
        self._reader = threading.Thread(target=self._read_loop, name=f"serial-read-{url}", daemon=True)
        self._reader.start()

    @classmethod
    async def open(cls, url: str, baudrate: int = 115200) -> SerialPort:
        def do_open() -> Any:
            kwargs: dict[str, Any] = {
                "baudrate": baudrate,
                "timeout": READ_TIMEOUT_S,
                "write_timeout": WRITE_TIMEOUT_S,
            }
            if "://" not in url:
                kwargs["exclusive"] = True  # flock(2) on the device node
            return serial.serial_for_url(url, **kwargs)

        try:
            port = await asyncio.get_running_loop().run_in_executor(None, do_open)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SerialOpenError(url, str(exc)) from None
        return cls(url, port, line_rate=baudrate / 10.0)

    def _read_loop(self) -> None:
        port = self._port
        while not self._closed.is_set():
            try:
                waiting = port.in_waiting
                data = port.read(waiting if waiting > 0 else 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial's posix read after a concurrent close.
                if not self._closed.is_set():
                    self._post(exc)
                return
            if data:
                self._post(bytes(data))

    def _post(self, item: bytes | BaseException) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._incoming.put_nowait, item)

    async def read(self) -> bytes:
        item = await self._incoming.get()
        if isinstance(item, BaseException):
            raise LinkClosedError(f"{self.url}: {item}")
        return item

    async def write(self, data: bytes) -> None:
        if self._closed.is_set():
            raise LinkClosedError(f"{self.url}: closed")
        try:
            await self._loop.run_in_executor(self._writer, self._port.write, data)
        except (serial.SerialException, OSError) as exc:
            raise LinkClosedError(f"{self.url}: {exc}") from None
        self._queued = self._estimate() + len(data)
        self._queued_at = time.monotonic()

    def _estimate(self) -> float:
        """Bytes written but not yet on the wire, had the line drained at its rate since the last write."""
        if self.line_rate is None:
            return 0.0
        return max(0.0, self._queued - (time.monotonic() - self._queued_at) * self.line_rate)

    def out_waiting(self) -> int:
        try:
            reported = int(self._port.out_waiting)
        except (serial.SerialException, OSError, AttributeError, NotImplementedError, TypeError):
            reported = 0
        return max(reported, int(self._estimate()))

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(Exception):
            self._port.close()
        self._writer.shutdown(wait=False, cancel_futures=True)
        self._reader.join(1.0)
