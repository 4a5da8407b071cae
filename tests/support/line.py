"""An in-memory serial line between two links, paced at a byte rate, with fault injection."""

from __future__ import annotations

import asyncio

from firmware_bridge.base_station.link import LinkClosedError
from firmware_bridge.emulators.pty_line import LineFaults


class _Direction:
    def __init__(self, rate: float, faults: LineFaults) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.rate = rate
        self.faults = faults
        self.waiting = 0
        self.closed = False


class LineEnd:
    def __init__(self, tx: _Direction, rx: _Direction) -> None:
        self._tx = tx
        self._rx = rx

    async def read(self) -> bytes:
        if self._rx.closed:
            raise LinkClosedError("line closed")
        data = await self._rx.queue.get()
        if not data:
            raise LinkClosedError("line closed")
        return data

    async def write(self, data: bytes) -> None:
        if self._tx.closed:
            raise LinkClosedError("line closed")
        self._tx.waiting += len(data)
        # Paced like a UART: the bytes take len/rate seconds to cross.
        await asyncio.sleep(len(data) / self._tx.rate)
        self._tx.waiting -= len(data)
        self._tx.queue.put_nowait(self._tx.faults.apply(data))

    def out_waiting(self) -> int:
        return self._tx.waiting


class MemoryLine:
    def __init__(self, rate: float = 11520.0, corrupt: float = 0.0, drop: float = 0.0, seed: int = 1) -> None:
        # The emulator's own fault injector, one per direction.
        self._ab = _Direction(rate, LineFaults(corrupt, drop, seed=seed))
        self._ba = _Direction(rate, LineFaults(corrupt, drop, seed=seed + 1))
        self.a = LineEnd(self._ab, self._ba)
        self.b = LineEnd(self._ba, self._ab)

    def close(self) -> None:
        for d in (self._ab, self._ba):
            d.closed = True
            d.queue.put_nowait(b"")
