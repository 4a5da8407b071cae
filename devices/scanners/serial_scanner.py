"""A serial barcode scanner of one kiosk: codes in, one callback per code; re-opened after any failure.

The port is opened by pyserial URL (firmware_bridge.serial_port: exclusive, a reader thread bridged to
asyncio), framed by firmware_bridge.scanners.lines (CR/LF-terminated, bounded, garbage dropped). A scanner
unplugged (USB) or a port that cannot be opened is retried with a growing pause (0.5 s to 5 s); the agent
carries on meanwhile. The callback's failures are logged and never end the reader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from firmware_bridge.base_station.link import LinkClosedError
from firmware_bridge.scanners.lines import DEFAULT_MAX_LEN, LineDecoder
from firmware_bridge.serial_port import SerialOpenError, SerialPort

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.5
RETRY_MAX_S = 5.0

OnCode = Callable[[str], Awaitable[object]]
OnBadInput = Callable[[str, str], None]


class SerialScanner:
    def __init__(
        self,
        name: str,
        url: str,
        on_code: OnCode,
        *,
        baudrate: int = 9600,
        max_len: int = DEFAULT_MAX_LEN,
        on_bad_input: OnBadInput | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.baudrate = baudrate
        self._on_code = on_code
        self._on_bad_input = on_bad_input
        self._max_len = max_len
        self.connected = False
        self.codes = 0
        self.dropped = 0
        self.opens = 0

    async def run(self) -> None:
        """Read codes until cancelled, re-opening the port after every failure."""
        pause = RETRY_MIN_S
        while True:
            try:
                port = await SerialPort.open(self.url, self.baudrate)
            except SerialOpenError as exc:
                if pause == RETRY_MIN_S:  # once per outage, not every retry
                    log.warning("scanner %s: %s; retrying", self.name, exc.reason)
                await asyncio.sleep(pause)
                pause = min(RETRY_MAX_S, pause * 2)
                continue
            self.opens += 1
            self.connected = True
            pause = RETRY_MIN_S
            log.info("scanner %s on %s", self.name, self.url)
            try:
                await self._read(port)
            except LinkClosedError as exc:
                log.warning("scanner %s lost: %s; re-opening", self.name, exc)
            finally:
                self.connected = False
                port.close()
            await asyncio.sleep(RETRY_MIN_S)

    async def _read(self, port: SerialPort) -> None:
        decoder = LineDecoder(self._max_len)  # a fresh line after a re-open: a half line is lost anyway
        while True:
            data = await port.read()
            for code in decoder.feed(data):
                self.codes += 1
                try:
                    await self._on_code(code)
                except Exception:
                    log.exception("scanner %s: handling code failed", self.name)
            if decoder.dropped:
                self.dropped += decoder.dropped
                decoder.dropped = 0
                log.info("scanner %s: dropped a line of noise or over %d characters", self.name, self._max_len)
                if self._on_bad_input is not None:
                    self._on_bad_input("serial_scanner", "bad_line")
